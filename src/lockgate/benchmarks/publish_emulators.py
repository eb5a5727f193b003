"""Publish uploads into the GCE and Azure emulators: MiB/s and the share skipped as zero.

``lockgate image publish gce`` runs for real (a fresh process, as a user runs it)
against gcp-storage-emulator (in this process, in memory, on a kernel-chosen port)
and the compute fake of the tests; ``publish azure`` against Azurite (npm, in memory)
and the tests' HTTPS fake of Resource Manager, whose managed-identity endpoint gives
DefaultAzureCredential its token. The figures come from the commands' own summary
lines. The fakes live in the checkout's ``tests/fakes`` (``make bench`` runs there);
what cannot run (no checkout, no extras, no node/Azurite) is skipped with its reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate import proc
from lockgate.benchmarks.publish import synthetic_build
from lockgate.benchmarks.report import fmt, rounded, say, table
from lockgate.benchmarks.servers import lockgate_argv, start_long_lived

REPO = Path(os.environ.get("LOCKGATE_REPO") or Path(__file__).resolve().parents[3])
FAKES = REPO / "tests" / "fakes"
AZURITE = REPO / "tests" / "emulators" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")
_UPLOAD = re.compile(r"upload (\S+): sent ([0-9.]+) MiB of ([0-9.]+) MiB in ([0-9.]+) s "
                     r"\(([0-9.]+) MiB/s\)(?:; (\d+) of (\d+) blocks all zero)?")
_PAGES = re.compile(r"azure: (\d+) Put Page calls wrote ([0-9.]+) MiB; ([0-9.]+) % of the "
                    r"512-byte pages")
_CLEAN_ENV = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_", "GOOGLE_", "STORAGE_EMULATOR_HOST",
              "CLOUDSDK_", "REQUESTS_CA_BUNDLE")


@dataclass(frozen=True)
class Upload:
    cloud: str
    artifact_mib: float
    sent_mib: float
    seconds: float
    mib_s: float
    zero_blocks: int | None = None
    blocks: int | None = None
    pages_skipped_share: float | None = None


@dataclass(frozen=True)
class EmulatorResult:
    uploads: dict[str, Upload]
    skipped: dict[str, str]


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLEAN_ENV)}
    env.update(extra)
    return env


def _publish(cloud: str, manifest: Path, args: list[str], env: dict[str, str]) -> str:
    done = proc.run([*lockgate_argv(), "image", "publish", cloud, "--manifest", manifest, *args],
                    env=env, capture=True, check=False, timeout=1800)
    stderr = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"publish {cloud} failed: {stderr.strip().splitlines()[-1:]}")
    return stderr


def _parse(cloud: str, stderr: str) -> Upload:
    m = _UPLOAD.search(stderr)
    if m is None:
        raise RuntimeError(f"publish {cloud} printed no upload summary: {stderr[-300:]}")
    pages = _PAGES.search(stderr)
    return Upload(cloud, float(m.group(3)), float(m.group(2)), float(m.group(4)),
                  float(m.group(5)),
                  int(m.group(6)) if m.group(6) else None, int(m.group(7)) if m.group(7) else None,
                  float(pages.group(3)) / 100 if pages else None)


@contextlib.contextmanager
def _fakes_on_path() -> Iterator[None]:
    sys.path.insert(0, str(FAKES))
    try:
        yield
    finally:
        sys.path.remove(str(FAKES))


def gce_upload(manifest: Path) -> Upload:
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined]

    with _fakes_on_path():
        from gce_compute import FakeCompute

    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
        storage.Client(project="bench", credentials=AnonymousCredentials(),
                       client_options={"api_endpoint": url}).create_bucket("bench-images")
        with FakeCompute(storage_url=url) as fake:
            stderr = _publish("gce", manifest, [
                "--project", "bench", "--bucket", "bench-images", "--compute-endpoint", fake.url,
                "--storage-endpoint", url], _env({}))
    finally:
        server.stop()
    return _parse("gce", stderr)


def azure_upload(manifest: Path, work: Path) -> Upload:
    with _fakes_on_path():
        from azure_arm import FakeArm

    child = start_long_lived("azurite", [
        str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
        "--extentMemoryLimit", "3000", "--silent", "--disableTelemetry", "--skipApiVersionCheck"],
        cwd=work)
    try:
        child.wait_for_line("Azurite Blob service successfully listens on ", 60)
        url = next(line for line in child.output().splitlines()
                   if "successfully listens on " in line).rsplit(" ", 1)[1]
        with FakeArm(work) as arm:
            connection = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                          f"AccountKey={AZURITE_KEY};BlobEndpoint={url}/devstoreaccount1;")
            stderr = _publish("azure", manifest, [
                "--subscription", "00000000-0000-0000-0000-000000000000", "--resource-group",
                "bench", "--location", "westeurope", "--storage-account", "devstoreaccount1",
                "--arm-endpoint", arm.url],
                _env({**arm.env(), "AZURE_STORAGE_CONNECTION_STRING": connection}))
    finally:
        child.stop()
    return _parse("azure", stderr)


def _has(manifest: Path, fmt_: str) -> bool:
    if not manifest.is_file():
        return False
    return any(a.get("format") == fmt_ for a in json.loads(manifest.read_text()).get("artifacts", []))


def run_publish_emulators(build_dir: Path) -> EmulatorResult:
    """Both uploads, of the built appliance's artifacts when the build has them, else of
    a synthetic build shaped like it."""
    uploads: dict[str, Upload] = {}
    skipped: dict[str, str] = {}
    if not FAKES.is_dir():
        reason = f"{FAKES} missing (run from the checkout)"
        return EmulatorResult({}, {"gce": reason, "azure": reason})
    real = build_dir / "manifest.json"
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-emulators-") as tmp:
        synthetic: Path | None = None

        def manifest_for(fmt_: str) -> Path:
            nonlocal synthetic
            if _has(real, fmt_):
                return real
            if synthetic is None:
                say("publish: making a small build with vhd and gce artifacts")
                synthetic = synthetic_build(Path(tmp) / "build")
            return synthetic

        (Path(tmp) / "build").mkdir()
        if importlib.util.find_spec("gcp_storage_emulator") is None:
            skipped["gce"] = "gcp-storage-emulator is not installed (pip install -e '.[dev]')"
        else:
            manifest = manifest_for("gce")
            say("publish: gce upload into gcp-storage-emulator")
            try:
                uploads["gce"] = gce_upload(manifest)
            except RuntimeError as exc:
                skipped["gce"] = str(exc)
        if shutil.which("node") is None or not AZURITE.exists():
            skipped["azure"] = "node or Azurite missing (scripts/setup.sh installs Azurite)"
        else:
            manifest = manifest_for("vhd")
            say("publish: azure upload into Azurite")
            try:
                uploads["azure"] = azure_upload(manifest, Path(tmp))
            except RuntimeError as exc:
                skipped["azure"] = str(exc)
    return EmulatorResult(uploads, skipped)


def summary(result: EmulatorResult) -> dict[str, Any]:
    gce, azure = result.uploads.get("gce"), result.uploads.get("azure")
    return {
        "publish_gce_mib_s": rounded(gce.mib_s, 1) if gce else None,
        "publish_azure_mib_s": rounded(azure.mib_s, 1) if azure else None,
        "publish_azure_zero_share": rounded(azure.pages_skipped_share) if azure else None,
        "publish_azure_zero_blocks_share": rounded(azure.zero_blocks / azure.blocks)
        if azure and azure.blocks and azure.zero_blocks is not None else None,
    }


def tables(result: EmulatorResult) -> Iterator[str]:
    rows = []
    for cloud, up in result.uploads.items():
        zero = (f"{up.zero_blocks}/{up.blocks} blocks, {100 * (up.pages_skipped_share or 0):.1f} %"
                " of pages" if up.blocks else "—")
        rows.append([cloud, fmt(up.artifact_mib, ".0f"), fmt(up.sent_mib, ".1f"),
                     fmt(up.seconds, ".1f"), fmt(up.mib_s, ".1f"), zero])
    yield table(["cloud", "artifact MiB", "sent MiB", "upload s", "MiB/s", "zero skipped"], rows,
                title="publish gce/azure into their emulators")
    for cloud, reason in result.skipped.items():
        yield f"publish {cloud} upload: skipped ({reason})"
