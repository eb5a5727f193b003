"""``lockgate image publish azure`` against Azurite (npm) and a local HTTPS fake of ARM.

Azurite stores the page blob for real (sparse page ranges, byte-exact reads); the
Resource Manager side is tests/fakes/azure_arm.py over TLS with a self-signed
certificate, trusted through REQUESTS_CA_BUNDLE, and the credential is the real
DefaultAzureCredential chain, which finds the fake's managed-identity endpoint
(IDENTITY_ENDPOINT/IDENTITY_HEADER) and gets its token there. The fake reads the
blob back from Azurite to refuse what Azure would (missing blob, not a fixed VHD).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))

import publish_artifacts as pa
from azure_arm import FakeArm, make_cert
from blob_gate import BlobGate
from emulators import emulator

from lockgate.cli import root

blob_sdk = pytest.importorskip("azure.storage.blob", reason="the publish extra is not installed")

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / "tests/emulators/node_modules/.bin/azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")
SUB = "00000000-0000-0000-0000-0000000000aa"
RG = "lockgate-rg"
CONTAINER = "images"
MiB = 1024 * 1024


@dataclass
class Build:
    manifest: Path
    vhd: Path


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    out = tmp_path_factory.mktemp("build")
    raw = pa.make_raw(out / "lockgate.raw")
    vhd = pa.make_vhd(raw, out)
    return Build(pa.write_manifest(out, {"raw": raw, "vhd": vhd}), vhd)


@pytest.fixture(scope="module")
def azurite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: Azurite (npm) cannot run")
    if not AZURITE.exists():
        pytest.skip(f"{AZURITE} missing: scripts/setup.sh installs Azurite with npm ci")
    argv = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
            "--extentMemoryLimit", "512", "--silent", "--disableTelemetry",
            "--skipApiVersionCheck"]
    with emulator(argv, r"listens on (?P<url>http://\S+)",
                  cwd=str(tmp_path_factory.mktemp("azurite"))) as running:
        yield running.url


def connection_string(url: str) -> str:
    scheme = url.split(":", 1)[0]
    return (f"DefaultEndpointsProtocol={scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={url}/{ACCOUNT};")


@pytest.fixture
def azurite(azurite_url: str) -> str:
    """Azurite with no containers."""
    service = blob_sdk.BlobServiceClient.from_connection_string(connection_string(azurite_url))
    for container in service.list_containers():
        service.delete_container(container.name)
    return azurite_url


def reader(url: str) -> Any:
    service = blob_sdk.BlobServiceClient.from_connection_string(connection_string(url))

    def read(uri: str) -> tuple[int, bytes] | None:
        path = unquote(urlsplit(uri).path).split("/")  # /account/container/blob
        blob = service.get_blob_client(path[2], "/".join(path[3:]))
        if not blob.exists():
            return None
        size = blob.get_blob_properties().size
        return size, blob.download_blob(offset=size - 512, length=512).readall()

    return read


@pytest.fixture
def gate(azurite: str) -> Iterator[BlobGate]:
    """Azurite behind the Put Page checks Azure makes and Azurite does not."""
    with BlobGate(azurite) as running:
        yield running


def clean_azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Azure setting inherited from the runner reaches the credential chain."""
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_USERNAME",
                 "AZURE_PASSWORD", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_AUTHORITY_HOST", "AZURE_SUBSCRIPTION_ID", "MSI_ENDPOINT", "MSI_SECRET",
                 "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "AZURE_STORAGE_CONNECTION_STRING",
                 "AZURE_POD_IDENTITY_AUTHORITY_HOST", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def arm(tmp_path: Path, azurite: str, gate: BlobGate,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeArm]:
    clean_azure_env(monkeypatch)
    with FakeArm(tmp_path, blob_reader=reader(azurite)) as fake:
        for key, value in fake.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(gate.url))
        yield fake


def publish(build: Build, arm: FakeArm, *args: str, manifest: Path | None = None) -> Result:
    return CliRunner().invoke(root, [
        "image", "publish", "azure", "--manifest", str(manifest or build.manifest),
        "--subscription", SUB, "--resource-group", RG, "--location", "westeurope",
        "--storage-account", ACCOUNT, "--container", CONTAINER, "--arm-endpoint", arm.url,
        "--workers", "4", *args])


