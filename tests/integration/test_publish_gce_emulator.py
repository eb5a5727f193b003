"""``lockgate image publish gce`` against gcp-storage-emulator and a local compute fake.

The storage emulator (PyPI gcp-storage-emulator, in memory, on a kernel-chosen port)
does the resumable upload for real; the compute endpoint is tests/fakes/gce_compute.py,
which keeps the REST API's request shapes and refuses what the API refuses. The fake is
told where the emulator is, so images.insert fails the way GCE does when the tarball is
not in the bucket.
"""

from __future__ import annotations

import hashlib
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))

import publish_artifacts as pa
from blob_gate import BlobGate
from gce_compute import FakeCompute

from lockgate.cli import root

storage = pytest.importorskip("google.cloud.storage", reason="the publish extra is not installed")
emulator_server = pytest.importorskip("gcp_storage_emulator.server",
                                      reason="gcp-storage-emulator (dev extra) is not installed")

PROJECT = "lockgate-test"
BUCKET = "lockgate-images"


@dataclass
class Build:
    manifest: Path
    tar: Path


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    out = tmp_path_factory.mktemp("build")
    raw = pa.make_raw(out / "lockgate.raw")
    tar = pa.make_gce_tar(raw, out)
    return Build(pa.write_manifest(out, {"raw": raw, "gce": tar}), tar)


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """gcp-storage-emulator in this process, in memory, on a port the kernel picks."""
    server = emulator_server.create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
    finally:
        server.stop()


