"""GCE: the ``oldgnu`` disk.raw tar.gz into a Cloud Storage bucket, then ``images.insert``.

The order of calls (each printed by ``--dry-run``):

1. ``compute.images.get`` — an image of this name that carries this build's
   ``manifest-sha256`` label means the work is done: say so and stop. The same
   name with another build's label is an error, never overwritten.
2. ``storage.objects.get`` — the tarball already in the bucket with the same
   size and MD5 (an earlier run stopped after its upload) is not sent again.
3. ``storage.objects.insert`` — a resumable upload in 16 MiB chunks, with a
   progress line in MiB/s.
4. ``compute.images.insert`` — ``rawDisk.source`` is the object's
   ``https://storage.googleapis.com/<bucket>/<object>`` URL (the form the API
   documents; ``gcloud`` turns ``gs://`` into it too), ``architecture X86_64``,
   the family, labels and the guest OS features the image really has.
5. ``compute.globalOperations.wait`` until the operation is DONE, on the SAME
   endpoint as the insert. The SDK's ``ExtendedOperation.result()`` would poll
   through a GlobalOperationsClient made without the client options, i.e. always
   compute.googleapis.com; calling ``GlobalOperationsClient(endpoint).wait``
   ourselves keeps a private or test endpoint working.

Credentials: google-auth's Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS,
``gcloud auth application-default login``, the metadata server). An endpoint given as
plain ``http://`` (an emulator or a local fake) gets anonymous credentials instead: a
bearer token is never sent unencrypted. ``STORAGE_EMULATOR_HOST`` is honoured by
google-cloud-storage itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import click

from lockgate.errors import BadInput, Failure
from lockgate.image.publish.common import (
    DryRun,
    Manifest,
    MiB,
    Progress,
    Summary,
    denied,
)

CHUNK = 16 * MiB  # resumable chunks must be multiples of 256 KiB
OPERATION_TIMEOUT = 60 * 60.0  # a real images.insert of a 2 GiB disk takes a few minutes
WAIT_SLICE = 60.0  # one globalOperations.wait call returns after at most ~2 min anyway
STORAGE_URL = "https://storage.googleapis.com"

# Names of images and families: RFC 1035 labels, as the API checks them.
NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
# Label keys and values: at most 63 characters of lower-case letters, digits, _ and -;
# keys start with a letter (GCE also allows international letters; we never make those).
LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")

SHA_LABEL = "manifest-sha256"
SHA_PREFIX = 32  # hex digits of the manifest's sha256 a label value can hold (63 max)

#: The IAM permission each call needs, for the one-line access-denied error.
PERMISSIONS = {
    "images.get": "compute.images.get",
    "images.insert": "compute.images.create",
    "globalOperations.wait": "compute.globalOperations.get",
    "objects.get": "storage.objects.get",
    "objects.insert": "storage.objects.create",
}


@dataclass(frozen=True)
class Plan:
    """Everything a publish will do, worked out before any call (and all a dry run needs)."""

    project: str
    bucket: str
    object_name: str
    image: str
    family: str
    labels: dict[str, str]
    features: list[str]
    artifact: Path
    size: int
    version: str = ""

    @property
    def source_url(self) -> str:
        return f"{STORAGE_URL}/{self.bucket}/{self.object_name}"

    def image_body(self) -> dict[str, Any]:
        """The Image resource as the API's JSON (what images.insert sends)."""
        return {
            "name": self.image,
            "family": self.family,
            "description": f"lockgate appliance image {self.version}".rstrip(),
            "architecture": "X86_64",
            "labels": dict(self.labels),
            "guestOsFeatures": [{"type": f} for f in self.features],
            "rawDisk": {"source": self.source_url, "containerType": "TAR"},
        }


@dataclass(frozen=True)
class Result:
    image: str
    created: bool  # False: it was there already
    upload: Summary | None  # None: nothing was uploaded