def blob_of(azurite: str, name: str) -> Any:
    service = blob_sdk.BlobServiceClient.from_connection_string(connection_string(azurite))
    return service.get_blob_client(CONTAINER, name)


def nonzero_pages(path: Path) -> list[tuple[int, int]]:
    """(start, end) of the runs of non-zero 512-byte pages, within each 4 MiB block."""
    data = path.read_bytes()
    runs: list[tuple[int, int]] = []
    for block in range(0, len(data), 4 * MiB):
        chunk = data[block:block + 4 * MiB]
        pages = [i for i in range(0, len(chunk), 512) if chunk[i:i + 512].strip(b"\0")]
        if pages:
            runs.append((block + pages[0], block + pages[-1] + 512))
    return runs


def image_name(build: Build) -> str:
    return "lockgate-appliance-1-2-3-" + hashlib.sha256(build.manifest.read_bytes()).hexdigest()[:12]


def test_publish_uploads_the_vhd_sparsely_and_makes_a_v2_image(build: Build, arm: FakeArm,
                                                               azurite: str,
                                                               gate: BlobGate) -> None:
    result = publish(build, arm)
    assert result.exit_code == 0, result.stderr
    name = image_name(build)
    assert f"created image {name}" in result.stdout
    assert "MiB/s" in result.stderr and "all zero, skipped" in result.stderr

    blob = blob_of(azurite, f"{name}.vhd")
    blob_uri = f"{gate.url}/{ACCOUNT}/{CONTAINER}/{name}.vhd"
    props = blob.get_blob_properties()
    assert props.blob_type == "PageBlob" and props.size == build.vhd.stat().st_size
    assert props.metadata["sha256"] == pa.sha256(build.vhd)
    assert hashlib.sha256(blob.download_blob().readall()).hexdigest() == pa.sha256(build.vhd)
    # Only the non-zero pages were written: Azurite's page ranges are exactly the puts
    # (Azurite keeps adjacent ranges apart), and they are far less than the disk.
    ranges = [(r.start, r.end + 1) for r in blob.list_page_ranges()]
    assert ranges == nonzero_pages(build.vhd)
    # ... and every Put Page passed the checks Azure makes (aligned, at most 4 MiB).
    assert sorted((o, o + n) for o, n in gate.pages) == ranges and gate.refused == []
    skipped = 100 * (1 - sum(e - s for s, e in ranges) / props.size)
    assert f"{skipped:.1f} % of the 512-byte pages" in result.stderr
    assert sum(e - s for s, e in ranges) < props.size // 3

    puts = arm.requests("PUT", r"/providers/Microsoft\.Compute/images/")
    assert len(puts) == 1
    body = puts[0].body
    assert body["location"] == "westeurope"
    assert body["properties"]["hyperVGeneration"] == "V2"
    assert body["properties"]["storageProfile"]["osDisk"] == {
        "osType": "Linux", "osState": "Generalized", "blobUri": blob_uri}
    assert body["tags"]["manifest-sha256"] == hashlib.sha256(build.manifest.read_bytes()).hexdigest()
    # The token came from the managed-identity endpoint and was sent (over TLS) to ARM.
    assert arm.requests("GET", r"^/msi/token")
    assert all(s.headers.get("authorization") == f"Bearer {arm.token}"
               for s in arm.seen if not s.path.startswith("/msi/"))
    polls = arm.requests("GET", r"/operations/")
    assert len(polls) == arm.polls
    assert arm.resources[("image", SUB, RG, name)]["properties"]["provisioningState"] == "Succeeded"


def test_second_publish_finds_the_image_and_makes_nothing(build: Build, arm: FakeArm,
                                                          azurite: str) -> None:
    assert publish(build, arm).exit_code == 0
    etag = blob_of(azurite, f"{image_name(build)}.vhd").get_blob_properties().etag
    before = len(arm.seen)
    again = publish(build, arm)
    assert again.exit_code == 0, again.stderr
    assert "already exists" in again.stdout and "nothing to do" in again.stdout
    assert [s.method for s in arm.seen[before:] if not s.path.startswith("/msi/")] == ["GET"]
    assert blob_of(azurite, f"{image_name(build)}.vhd").get_blob_properties().etag == etag


