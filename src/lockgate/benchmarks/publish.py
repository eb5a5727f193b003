"""Publish: upload throughput into moto's EBS direct APIs and each cloud's dry-run time.

``lockgate image publish aws`` runs for real against moto in server mode (a
child process on a kernel-chosen port, data kept in its memory) with the built
appliance disk when ``build/manifest.json`` has one, else a synthetic 256 MiB
disk (a quarter data, the rest zeros and holes); the figures are parsed from the
command's own summary line. ``--dry-run`` of all three clouds is timed as a
user runs it (a fresh process: Python start-up and imports included), best of
three, on a small synthetic build with every artifact a cloud needs. Needs the
``publish`` and ``dev`` extras (moto); without moto the AWS upload is left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate import proc
from lockgate.benchmarks.report import fmt, rounded, say, table
from lockgate.benchmarks.servers import lockgate_argv, start_long_lived
from lockgate.errors import Failure

MiB = 1024 * 1024
SYNTHETIC_SIZE = 256 * MiB
SYNTHETIC_BLOCK = 4 * MiB
DRY_RUNS = 3
_SUMMARY = re.compile(r"ebs snapshot: sent ([0-9.]+) MiB of ([0-9.]+) MiB in ([0-9.]+) s "
                      r"\(([0-9.]+) MiB/s\); (\d+) of (\d+) blocks all zero")
_MOTO = """
import signal
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"moto listening on http://{host}:{port}", flush=True)
signal.pause()  # until the bench stops it (SIGTERM)
"""
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
             "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
             "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
             "AWS_EC2_METADATA_DISABLED": "true"}
DRY_RUN_ARGS = {
    "aws": ["--region", "us-east-1"],
    "gce": ["--project", "bench-project", "--bucket", "bench-images"],
    "azure": ["--subscription", "00000000-0000-0000-0000-000000000000", "--resource-group",
              "bench", "--location", "westeurope", "--storage-account", "benchimages"],
}


@dataclass(frozen=True)
class AwsUpload:
    disk: str
    disk_mib: float
    sent_mib: float
    seconds: float
    mib_s: float
    zero_blocks: int
    blocks: int
    wall_s: float


@dataclass(frozen=True)
class PublishResult:
    upload: AwsUpload | None
    upload_skipped: str | None
    dry_run_s: dict[str, float | None]


def synthetic_build(folder: Path, size: int = SYNTHETIC_SIZE) -> Path:
    """A disk shaped like the appliance's: a fifth of its 4 MiB blocks hold data that
    does not compress (the GCE tarball is gzip'd, so repeated bytes would flatter it),
    the rest are holes; its VHD and GCE tarball by the formats' own code, a manifest."""
    from lockgate.image.formats import gce, vhd

    raw = folder / "lockgate-bench.raw"
    with raw.open("wb") as f:
        f.truncate(size)
        for index in range(0, size // SYNTHETIC_BLOCK, 5):
            f.seek(index * SYNTHETIC_BLOCK)
            f.write(hashlib.shake_256(index.to_bytes(4, "big")).digest(SYNTHETIC_BLOCK))
    artifacts = {"raw": raw, "vhd": folder / "lockgate-bench.vhd",
                 "gce": folder / "lockgate-bench.gce.tar.gz"}
    vhd.make_vhd(raw, artifacts["vhd"], folder, 1750000000,
                 uuid.UUID("00000000-0000-4000-8000-000000000000"))
    tree = folder / "gce"
    tree.mkdir()
    proc.run(["cp", "--sparse=always", raw, tree / gce.MEMBER])
    with (tree / gce.MEMBER).open("r+b") as f:
        f.truncate(gce.padded_size(size))
    proc.run(gce.tar_argv(artifacts["gce"], tree, 1750000000), env={"GZIP": "-n"})
    manifest = {"manifest_format": 1, "name": "lockgate-bench", "version": "0.0.0-bench",
                "firmware": "hybrid", "disk": {"size": size},
                "initramfs_drivers": ["nvme", "ena", "virtio_blk", "virtio_scsi", "gve"],
                "artifacts": [{"format": fmt_, "path": path.name, "size": path.stat().st_size,
                               "sha256": _sha256(path)} for fmt_, path in artifacts.items()],
                "partitions": [], "packages": []}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    child = start_long_lived("moto", [sys.executable, "-c", _MOTO], env=DUMMY_AWS)
    try:
        child.wait_for_line("moto listening on ", 60)
        line = next(line for line in child.output().splitlines()
                    if line.startswith("moto listening on "))
        yield line.rsplit(" ", 1)[1]
    finally:
        child.stop()


def aws_upload(manifest: Path, label: str) -> AwsUpload:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with moto_server() as url:
        began = time.monotonic()
        done = proc.run([*lockgate_argv(), "image", "publish", "aws", "--manifest", manifest],
                        env={**env, **DUMMY_AWS, "AWS_ENDPOINT_URL": url}, capture=True,
                        timeout=1800)
        wall = time.monotonic() - began
    stderr = done.stderr.decode(errors="replace")
    match = _SUMMARY.search(stderr)
    if match is None:
        raise Failure(f"publish aws printed no upload summary: {stderr[-500:]}")
    sent, total, seconds, rate, zero, blocks = match.groups()
    return AwsUpload(label, float(total), float(sent), float(seconds), float(rate), int(zero),
                     int(blocks), wall)


def dry_run_seconds(cloud: str, manifest: Path) -> float | None:
    best: float | None = None
    for _ in range(DRY_RUNS):
        began = time.monotonic()
        done = proc.run([*lockgate_argv(), "image", "publish", cloud, "--manifest", manifest,
                         "--dry-run", *DRY_RUN_ARGS[cloud]], check=False, capture=True, timeout=120)
        took = time.monotonic() - began
        if done.returncode != 0:
            say(f"publish {cloud} --dry-run failed: "
                f"{done.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
            return None
        best = took if best is None else min(best, took)
    return best


def run_publish(build_dir: Path) -> PublishResult:
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-publish-") as tmp:
        say("publish: making a small build with raw, vhd and gce artifacts")
        synthetic = synthetic_build(Path(tmp))
        dry = {cloud: rounded(dry_run_seconds(cloud, synthetic)) for cloud in DRY_RUN_ARGS}
        upload, skipped = None, None
        if importlib.util.find_spec("moto") is None:
            skipped = "moto is not installed (pip install -e '.[dev]')"
        else:
            real = build_dir / "manifest.json"
            has_raw = real.is_file() and any(
                a.get("format") == "raw" for a in json.loads(real.read_text()).get("artifacts", []))
            manifest, label = (real, "built appliance") if has_raw else (synthetic, "synthetic")
            say(f"publish: aws upload of the {label} disk into moto")
            upload = aws_upload(manifest, label)
    return PublishResult(upload, skipped, dry)


def summary(result: PublishResult) -> dict[str, Any]:
    data: dict[str, Any] = {f"publish_dry_run_s_{cloud}": value
                            for cloud, value in result.dry_run_s.items()}
    data["publish_dry_run_s"] = rounded(max((v for v in result.dry_run_s.values() if v is not None),
                                            default=None))
    up = result.upload
    data["publish_aws_mib_s"] = rounded(up.mib_s, 1) if up else None
    data["publish_aws_zero_share"] = rounded(up.zero_blocks / up.blocks) if up and up.blocks else None
    data["publish_aws_sent_mib"] = rounded(up.sent_mib, 1) if up else None
    return data


def tables(result: PublishResult) -> Iterator[str]:
    yield table(["cloud", "dry run (s, best of 3, whole command)"],
                [[cloud, fmt(value, ".2f")] for cloud, value in result.dry_run_s.items()],
                title="publish --dry-run")
    up = result.upload
    if up is None:
        yield f"publish aws upload: skipped ({result.upload_skipped})"
        return
    yield table(["disk", "size MiB", "sent MiB", "upload s", "MiB/s", "zero blocks", "whole command s"],
                [[up.disk, fmt(up.disk_mib, ".0f"), fmt(up.sent_mib, ".1f"), fmt(up.seconds, ".1f"),
                  fmt(up.mib_s, ".1f"), f"{up.zero_blocks}/{up.blocks} ({100 * up.zero_blocks / up.blocks:.1f} %)",
                  fmt(up.wall_s, ".1f")]],
                title="publish aws into moto (EBS direct APIs, 512 KiB blocks, 16 streams)")