def label_value(text: str) -> str:
    """``text`` as a valid label value: lower case, other characters → ``-``, ≤ 63."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def guest_os_features(firmware: str, drivers: list[str], sev_capable: bool) -> list[str]:
    """What GCE may assume about the guest; each one only when the image really has it.

    * VIRTIO_SCSI_MULTIQUEUE: the Debian kernel's virtio_scsi does multiqueue.
    * UEFI_COMPATIBLE: the disk boots with UEFI (``uefi`` and ``hybrid``); needed for
      Shielded/Confidential VMs. A BIOS-only disk must not claim it.
    * GVNIC: only when the initramfs carries ``gve`` (check_initramfs proved it); a VM
      with gVNIC and no driver has no network.
    * SEV_CAPABLE: only when asked for, and only on a UEFI disk (SEV needs UEFI).
    """
    features = ["VIRTIO_SCSI_MULTIQUEUE"]
    if firmware in ("uefi", "hybrid"):
        features.append("UEFI_COMPATIBLE")
    if "gve" in drivers:
        features.append("GVNIC")
    if sev_capable:
        if firmware == "bios":
            raise BadInput("--sev-capable: SEV needs UEFI and this image boots BIOS only")
        features.append("SEV_CAPABLE")
    return sorted(features)


def make_plan(manifest: Manifest, *, project: str | None, bucket: str | None,
              name: str | None, family: str | None, sev_capable: bool = False) -> Plan:
    if not project:
        raise BadInput("--project is required (or set GOOGLE_CLOUD_PROJECT)")
    if not bucket:
        raise BadInput("--bucket is required: the Cloud Storage bucket the tarball goes to")
    image = name or manifest.image_name()
    if not NAME_RE.fullmatch(image):
        raise BadInput(f"--name {image!r}: a GCE image name is 1-63 lower-case letters, "
                       "digits and hyphens, starting with a letter, not ending with a hyphen")
    family = family or "lockgate"
    if not NAME_RE.fullmatch(family):
        raise BadInput(f"--family {family!r}: a GCE image family is 1-63 lower-case letters, "
                       "digits and hyphens, starting with a letter, not ending with a hyphen")
    artifact = manifest.artifact("gce")
    drivers = [str(d) for d in manifest.data.get("initramfs_drivers", [])]
    labels = {"version": label_value(manifest.version),
              SHA_LABEL: manifest.sha256[:SHA_PREFIX]}
    return Plan(project=project, bucket=bucket, object_name=f"{image}.tar.gz", image=image,
                family=family, labels=labels,
                features=guest_os_features(manifest.firmware, drivers, sev_capable),
                artifact=artifact, size=artifact.stat().st_size, version=manifest.version)


def publish(manifest: Manifest, *, dry_run: bool = False, project: str | None = None,
            bucket: str | None = None, name: str | None = None, family: str | None = None,
            compute_endpoint: str | None = None, storage_endpoint: str | None = None,
            sev_capable: bool = False, out: IO[str] | None = None) -> Result:
    plan = make_plan(manifest, project=project, bucket=bucket, name=name, family=family,
                     sev_capable=sev_capable)
    calls = DryRun(enabled=dry_run, out=out)
    if "initramfs_drivers" not in manifest.data:
        click.echo("gce: the manifest lists no initramfs drivers (built before they were "
                   "recorded): GVNIC is not claimed", err=True)
    if dry_run:
        _dry_run(plan, calls)
        return Result(plan.image, created=False, upload=None)
    return _publish(plan, calls, compute_endpoint, storage_endpoint)


def _dry_run(plan: Plan, calls: DryRun) -> None:
    calls.call("compute", "images.get", project=plan.project, image=plan.image)
    calls.note(f"an image {plan.image} labelled {SHA_LABEL}={plan.labels[SHA_LABEL]} "
               "ends the publish here: nothing is made twice")
    calls.call("storage", "objects.get", bucket=plan.bucket, object=plan.object_name)
    calls.call("storage", "objects.insert", bucket=plan.bucket, name=plan.object_name,
               uploadType="resumable", size=plan.size, chunk=CHUNK, file=str(plan.artifact))
    body = plan.image_body()
    calls.call("compute", "images.insert", project=plan.project, name=body["name"],
               family=body["family"], architecture=body["architecture"],
               rawDisk={"source": plan.source_url, "containerType": "TAR"},
               guestOsFeatures=plan.features, labels=plan.labels)
    calls.call("compute", "globalOperations.wait", project=plan.project,
               name="<the insert's operation>")


# --- the real thing ------------------------------------------------------------------------


def _is_plain_http(endpoint: str | None) -> bool:
    if not endpoint:
        return False
    # STORAGE_EMULATOR_HOST is often host:port with no scheme; emulators speak http.
    return "://" not in endpoint or urlsplit(endpoint).scheme == "http"


def _credentials(endpoint: str | None) -> Any:
    from google.auth.credentials import AnonymousCredentials

    if _is_plain_http(endpoint):
        return AnonymousCredentials()
    import google.auth
    import google.auth.exceptions

    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except google.auth.exceptions.DefaultCredentialsError:
        raise Failure("no Google credentials: run `gcloud auth application-default login` "
                      "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key "
                      "file") from None
    return credentials


class _ProgressReader:
    """A file the storage SDK reads from, reporting each new byte to a Progress.

    A resumable upload may seek back to resend a chunk; only bytes past the
    furthest point read count, so a retry does not inflate the total."""

    def __init__(self, f: IO[bytes], progress: Progress) -> None:
        self._f = f
        self._progress = progress
        self._high = 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        end = self._f.tell()
        if end > self._high:
            self._progress.advance(end - self._high, end - self._high)
            self._high = end
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def _md5_b64(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode()


def _api_call(what: str, plan: Plan, endpoint: str | None,
              call: Callable[[], Any]) -> Any:
    """Run one SDK call; an HTTP error or an unreachable endpoint ends in one line."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as aexc
    from requests import exceptions as rexc

    try:
        return call()
    except gexc.Forbidden as exc:
        raise denied("GCE", PERMISSIONS[what], str(exc.message)) from None
    except gexc.GoogleAPICallError as exc:
        raise Failure(f"gce: {what} failed: {exc.code} {exc.message}") from None
    except (rexc.ConnectionError, rexc.Timeout) as exc:
        where = endpoint or "Google's endpoint"
        raise Failure(f"gce: {what}: cannot reach {where} ({type(exc).__name__})") from None
    except aexc.GoogleAuthError as exc:  # e.g. an expired or revoked refresh token
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise Failure(f"gce: {what}: the Google credentials did not work ({first}); run "
                      "`gcloud auth application-default login` again") from None


