"""Small built images for the publish tests: a sparse raw disk and the real format code.

The raw disk is a few MiB with data at known offsets and holes (and written zeros)
between them; the GCE tarball and the fixed VHD are made from it by the same
functions ``lockgate image build`` uses (lockgate.image.formats.gce / .vhd), and a
manifest.json in the build's shape lists them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from lockgate.image.formats import gce, vhd
from lockgate.proc import run

MiB = 1024 * 1024
EPOCH = 1750000000
VERSION = "1.2.3"
DRIVERS = ["ena", "gve", "hv_netvsc", "hv_storvsc", "hv_vmbus", "nvme", "virtio_blk",
           "virtio_net", "virtio_pci", "virtio_scsi"]

#: (offset, length) of the non-zero data in the default raw disk; everything else is
#: zeros, partly holes and partly written zeros (a converted disk has both).
DATA = [(0, 1536), (1 * MiB + 512, 3 * MiB), (9 * MiB, 512), (13 * MiB - 4096, 4096)]
RAW_SIZE = 16 * MiB


def make_raw(path: Path, size: int = RAW_SIZE, data: list[tuple[int, int]] = DATA,
             seed: bytes = b"lockgate") -> Path:
    with path.open("wb") as f:
        f.truncate(size)
        f.seek(5 * MiB)
        f.write(bytes(2 * MiB))  # written zeros: data on disk, still skipped
        for offset, length in data:
            stream = hashlib.shake_256(seed + offset.to_bytes(8, "big")).digest(length)
            f.seek(offset)
            f.write(stream.replace(b"\0", b"\1"))  # no zero page hides in the data
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def make_gce_tar(raw: Path, out: Path) -> Path:
    """lockgate.image.formats.gce.write without a build Context."""
    folder = out / "gce-work"
    folder.mkdir(parents=True, exist_ok=True)
    member = folder / gce.MEMBER
    run(["cp", "--sparse=always", raw, member])
    with member.open("r+b") as f:
        f.truncate(gce.padded_size(member.stat().st_size))
    target = out / f"lockgate-{VERSION}.gce.tar.gz"
    run(gce.tar_argv(target, folder, EPOCH), env={"GZIP": "-n"})
    shutil.rmtree(folder)
    return target


def make_vhd(raw: Path, out: Path) -> Path:
    target = out / f"lockgate-{VERSION}.vhd"
    vhd.make_vhd(raw, target, out, EPOCH, uuid.UUID(int=1))
    return target


def write_manifest(out: Path, artifacts: dict[str, Path], *, firmware: str = "hybrid",
                   drivers: list[str] | None = DRIVERS, version: str = VERSION,
                   disk_size: int = RAW_SIZE) -> Path:
    data: dict[str, Any] = {
        "manifest_format": 1, "name": "lockgate-appliance", "version": version,
        "source_date_epoch": EPOCH, "firmware": firmware,
        "disk": {"size": disk_size, "label_id": str(uuid.UUID(int=2))},
        "artifacts": [{"format": fmt, "path": os.path.relpath(path, out),
                       "sha256": sha256(path), "size": path.stat().st_size}
                      for fmt, path in artifacts.items()],
        "partitions": [], "packages": []}
    if drivers is not None:
        data["initramfs_drivers"] = drivers
    path = out / "manifest.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