def test_retry_after_a_denied_image_does_not_upload_again(build: Build, arm: FakeArm,
                                                          azurite: str) -> None:
    arm.forbidden.add("Microsoft.Compute/images/write")
    denied = publish(build, arm)
    assert denied.exit_code == 1
    errors = [line for line in denied.stderr.splitlines() if line.startswith("error:")]
    assert errors == [denied.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith("error: access denied: the Azure credentials lack the "
                                "Microsoft.Compute/images/write permission (AuthorizationFailed")
    etag = blob_of(azurite, f"{image_name(build)}.vhd").get_blob_properties().etag
    arm.forbidden.clear()
    result = publish(build, arm)
    assert result.exit_code == 0, result.stderr
    assert "already uploaded" in result.stdout
    assert blob_of(azurite, f"{image_name(build)}.vhd").get_blob_properties().etag == etag


def test_read_denied_is_one_line_naming_the_action(build: Build, arm: FakeArm) -> None:
    arm.forbidden.add("Microsoft.Compute/images/read")
    result = publish(build, arm)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]
    assert "lack the Microsoft.Compute/images/read permission" in result.stderr


def test_dry_run_prints_every_call_and_makes_none(build: Build, arm: FakeArm,
                                                  azurite: str) -> None:
    result = publish(build, arm, "--dry-run")
    assert result.exit_code == 0, result.stderr
    calls = [line.split()[1] for line in result.stdout.splitlines()
             if line.startswith("dry-run:") and not line.startswith("dry-run: #")]
    assert calls == ["compute.images.get", "blob.getProperties", "blob.container.create",
                     "blob.create", "blob.putPage", "blob.setMetadata",
                     "compute.images.createOrUpdate"]
    assert "hyperVGeneration='V2'" in result.stdout
    assert arm.seen == []
    service = blob_sdk.BlobServiceClient.from_connection_string(connection_string(azurite))
    assert list(service.list_containers()) == []


def test_bios_image_is_v1(arm: FakeArm, tmp_path: Path) -> None:
    raw = pa.make_raw(tmp_path / "bios.raw", size=4 * MiB, data=[(0, 4096)])
    vhd = pa.make_vhd(raw, tmp_path)
    manifest = pa.write_manifest(tmp_path, {"vhd": vhd}, firmware="bios")
    result = publish(Build(manifest, vhd), arm)
    assert result.exit_code == 0, result.stderr
    body = arm.requests("PUT", r"/images/")[0].body
    assert body["properties"]["hyperVGeneration"] == "V1"


def test_gallery_version_makes_the_definition_then_the_version(build: Build, arm: FakeArm,
                                                               azurite: str) -> None:
    arm.galleries.add((SUB, RG, "lockgategallery"))
    args = ("--gallery", "lockgategallery", "--gallery-image", "lockgate")
    result = publish(build, arm, *args)
    assert result.exit_code == 0, result.stderr
    assert "created gallery image version lockgategallery/lockgate/1.2.3" in result.stdout
    definition = arm.requests("PUT", r"/galleries/lockgategallery/images/lockgate\?")[0].body
    assert definition["properties"] | {} == {
        "osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V2",
        "architecture": "x64",
        "identifier": {"publisher": "lockgate", "offer": "lockgate-appliance", "sku": "lockgate"}}
    version = arm.requests("PUT", r"/versions/1\.2\.3\?")[0].body
    source = version["properties"]["storageProfile"]["osDiskImage"]["source"]
    assert source["uri"].endswith(f"/{ACCOUNT}/{CONTAINER}/{image_name(build)}.vhd")
    assert source["storageAccountId"] == (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
                                          f"Microsoft.Storage/storageAccounts/{ACCOUNT}")
    # Again: the version is found, nothing is made.
    before = len(arm.requests("PUT"))
    again = publish(build, arm, *args)
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert len(arm.requests("PUT")) == before


def test_gallery_definition_of_another_generation_is_refused(build: Build, arm: FakeArm) -> None:
    arm.galleries.add((SUB, RG, "g"))
    arm.resources[("gallery_image", SUB, RG, "g", "old")] = {
        "properties": {"osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V1"}}
    result = publish(build, arm, "--gallery", "g", "--gallery-image", "old")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: azure: gallery image g/old is V1/Linux/Generalized, this image needs "
        "V2/Linux/Generalized; use another --gallery-image")
    assert not arm.requests("PUT")