def _publish(plan: Plan, calls: DryRun, compute_endpoint: str | None,
             storage_endpoint: str | None) -> Result:
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1

    compute_options = {"api_endpoint": compute_endpoint} if compute_endpoint else None
    compute_credentials = _credentials(compute_endpoint)
    images = compute_v1.ImagesClient(transport="rest", client_options=compute_options,
                                     credentials=compute_credentials)
    operations = compute_v1.GlobalOperationsClient(transport="rest",
                                                   client_options=compute_options,
                                                   credentials=compute_credentials)

    calls.call("compute", "images.get", project=plan.project, image=plan.image)

    def get_image() -> Any:
        try:
            return images.get(project=plan.project, image=plan.image)
        except gexc.NotFound:
            return None

    existing = _api_call("images.get", plan, compute_endpoint, get_image)
    if existing is not None:
        theirs = dict(existing.labels).get(SHA_LABEL)
        if theirs != plan.labels[SHA_LABEL]:
            raise Failure(f"gce: image {plan.image} already exists in project {plan.project} "
                          f"from another build ({SHA_LABEL}={theirs}); pass another --name "
                          "or delete it")
        status = str(existing.status or "READY")
        if status == "FAILED":
            raise Failure(f"gce: image {plan.image} from this build exists but FAILED; delete "
                          f"it (gcloud compute images delete {plan.image}) and publish again")
        if status != "READY":
            click.echo(f"gce: image {plan.image} from this build is still being made "
                       f"(status {status}); nothing to do")
            return Result(plan.image, created=False, upload=None)
        click.echo(f"gce: image {plan.image} already exists in project {plan.project} "
                   f"(same build, {SHA_LABEL}={theirs}); nothing to do")
        return Result(plan.image, created=False, upload=None)

    summary = _upload(plan, calls, storage_endpoint)

    body = plan.image_body()
    calls.call("compute", "images.insert", project=plan.project, name=plan.image,
               family=plan.family, rawDisk=body["rawDisk"], guestOsFeatures=plan.features,
               labels=plan.labels)
    resource = compute_v1.Image(
        name=plan.image, family=plan.family, description=body["description"],
        architecture="X86_64", labels=plan.labels,
        guest_os_features=[compute_v1.GuestOsFeature(type_=f) for f in plan.features],
        raw_disk=compute_v1.RawDisk(source=plan.source_url, container_type="TAR"))
    # insert_unary: the plain Operation, not an ExtendedOperation whose polling would
    # ignore our endpoint (see the module docstring).
    operation = _api_call("images.insert", plan, compute_endpoint,
                          lambda: images.insert_unary(project=plan.project,
                                                      image_resource=resource))
    _wait(plan, calls, operations, operation, compute_endpoint)
    click.echo(f"gce: created image {plan.image} in project {plan.project} "
               f"(family {plan.family}; {', '.join(plan.features)})")
    return Result(plan.image, created=True, upload=summary)


