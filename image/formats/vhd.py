"""vhd: fixed-size VHD for Azure.

Azure's rules: a *fixed* VHD (raw data followed by a 512-byte footer) whose
virtual size is a whole number of MiB. ``force_size`` stops qemu-img from
rounding the size to a CHS geometry. qemu-img stamps the footer with the
current time and a random unique id; both are replaced with fixed values
(and the checksum recomputed) so the same build gives the same file.

A fixed VHD is the raw bytes, zero padding and the footer, so it is made that
way: a sparse copy of the raw disk plus the footer of an empty image of the
same size (``qemu-img create``: the footer ``qemu-img convert`` writes, without
converting 2 GiB). Its sha256 continues from the raw disk's, never re-read.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact, progress_flag, sha256_state
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
    """The conversion make_vhd's copy stands for (tests hold the two byte-equal)."""
    return ["qemu-img", "convert", *(progress_flag() or ["-q"]), "-f", "raw", "-O", "vpc",
            "-o", "subformat=fixed,force_size=on", source, target]


def blank_footer(virtual_size: int, work: Path) -> bytes:
    """The footer qemu-img gives a fixed VHD of ``virtual_size`` (a whole number of MiB)."""
    scratch = work / f".vhd-footer-{virtual_size}.vhd"
    scratch.unlink(missing_ok=True)
    try:
        run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on",
             scratch, str(virtual_size)])
        with scratch.open("rb") as f:
            f.seek(-FOOTER, 2)
            return f.read(FOOTER)
    finally:
        scratch.unlink(missing_ok=True)


def make_vhd(raw: Path, target: Path, work: Path, timestamp: int, unique_id: uuid.UUID) -> str:
    """Write the fixed VHD of ``raw`` to ``target``; returns its sha256."""
    size = raw.stat().st_size
    virtual = round_up(size)
    footer = fix_footer(blank_footer(virtual, work), timestamp, unique_id)
    target.unlink(missing_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        run(["cp", "--sparse=always", raw, partial])
        with partial.open("r+b") as f:
            f.truncate(virtual)  # the padding to a whole MiB: a hole
            f.seek(virtual)
            f.write(footer)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    h = sha256_state(raw)
    h.update(bytes(virtual - size))
    h.update(footer)
    return str(h.hexdigest())


def write(context: Context) -> Artifact:
    target = context.artifact_path("vhd")
    sha256 = make_vhd(context.disk_image, target, context.work_dir, context.source_date_epoch,
                      context.derived_uuid("vhd-unique-id"))
    return artifact("vhd", target, sha256)