def test_missing_gallery_is_one_line(build: Build, arm: FakeArm) -> None:
    result = publish(build, arm, "--gallery", "nogallery", "--gallery-image", "lockgate")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: azure: galleryImages.createOrUpdate failed: 404 "
                           "ParentResourceNotFound")


def test_pages_go_up_in_parallel(arm: FakeArm, gate: BlobGate, azurite: str,
                                 tmp_path: Path) -> None:
    # 8 blocks of data, 4 workers: the gate sees more than one Put Page at a time.
    data = [(i * 4 * MiB + 512, 4 * MiB - 1024) for i in range(8)]
    raw = pa.make_raw(tmp_path / "big.raw", size=40 * MiB, data=data)
    vhd = pa.make_vhd(raw, tmp_path)
    manifest = pa.write_manifest(tmp_path, {"vhd": vhd})
    result = publish(Build(manifest, vhd), arm)
    assert result.exit_code == 0, result.stderr
    assert gate.max_in_flight >= 2
    assert len(gate.pages) == 8 + 1  # the data blocks and the footer's page
    assert gate.refused == []


def test_storage_write_denied_is_one_line_naming_the_action(build: Build, arm: FakeArm,
                                                              gate: BlobGate) -> None:
    gate.deny_writes = True
    result = publish(build, arm)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith(
        "error: access denied: the Azure credentials lack the "
        "Microsoft.Storage/storageAccounts/blobServices/containers/"
        "write permission (AuthorizationPermissionMismatch")
    assert not arm.requests("PUT")


def test_a_failed_image_of_this_build_is_made_again(build: Build, arm: FakeArm) -> None:
    assert publish(build, arm).exit_code == 0
    (key,) = [k for k in arm.resources if k[0] == "image"]
    arm.resources[key]["properties"]["provisioningState"] = "Failed"
    result = publish(build, arm)
    assert result.exit_code == 0, result.stderr
    assert "is Failed; making it again" in result.stderr
    assert "already uploaded" in result.stdout  # the blob is complete: not sent again
    assert len(arm.requests("PUT", r"/images/")) == 2
    assert arm.resources[key]["properties"]["provisioningState"] == "Succeeded"



@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def azurite_oauth(tls: tuple[Path, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite over https that also takes bearer tokens (``--oauth basic``)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: Azurite (npm) cannot run")
    if not AZURITE.exists():
        pytest.skip(f"{AZURITE} missing: scripts/setup.sh installs Azurite with npm ci")
    argv = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
            "--extentMemoryLimit", "256", "--silent", "--disableTelemetry",
            "--skipApiVersionCheck", "--oauth", "basic", "--cert", str(tls[0]), "--key", str(tls[1])]
    with emulator(argv, r"listens on (?P<url>https://\S+)",
                  cwd=str(tmp_path_factory.mktemp("azurite-oauth"))) as running:
        yield running.url


def test_blob_endpoint_with_the_default_credential_chain(build: Build, azurite_oauth: str,
                                                         tls: tuple[Path, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # No connection string: the blob side uses DefaultAzureCredential too, over TLS.
    clean_azure_env(monkeypatch)
    with FakeArm(tmp_path, cert=tls, blob_reader=reader(azurite_oauth)) as arm:
        for key, value in arm.env().items():
            monkeypatch.setenv(key, value)
        result = publish(build, arm, "--blob-endpoint", f"{azurite_oauth}/{ACCOUNT}")
        assert result.exit_code == 0, result.stderr
        assert "https://storage.azure.com" in arm.resources_asked
        name = image_name(build)
        blob = blob_sdk.BlobServiceClient.from_connection_string(
            connection_string(azurite_oauth)).get_blob_client(CONTAINER, f"{name}.vhd")
        assert hashlib.sha256(blob.download_blob().readall()).hexdigest() == pa.sha256(build.vhd)
        body = arm.requests("PUT", r"/images/")[0].body
        assert body["properties"]["storageProfile"]["osDisk"]["blobUri"] == (
            f"{azurite_oauth}/{ACCOUNT}/{CONTAINER}/{name}.vhd")