def _upload(plan: Plan, calls: DryRun, storage_endpoint: str | None) -> Summary | None:
    from google.cloud import storage  # type: ignore[attr-defined]

    endpoint = storage_endpoint or os.environ.get("STORAGE_EMULATOR_HOST")
    client = storage.Client(project=plan.project, credentials=_credentials(endpoint),
                            client_options={"api_endpoint": storage_endpoint}
                            if storage_endpoint else None)
    bucket = client.bucket(plan.bucket)

    calls.call("storage", "objects.get", bucket=plan.bucket, object=plan.object_name)
    there = _api_call("objects.get", plan, endpoint, lambda: bucket.get_blob(plan.object_name))
    if there is not None and there.size == plan.size and there.md5_hash == _md5_b64(plan.artifact):
        click.echo(f"gce: gs://{plan.bucket}/{plan.object_name} is already uploaded "
                   "(same size and MD5); not sent again")
        return None

    calls.call("storage", "objects.insert", bucket=plan.bucket, name=plan.object_name,
               uploadType="resumable", size=plan.size)
    blob = bucket.blob(plan.object_name, chunk_size=CHUNK)
    progress = Progress(f"upload gs://{plan.bucket}/{plan.object_name}", plan.size)
    with plan.artifact.open("rb") as f:
        reader = _ProgressReader(f, progress)
        _api_call("objects.insert", plan, endpoint,
                  lambda: blob.upload_from_file(reader, size=plan.size,
                                                content_type="application/gzip",
                                                checksum="md5", timeout=300))
    return progress.finish()


def _wait(plan: Plan, calls: DryRun, operations: Any, operation: Any,
          endpoint: str | None) -> None:
    from google.cloud import compute_v1

    done = compute_v1.Operation.Status.DONE
    progress = Progress(f"images.insert {plan.image} %", 100)
    deadline = time.monotonic() + OPERATION_TIMEOUT
    while operation.status != done:
        if time.monotonic() > deadline:
            raise Failure(f"gce: operation {operation.name} not done after "
                          f"{OPERATION_TIMEOUT / 60:.0f} min; see `gcloud compute operations "
                          f"describe {operation.name}`")
        calls.call("compute", "globalOperations.wait", project=plan.project,
                   name=operation.name)
        name = operation.name

        def wait_slice(name: str = name) -> Any:
            return operations.wait(project=plan.project, operation=name, timeout=WAIT_SLICE + 30)

        operation = _api_call("globalOperations.wait", plan, endpoint, wait_slice)
        progress.set(int(operation.progress or 0))
    progress.set(100)
    if progress.tty:
        progress.stream.write("\r\x1b[K")
    click.echo(f"gce: operation {operation.name} done in "
               f"{time.monotonic() - progress.start:.1f} s", err=True)
    if operation.error and operation.error.errors:
        first = operation.error.errors[0]
        message = f"{first.code}: {first.message}"
        if operation.http_error_status_code == 403:
            raise denied("GCE", PERMISSIONS["images.insert"], message)
        raise Failure(f"gce: images.insert {plan.image} failed: {message}")
