"""Azure: the fixed VHD as a page blob, then a managed image or a Compute Gallery version.

The order of calls (each printed by ``--dry-run``):

1. ``images.get`` (or, with ``--gallery``, ``galleryImages.get`` and
   ``galleryImageVersions.get``) — an image carrying this build's ``manifest-sha256``
   tag means the work is done: say so and stop; the same name from another build is
   an error, never overwritten.
2. ``blob.getProperties`` — a page blob of the right size whose ``sha256`` metadata
   matches the artifact (set only after a complete upload) is not sent again.
3. ``container.create`` (if missing), ``blob.create`` (a page blob of the VHD's size),
   ``blob.putPage`` for every 4 MiB block that is not all zeros — trimmed to its first
   and last non-zero 512-byte page, from ``--workers`` threads — then
   ``blob.setMetadata``. Put Page takes 512-byte aligned ranges of at most 4 MiB; pages
   never written read back as zeros, so a 2 GiB disk costs only its data.
4. ``images.createOrUpdate``: ``hyperVGeneration`` V1 for a BIOS disk, V2 for UEFI and
   for the hybrid disk (it boots both; a V2 image runs on Generation 2 sizes — Trusted
   Launch, the newer VM series that are Gen2-only — and Azure boots Gen2 VMs with UEFI),
   ``osType Linux``, ``osState Generalized`` (first boot makes the host keys and machine
   id, nothing instance-specific is in the image), ``blobUri`` the uploaded page blob.
   With ``--gallery G --gallery-image I``: the image definition I is made if missing
   (same hyperVGeneration/osType/osState; an existing one must agree), then the image
   version ``<version>`` (Major.Minor.Patch) from the blob.

Credentials: azure-identity's DefaultAzureCredential (environment, workload identity,
managed identity, Azure CLI ...) for Resource Manager and, without a connection string,
for the blob (account URL ``https://<account>.blob.core.windows.net`` or
``--blob-endpoint``); ``AZURE_STORAGE_CONNECTION_STRING`` (account key or SAS, from the
environment, never a flag) takes the blob side instead. The SDKs refuse to send a bearer
token to a plain-http endpoint; a TLS endpoint with a private CA is trusted through
``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from lockgate.errors import BadInput, Failure
from lockgate.image.publish.common import (
    Block,
    BlockScan,
    DryRun,
    Manifest,
    MiB,
    Progress,
    Summary,
    denied,
    parallel_upload,
)

PAGE = 512  # Put Page ranges start and end on 512-byte boundaries
MAX_PUT = 4 * MiB  # the most one Put Page may write
SHA_TAG = "manifest-sha256"
LRO_TIMEOUT = 60 * 60.0
VERSION_RE = re.compile(r"(\d{1,9})\.(\d{1,9})\.(\d{1,9})")  # gallery versions: int32 parts
# Azure resource names for images: 1-80 letters, digits, _ . -; start alphanumeric,
# end alphanumeric or _.
NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?")

#: The Azure RBAC action each call needs, for the one-line access-denied error (the
#: error message names it too; this is the fallback when it does not).
ACTIONS = {
    "images.get": "Microsoft.Compute/images/read",
    "images.createOrUpdate": "Microsoft.Compute/images/write",
    "galleryImages.get": "Microsoft.Compute/galleries/images/read",
    "galleryImages.createOrUpdate": "Microsoft.Compute/galleries/images/write",
    "galleryImageVersions.get": "Microsoft.Compute/galleries/images/versions/read",
    "galleryImageVersions.createOrUpdate": "Microsoft.Compute/galleries/images/versions/write",
    "blob.getProperties": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
    "container.create": "Microsoft.Storage/storageAccounts/blobServices/containers/write",
    "blob.create": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
    "blob.putPage": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
    "blob.setMetadata": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
}
_ACTION_IN_MESSAGE = re.compile(r"perform action '([^']+)'")


@dataclass(frozen=True)
class Plan:
    subscription: str
    resource_group: str
    location: str
    storage_account: str
    container: str
    blob_name: str
    image: str
    hyper_v_generation: str
    tags: dict[str, str]
    artifact: Path
    artifact_sha256: str
    size: int
    gallery: str | None
    gallery_image: str | None
    gallery_version: str | None
    offer: str

    def storage_account_id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Storage/storageAccounts/{self.storage_account}")

    def image_body(self, blob_uri: str) -> dict[str, Any]:
        """The managed image as ARM's JSON (what images.createOrUpdate PUTs)."""
        return {"location": self.location, "tags": dict(self.tags),
                "properties": {"hyperVGeneration": self.hyper_v_generation,
                               "storageProfile": {"osDisk": {"osType": "Linux",
                                                             "osState": "Generalized",
                                                             "blobUri": blob_uri}}}}

    def gallery_image_body(self) -> dict[str, Any]:
        return {"location": self.location, "tags": {"lockgate": "appliance"},
                "properties": {"osType": "Linux", "osState": "Generalized",
                               "hyperVGeneration": self.hyper_v_generation,
                               "architecture": "x64",
                               "identifier": {"publisher": "lockgate", "offer": self.offer,
                                              "sku": str(self.gallery_image)}}}

    def gallery_version_body(self, blob_uri: str) -> dict[str, Any]:
        return {"location": self.location, "tags": dict(self.tags),
                "properties": {"storageProfile": {"osDiskImage": {"source": {
                    "uri": blob_uri, "storageAccountId": self.storage_account_id()}}}}}