@pytest.fixture
def emulator(emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The emulator with one empty bucket, and no Google settings inherited from the runner."""
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS",
                 "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT", "API_ENDPOINT_OVERRIDE"):
        monkeypatch.delenv(name, raising=False)
    gcs = client(emulator_url)
    for bucket in gcs.list_buckets():
        for blob in gcs.list_blobs(bucket.name):
            blob.delete()
        bucket.delete()
    gcs.create_bucket(BUCKET)
    return emulator_url


def client(url: str) -> Any:
    from google.auth.credentials import AnonymousCredentials

    return storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": url})


def publish(build: Build, *args: str) -> Result:
    return CliRunner().invoke(root, ["image", "publish", "gce", "--manifest", str(build.manifest),
                                     "--project", PROJECT, "--bucket", BUCKET, *args])


def endpoints(fake: FakeCompute, emulator: str) -> list[str]:
    return ["--compute-endpoint", fake.url, "--storage-endpoint", emulator]


def test_publish_uploads_the_tarball_and_inserts_the_image(build: Build, emulator: str) -> None:
    with FakeCompute(storage_url=emulator, polls=3) as fake:
        result = publish(build, *endpoints(fake, emulator))
        assert result.exit_code == 0, result.stderr
        name = "lockgate-appliance-1-2-3-" + hashlib.sha256(build.manifest.read_bytes()).hexdigest()[:12]
        assert f"created image {name}" in result.stdout
        assert "MiB/s" in result.stderr

        blob = client(emulator).bucket(BUCKET).get_blob(f"{name}.tar.gz")
        assert blob is not None
        assert hashlib.sha256(blob.download_as_bytes()).hexdigest() == pa.sha256(build.tar)

        inserts = fake.requests("POST", r"/global/images$")
        assert len(inserts) == 1
        body = inserts[0].body
        assert body["rawDisk"] == {"source": f"https://storage.googleapis.com/{BUCKET}/{name}.tar.gz",
                                   "containerType": "TAR"}
        assert body["architecture"] == "X86_64"
        assert body["family"] == "lockgate"
        assert {f["type"] for f in body["guestOsFeatures"]} == {
            "UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE", "GVNIC"}
        assert body["labels"] == {
            "version": "1-2-3",
            "manifest-sha256": hashlib.sha256(build.manifest.read_bytes()).hexdigest()[:32]}
        # The operation was waited on at the same endpoint, until DONE.
        polls = fake.requests(None, r"/global/operations/")
        assert len(polls) == 3
        assert all(p.host == fake.url.removeprefix("http://") for p in polls)
        assert fake.images[(PROJECT, name)]["status"] == "READY"
        # An emulator endpoint gets anonymous credentials: no token over plain http.
        assert all("authorization" not in s.headers for s in fake.seen)


def test_second_publish_finds_the_image_and_makes_nothing(build: Build, emulator: str) -> None:
    with FakeCompute(storage_url=emulator) as fake:
        assert publish(build, *endpoints(fake, emulator)).exit_code == 0
        generation = next(iter(client(emulator).list_blobs(BUCKET))).generation
        before = len(fake.seen)
        again = publish(build, *endpoints(fake, emulator))
        assert again.exit_code == 0, again.stderr
        assert "already exists" in again.stdout and "nothing to do" in again.stdout
        assert [s.method for s in fake.seen[before:]] == ["GET"]  # images.get only
        assert next(iter(client(emulator).list_blobs(BUCKET))).generation == generation


def test_same_name_from_another_build_is_refused(build: Build, emulator: str,
                                                 tmp_path: Path) -> None:
    other = pa.write_manifest(tmp_path, {"gce": build.tar}, version="9.9.9")
    with FakeCompute(storage_url=emulator) as fake:
        assert publish(build, *endpoints(fake, emulator), "--name", "lockgate-x").exit_code == 0
        result = CliRunner().invoke(root, [
            "image", "publish", "gce", "--manifest", str(other), "--project", PROJECT,
            "--bucket", BUCKET, "--name", "lockgate-x", *endpoints(fake, emulator)])
        assert result.exit_code == 1
        assert result.stderr.startswith("error: gce: image lockgate-x already exists")
        assert len(fake.requests("POST", r"/global/images$")) == 1


def test_dry_run_prints_every_call_and_makes_none(build: Build, emulator: str) -> None:
    with FakeCompute(storage_url=emulator) as fake:
        result = publish(build, "--dry-run", *endpoints(fake, emulator))
        assert result.exit_code == 0, result.stderr
        calls = [line.split()[1] for line in result.stdout.splitlines()
                 if line.startswith("dry-run:") and not line.startswith("dry-run: #")]
        assert calls == ["compute.images.get", "storage.objects.get", "storage.objects.insert",
                         "compute.images.insert", "compute.globalOperations.wait"]
        assert "rawDisk={'source': 'https://storage.googleapis.com/" in result.stdout
        assert fake.seen == []
    assert list(client(emulator).list_blobs(BUCKET)) == []


@pytest.mark.parametrize(("forbidden", "permission"), [
    ("images.get", "compute.images.get"),
    ("images.insert", "compute.images.create"),
    ("operations", "compute.globalOperations.get"),
])
def test_compute_403_is_one_line_naming_the_permission(build: Build, emulator: str,
                                                       forbidden: str, permission: str) -> None:
    with FakeCompute(storage_url=emulator, forbidden=frozenset({forbidden})) as fake:
        result = publish(build, *endpoints(fake, emulator))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith(f"error: access denied: the GCE credentials lack the {permission} permission")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("forbidden", "permission"), [
    ("objects.get", "storage.objects.get"),
    ("objects.insert", "storage.objects.create"),
])
def test_storage_403_is_one_line_naming_the_permission(build: Build, forbidden: str,
                                                       permission: str) -> None:
    # The emulator knows no permissions: the fake answers the storage calls with GCS's 403.
    with FakeCompute(forbidden=frozenset({forbidden})) as fake:
        result = publish(build, "--compute-endpoint", fake.url, "--storage-endpoint", fake.url)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith(f"error: access denied: the GCE credentials lack the {permission} permission")


def test_retry_after_a_failed_insert_does_not_upload_again(build: Build, emulator: str) -> None:
    with FakeCompute(storage_url=emulator, forbidden=frozenset({"images.insert"})) as fake:
        assert publish(build, *endpoints(fake, emulator)).exit_code == 1
        generation = next(iter(client(emulator).list_blobs(BUCKET))).generation
        fake.forbidden.clear()
        result = publish(build, *endpoints(fake, emulator))
        assert result.exit_code == 0, result.stderr
        assert "already uploaded" in result.stdout
        assert next(iter(client(emulator).list_blobs(BUCKET))).generation == generation


def test_insert_whose_tarball_is_missing_fails_in_one_line(build: Build, emulator: str) -> None:
    # The operation ends DONE with an error: the fake looks for the object where it is
    # told the storage is, and finds nothing there.
    with FakeCompute(storage_url=emulator + "/nowhere") as fake:
        result = publish(build, *endpoints(fake, emulator), "--name", "lockgate-gone")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: gce: images.insert lockgate-gone failed: RESOURCE_NOT_FOUND")


def test_bios_image_without_gve_claims_neither_uefi_nor_gvnic(emulator: str,
                                                             tmp_path: Path) -> None:
    raw = pa.make_raw(tmp_path / "bios.raw")
    tar = pa.make_gce_tar(raw, tmp_path)
    manifest = pa.write_manifest(tmp_path, {"gce": tar}, firmware="bios",
                                 drivers=["nvme", "virtio_scsi"])
    with FakeCompute(storage_url=emulator) as fake:
        result = publish(Build(manifest, tar), *endpoints(fake, emulator), "--family", "lockgate-bios")
        assert result.exit_code == 0, result.stderr
        body = fake.requests("POST", r"/global/images$")[0].body
    assert [f["type"] for f in body["guestOsFeatures"]] == ["VIRTIO_SCSI_MULTIQUEUE"]
    assert body["family"] == "lockgate-bios"


def test_storage_emulator_host_is_honoured(build: Build, emulator: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # No --storage-endpoint: google-cloud-storage's own setting points at the emulator.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    with FakeCompute(storage_url=emulator) as fake:
        result = publish(build, "--compute-endpoint", fake.url)
        assert result.exit_code == 0, result.stderr
    blob = next(iter(client(emulator).list_blobs(BUCKET)))
    assert hashlib.sha256(blob.download_as_bytes()).hexdigest() == pa.sha256(build.tar)


def test_a_tarball_over_8_mib_goes_up_resumably(emulator: str, tmp_path: Path) -> None:
    # google-cloud-storage sends up to 8 MiB in one multipart request and more through
    # a resumable session. A recorder in front of the emulator sees the session opened
    # (the chunks then go to the session URL the emulator hands out, on its own address).
    raw = pa.make_raw(tmp_path / "big.raw", size=24 * pa.MiB, data=[(0, 12 * pa.MiB)])
    tar = pa.make_gce_tar(raw, tmp_path)
    assert tar.stat().st_size > 8 * pa.MiB
    build = Build(pa.write_manifest(tmp_path, {"gce": tar}), tar)
    with BlobGate(emulator) as recorder, FakeCompute(storage_url=emulator) as fake:
        result = publish(build, "--compute-endpoint", fake.url, "--storage-endpoint", recorder.url)
        assert result.exit_code == 0, result.stderr
        # (read back while the recorder runs: the emulator's links name the host it was
        # called on)
        blob = next(iter(client(emulator).list_blobs(BUCKET)))
        assert hashlib.sha256(blob.download_as_bytes()).hexdigest() == pa.sha256(tar)
    opened = [path for method, path in recorder.seen
              if method == "POST" and path.startswith("/upload/")]
    assert len(opened) == 1 and "uploadType=resumable" in opened[0]


def test_a_failed_image_of_this_build_is_reported_not_retried(build: Build, emulator: str) -> None:
    with FakeCompute(storage_url=emulator) as fake:
        assert publish(build, *endpoints(fake, emulator)).exit_code == 0
        (image,) = fake.images.values()
        image["status"] = "FAILED"
        result = publish(build, *endpoints(fake, emulator))
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines()[-1].startswith(
            f"error: gce: image {image['name']} from this build exists but FAILED")
        assert len(fake.requests("POST", r"/global/images$")) == 1


def test_an_unreachable_compute_endpoint_is_one_line(build: Build, emulator: str) -> None:
    with socket.socket() as s:  # a port the kernel gave and nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = publish(build, "--compute-endpoint", closed, "--storage-endpoint", emulator)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: gce: images.get: cannot reach {closed} (ConnectionError)"]
