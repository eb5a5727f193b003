"""vhd: fixed-size VHD for Azure.

Azure's rules: a *fixed* VHD (raw data followed by a 512-byte footer) whose
virtual size is a whole number of MiB. ``force_size`` stops qemu-img from
rounding the size to a CHS geometry. qemu-img stamps the footer with the
current time and a random unique id; both are replaced with fixed values
(and the checksum recomputed) so the same build gives the same file.
"""

from __future__ import annotations

import shutil
import struct
import uuid
from pathlib import Path

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact, progress_flag
from lockgate.proc import run

MiB = 1024 * 1024
FOOTER = 512
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z, the VHD timestamp origin
DISK_TYPE_FIXED = 2


def round_up(size: int, unit: int = MiB) -> int:
    return -(-size // unit) * unit


def checksum(footer: bytes) -> int:
    """One's complement of the byte sum, with the checksum field (64..68) counted as zero."""
    total = sum(footer[:64]) + sum(footer[68:])
    return ~total & 0xFFFFFFFF


def fix_footer(footer: bytes, timestamp: int, unique_id: uuid.UUID) -> bytes:
    if len(footer) != FOOTER or footer[:8] != b"conectix":
        raise ValueError("not a VHD footer (no 'conectix' cookie)")
    data = bytearray(footer)
    struct.pack_into(">I", data, 24, max(timestamp - VHD_EPOCH, 0))
    data[68:84] = unique_id.bytes
    struct.pack_into(">I", data, 64, checksum(bytes(data)))
    return bytes(data)


def parse_footer(footer: bytes) -> dict[str, int | str]:
    """The footer fields the format rules talk about."""
    return {"cookie": footer[:8].decode("latin-1"),
            "original_size": struct.unpack_from(">Q", footer, 40)[0],
            "current_size": struct.unpack_from(">Q", footer, 48)[0],
            "disk_type": struct.unpack_from(">I", footer, 60)[0],
            "checksum": struct.unpack_from(">I", footer, 64)[0]}


def convert_argv(source: str, target: str) -> list[str]:
    return ["qemu-img", "convert", *(progress_flag() or ["-q"]), "-f", "raw", "-O", "vpc",
            "-o", "subformat=fixed,force_size=on", source, target]


def make_vhd(raw: Path, target: Path, work: Path, timestamp: int, unique_id: uuid.UUID) -> None:
    size = raw.stat().st_size
    source = raw
    if size % MiB:
        source = work / "vhd-source.raw"
        shutil.copyfile(raw, source)
        with source.open("r+b") as f:
            f.truncate(round_up(size))
    target.unlink(missing_ok=True)
    run(convert_argv(str(source), str(target)))
    with target.open("r+b") as f:
        f.seek(-FOOTER, 2)
        footer = f.read(FOOTER)
        f.seek(-FOOTER, 2)
        f.write(fix_footer(footer, timestamp, unique_id))
    if source != raw:
        source.unlink()


def write(context: Context) -> Artifact:
    target = context.artifact_path("vhd")
    make_vhd(context.disk_image, target, context.work_dir, context.source_date_epoch,
             context.derived_uuid("vhd-unique-id"))
    return artifact("vhd", target)