@dataclass(frozen=True)
class Result:
    image: str  # the managed image's name or gallery/image/version
    created: bool
    upload: Summary | None
    page_ranges: list[tuple[int, int]] | None = None  # (offset, length) of each Put Page
    size: int = 0  # the VHD's size

    @property
    def pages_skipped_share(self) -> float:
        """The share of the VHD's 512-byte pages never sent (all zeros)."""
        if not self.page_ranges or not self.size:
            return 0.0
        return 1 - sum(length for _, length in self.page_ranges) / self.size


def hyper_v_generation(firmware: str) -> str:
    """V1 (BIOS) only for a BIOS-only disk; UEFI and hybrid disks become V2 (UEFI)."""
    return "V1" if firmware == "bios" else "V2"


def check_vhd(path: Path) -> None:
    """Azure takes a fixed VHD whose virtual size is a whole number of MiB."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(size - PAGE, 0))
        footer = f.read(PAGE)
    if size < MiB + PAGE or footer[:8] != b"conectix" or footer[60:64] != b"\0\0\0\2":
        raise BadInput(f"{path}: not a fixed VHD (no 'conectix' footer of disk type 2); "
                       "rebuild with --formats vhd")
    if (size - PAGE) % MiB:
        raise BadInput(f"{path}: virtual size {size - PAGE} is not a whole number of MiB, "
                       "which Azure refuses; rebuild with --formats vhd")


def make_plan(manifest: Manifest, *, subscription: str | None, resource_group: str | None,
              location: str | None, storage_account: str | None, container: str | None,
              name: str | None, gallery: str | None, gallery_image: str | None) -> Plan:
    for value, flag in ((subscription, "--subscription (or AZURE_SUBSCRIPTION_ID)"),
                        (resource_group, "--resource-group"), (location, "--location"),
                        (storage_account, "--storage-account")):
        if not value:
            raise BadInput(f"{flag} is required")
    if bool(gallery) != bool(gallery_image):
        raise BadInput("--gallery and --gallery-image go together")
    image = name or manifest.image_name()
    if not NAME_RE.fullmatch(image):
        raise BadInput(f"--name {image!r}: an Azure image name is 1-80 letters, digits, "
                       "'_', '.' and '-', starting with a letter or digit")
    if gallery_image and not NAME_RE.fullmatch(gallery_image):
        raise BadInput(f"--gallery-image {gallery_image!r}: 1-80 letters, digits, '_', '.', '-'")
    version = None
    if gallery:
        m = VERSION_RE.fullmatch(manifest.version)
        if not m or any(int(part) > 2**31 - 1 for part in m.groups()):
            raise BadInput(f"version {manifest.version!r}: a gallery image version is "
                           "Major.Minor.Patch (three whole numbers); rebuild with such a --version")
        version = manifest.version
    artifact = manifest.artifact("vhd")
    check_vhd(artifact)
    tags = {"version": manifest.version, SHA_TAG: manifest.sha256, "lockgate-name": manifest.name}
    return Plan(subscription=str(subscription), resource_group=str(resource_group),
                location=str(location), storage_account=str(storage_account),
                container=container or "images", blob_name=f"{image}.vhd", image=image,
                hyper_v_generation=hyper_v_generation(manifest.firmware), tags=tags,
                artifact=artifact, artifact_sha256=manifest.artifact_sha256("vhd"),
                size=artifact.stat().st_size, gallery=gallery, gallery_image=gallery_image,
                gallery_version=version, offer=manifest.name)


def publish(manifest: Manifest, *, dry_run: bool = False, subscription: str | None = None,
            resource_group: str | None = None, location: str | None = None,
            storage_account: str | None = None, container: str | None = None,
            name: str | None = None, gallery: str | None = None,
            gallery_image: str | None = None, arm_endpoint: str | None = None,
            blob_endpoint: str | None = None, workers: int = 16,
            out: IO[str] | None = None) -> Result:
    plan = make_plan(manifest, subscription=subscription, resource_group=resource_group,
                     location=location, storage_account=storage_account, container=container,
                     name=name, gallery=gallery, gallery_image=gallery_image)
    calls = DryRun(enabled=dry_run, out=out)
    blob_url = _blob_url(plan, blob_endpoint)
    if dry_run:
        _dry_run(plan, calls, blob_url)
        return Result(plan.image, created=False, upload=None)
    return _Publisher(plan, calls, arm_endpoint, blob_endpoint, workers).run()


def _blob_url(plan: Plan, blob_endpoint: str | None) -> str:
    if os.environ.get("AZURE_STORAGE_CONNECTION_STRING") and not blob_endpoint:
        return f"<connection string's blob endpoint>/{plan.container}/{plan.blob_name}"
    base = (blob_endpoint or f"https://{plan.storage_account}.blob.core.windows.net").rstrip("/")
    return f"{base}/{plan.container}/{plan.blob_name}"


def _dry_run(plan: Plan, calls: DryRun, blob_url: str) -> None:
    rg = plan.resource_group
    if plan.gallery:
        calls.call("compute", "galleryImageVersions.get", resource_group=rg,
                   gallery=plan.gallery, image=plan.gallery_image, version=plan.gallery_version)
    else:
        calls.call("compute", "images.get", resource_group=rg, image=plan.image)
    calls.note(f"an image tagged {SHA_TAG}={plan.tags[SHA_TAG][:12]}... ends the publish "
               "here: nothing is made twice")
    calls.call("blob", "getProperties", url=blob_url)
    calls.call("blob", "container.create", container=plan.container)
    calls.note("only when getProperties says ContainerNotFound")
    calls.call("blob", "create", url=blob_url, type="PageBlob", size=plan.size)
    calls.call("blob", "putPage", url=blob_url, file=str(plan.artifact),
               max_range=MAX_PUT, align=PAGE)
    calls.note("one putPage per 4 MiB block that is not all zeros, trimmed to its "
               "non-zero 512-byte pages, in parallel")
    calls.call("blob", "setMetadata", url=blob_url, sha256=plan.artifact_sha256)
    if plan.gallery:
        calls.call("compute", "galleryImages.get", resource_group=rg, gallery=plan.gallery,
                   image=plan.gallery_image)
        calls.note("made if missing: " + repr(plan.gallery_image_body()["properties"]))
        calls.call("compute", "galleryImageVersions.createOrUpdate", resource_group=rg,
                   gallery=plan.gallery, image=plan.gallery_image,
                   version=plan.gallery_version, location=plan.location,
                   source={"uri": blob_url, "storageAccountId": plan.storage_account_id()})
    else:
        body = plan.image_body(blob_url)
        calls.call("compute", "images.createOrUpdate", resource_group=rg, image=plan.image,
                   location=plan.location, hyperVGeneration=plan.hyper_v_generation,
                   osDisk=body["properties"]["storageProfile"]["osDisk"])


# --- the real thing ------------------------------------------------------------------------


def _trim(data: bytes) -> tuple[int, int]:
    """(start, end) of ``data`` from its first to its last non-zero 512-byte page."""
    start = (len(data) - len(data.lstrip(b"\0"))) // PAGE * PAGE
    end = -(-len(data.rstrip(b"\0")) // PAGE) * PAGE
    return start, end


class _Publisher:
    def __init__(self, plan: Plan, calls: DryRun, arm_endpoint: str | None,
                 blob_endpoint: str | None, workers: int) -> None:
        self.plan = plan
        self.calls = calls
        self.arm_endpoint = arm_endpoint
        self.blob_endpoint = blob_endpoint
        self.workers = workers
        self._credential: Any = None

    # --- errors -------------------------------------------------------------------------

    def _api(self, what: str, call: Any, *, missing_ok: bool = False,
             exists_ok: bool = False) -> Any:
        """Run one SDK call; what it raises becomes one ``error:`` line, except a 404
        (``missing_ok``) or 409 (``exists_ok``) the caller turns into a decision."""
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ResourceExistsError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            return call()
        except ResourceNotFoundError:
            if missing_ok:
                raise
            raise self._failure(what, sys.exc_info()[1]) from None
        except ResourceExistsError:
            if exists_ok:
                raise
            raise self._failure(what, sys.exc_info()[1]) from None
        except ClientAuthenticationError as exc:
            first = str(exc.message or exc).strip().splitlines()[0][:200]
            raise Failure(f"azure: no usable credentials for {what} ({first}); sign in with "
                          "`az login` or set AZURE_CLIENT_ID/AZURE_TENANT_ID/"
                          "AZURE_CLIENT_SECRET") from None
        except HttpResponseError as exc:
            raise self._failure(what, exc) from None
        except ServiceRequestError as exc:
            raise Failure(f"azure: {what}: cannot reach the endpoint ({exc.message})") from None
        except ServiceResponseError as exc:
            raise Failure(f"azure: {what}: no answer from the endpoint ({exc.message})") from None
        except AzureError as exc:  # anything else the SDK raises: still one line
            first = (str(exc.message or exc).strip().splitlines() or [""])[0][:200]
            raise Failure(f"azure: {what} failed: {type(exc).__name__}: {first}") from None

    @staticmethod
    def _failure(what: str, exc: Any) -> Failure:
        error = getattr(exc, "error", None)
        code = error.code if error is not None else getattr(exc, "error_code", None)
        message = str(error.message if error is not None else exc.message or "")
        if exc.status_code == 403 or code in ("AuthorizationFailed",
                                              "AuthorizationPermissionMismatch"):
            found = _ACTION_IN_MESSAGE.search(message)
            action = found.group(1) if found else ACTIONS[what]
            return denied("Azure", action, f"{code}: {message}" if code else message)
        first = message.strip().splitlines()[0][:300] if message.strip() else ""
        return Failure(" ".join(part for part in (f"azure: {what} failed: {exc.status_code}",
                                                  str(code or ""), first) if part))

    # --- clients ------------------------------------------------------------------------

    def credential(self) -> Any:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential

    def compute(self) -> Any:
        from azure.mgmt.compute import ComputeManagementClient

        options: dict[str, Any] = {}
        if self.arm_endpoint:
            base = self.arm_endpoint.rstrip("/")
            options = {"base_url": base, "credential_scopes": [f"{base}/.default"]}
        return ComputeManagementClient(self.credential(), self.plan.subscription, **options)

    def container_client(self) -> Any:
        import requests
        from azure.core.pipeline.transport import RequestsTransport
        from azure.storage.blob import BlobServiceClient

        # One pooled connection per worker (requests keeps 10 per host by default).
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4,
                                                pool_maxsize=self.workers + 4)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        transport = RequestsTransport(session=session, session_owner=True)
        connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if connection_string and not self.blob_endpoint:
            service = BlobServiceClient.from_connection_string(connection_string,
                                                               transport=transport)
        else:
            url = (self.blob_endpoint
                   or f"https://{self.plan.storage_account}.blob.core.windows.net")
            service = BlobServiceClient(url, credential=self.credential(), transport=transport)
        return service.get_container_client(self.plan.container)

    # --- the steps ----------------------------------------------------------------------

    def run(self) -> Result:
        plan = self.plan
        compute = self.compute()
        existing = self._existing(compute)
        if existing is not None:
            theirs = (existing.get("tags") or {}).get(SHA_TAG)
            what = self._what()
            if theirs != plan.tags[SHA_TAG]:
                raise Failure(f"azure: {what} already exists from another build "
                              f"({SHA_TAG}={theirs}); pass another --name / version or "
                              "delete it")
            state = (existing.get("properties") or {}).get("provisioningState") or "Succeeded"
            if state == "Succeeded":
                click.echo(f"azure: {what} already exists (same build, {SHA_TAG}="
                           f"{theirs[:12]}...); nothing to do")
                return Result(what, created=False, upload=None)
            if state != "Failed":
                click.echo(f"azure: {what} from this build is still being made "
                           f"(provisioningState {state}); nothing to do")
                return Result(what, created=False, upload=None)
            # Failed: createOrUpdate again over it (a PUT of the same body retries it).
            click.echo(f"azure: {what} from this build is Failed; making it again", err=True)
        container = self.container_client()
        blob = container.get_blob_client(plan.blob_name)
        summary, ranges = self._upload(container, blob)
        if plan.gallery:
            self._gallery_version(compute, blob.url)
        else:
            self._image(compute, blob.url)
        return Result(self._what(), created=True, upload=summary, page_ranges=ranges,
                      size=plan.size)

    def _what(self) -> str:
        plan = self.plan
        if plan.gallery:
            return (f"gallery image version {plan.gallery}/{plan.gallery_image}/"
                    f"{plan.gallery_version}")
        return f"image {plan.image} in resource group {plan.resource_group}"

    def _existing(self, compute: Any) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        plan = self.plan
        try:
            if plan.gallery:
                self.calls.call("compute", "galleryImageVersions.get",
                                resource_group=plan.resource_group, gallery=plan.gallery,
                                image=plan.gallery_image, version=plan.gallery_version)
                return self._api("galleryImageVersions.get",
                                 lambda: compute.gallery_image_versions.get(
                                     plan.resource_group, plan.gallery, plan.gallery_image,
                                     plan.gallery_version), missing_ok=True)
            self.calls.call("compute", "images.get", resource_group=plan.resource_group,
                            image=plan.image)
            return self._api("images.get",
                             lambda: compute.images.get(plan.resource_group, plan.image),
                             missing_ok=True)
        except ResourceNotFoundError:
            return None

    def _upload(self, container: Any,
                blob: Any) -> tuple[Summary | None, list[tuple[int, int]] | None]:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        plan = self.plan
        self.calls.call("blob", "getProperties", url=blob.url)
        container_missing = False
        try:
            props = self._api("blob.getProperties", blob.get_blob_properties, missing_ok=True)
        except ResourceNotFoundError as exc:
            props = None
            container_missing = getattr(exc, "error_code", None) == "ContainerNotFound"
        if (props is not None and props.blob_type == "PageBlob" and props.size == plan.size
                and (props.metadata or {}).get("sha256") == plan.artifact_sha256):
            click.echo(f"azure: {blob.url} is already uploaded (same size and sha256); "
                       "not sent again")
            return None, None

        if container_missing:
            self.calls.call("blob", "container.create", container=plan.container)
            with contextlib.suppress(ResourceExistsError):  # made meanwhile by someone else
                self._api("container.create", container.create_container, exists_ok=True)
        self.calls.call("blob", "create", url=blob.url, type="PageBlob", size=plan.size)
        # A new page blob: every page reads as zero until written, so zero ranges
        # need no call at all (and a re-run after a failed upload starts clean).
        self._api("blob.create", lambda: blob.create_page_blob(size=plan.size))

        ranges: list[tuple[int, int]] = []

        def put(block: Block) -> int:
            start, end = _trim(block.data)
            # BlockScan yields only blocks with data; the trim keeps at least one page.
            self._api("blob.putPage", lambda: blob.upload_page(
                block.data[start:end], offset=block.offset + start, length=end - start))
            ranges.append((block.offset + start, end - start))  # list.append is atomic
            return end - start

        self.calls.call("blob", "putPage", url=blob.url, max_range=MAX_PUT, align=PAGE)
        progress = Progress(f"upload {plan.blob_name}", plan.size)
        summary = parallel_upload(BlockScan(plan.artifact, MAX_PUT), put,
                                  workers=self.workers, progress=progress)
        written = sum(length for _, length in ranges)
        click.echo(f"azure: {len(ranges)} Put Page calls wrote {written / MiB:.1f} MiB; "
                   f"{100 * (1 - written / plan.size):.1f} % of the 512-byte pages were zero "
                   "and never sent", err=True)
        self.calls.call("blob", "setMetadata", url=blob.url, sha256=plan.artifact_sha256)
        # Written last: the metadata is what marks the upload complete for a re-run.
        self._api("blob.setMetadata", lambda: blob.set_blob_metadata(
            {"sha256": plan.artifact_sha256, "manifestsha256": plan.tags[SHA_TAG]}))
        return summary, sorted(ranges)

    def _wait(self, what: str, poller: Any) -> Any:
        start = time.monotonic()
        click.echo(f"azure: waiting for {what} ...", err=True)
        result = self._api(what, lambda: poller.result(timeout=LRO_TIMEOUT))
        if not poller.done():
            raise Failure(f"azure: {what} not done after {LRO_TIMEOUT / 60:.0f} min")
        click.echo(f"azure: {what} done in {time.monotonic() - start:.1f} s", err=True)
        return result

    def _image(self, compute: Any, blob_url: str) -> None:
        plan = self.plan
        body = plan.image_body(blob_url)
        self.calls.call("compute", "images.createOrUpdate", resource_group=plan.resource_group,
                        image=plan.image, hyperVGeneration=plan.hyper_v_generation,
                        osDisk=body["properties"]["storageProfile"]["osDisk"])
        poller = self._api("images.createOrUpdate", lambda: compute.images.begin_create_or_update(
            plan.resource_group, plan.image, body))
        self._wait("images.createOrUpdate", poller)
        click.echo(f"azure: created image {plan.image} in resource group {plan.resource_group} "
                   f"({plan.location}, hyperVGeneration {plan.hyper_v_generation})")

    def _gallery_version(self, compute: Any, blob_url: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        plan = self.plan
        rg, gallery, image = plan.resource_group, str(plan.gallery), str(plan.gallery_image)
        self.calls.call("compute", "galleryImages.get", resource_group=rg, gallery=gallery,
                        image=image)
        try:
            definition = self._api("galleryImages.get",
                                   lambda: compute.gallery_images.get(rg, gallery, image),
                                   missing_ok=True)
        except ResourceNotFoundError:
            definition = None
        if definition is None:
            body = plan.gallery_image_body()
            self.calls.call("compute", "galleryImages.createOrUpdate", resource_group=rg,
                            gallery=gallery, image=image, **body["properties"])
            poller = self._api("galleryImages.createOrUpdate",
                               lambda: compute.gallery_images.begin_create_or_update(
                                   rg, gallery, image, body))
            self._wait("galleryImages.createOrUpdate", poller)
        else:
            props = definition.get("properties") or {}
            theirs = (props.get("hyperVGeneration") or "V1", props.get("osType"),
                      props.get("osState"))
            want = (plan.hyper_v_generation, "Linux", "Generalized")
            if theirs != want:
                raise Failure(f"azure: gallery image {gallery}/{image} is {'/'.join(map(str, theirs))}"
                              f", this image needs {'/'.join(want)}; use another --gallery-image")
        body = plan.gallery_version_body(blob_url)
        self.calls.call("compute", "galleryImageVersions.createOrUpdate", resource_group=rg,
                        gallery=gallery, image=image, version=plan.gallery_version,
                        source=body["properties"]["storageProfile"]["osDiskImage"]["source"])
        poller = self._api("galleryImageVersions.createOrUpdate",
                           lambda: compute.gallery_image_versions.begin_create_or_update(
                               rg, gallery, image, plan.gallery_version, body))
        self._wait("galleryImageVersions.createOrUpdate", poller)
        click.echo(f"azure: created {self._what()} ({plan.location}, hyperVGeneration "
                   f"{plan.hyper_v_generation})")
