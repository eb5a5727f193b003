"""vmdk: streamOptimized, the VMDK flavour AWS VM Import and VMware OVA take.

qemu-img gives each new image a random content id (``CID=`` in the text
descriptor, written without leading zeros, so 1 to 8 hex digits); it is
replaced with a fixed 8-digit one so the same build gives the same file. The
descriptor is rewritten in place within its own sectors (NUL-padded text that
nothing checksums).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact, progress_flag
from lockgate.proc import run

SECTOR = 512
_CID = re.compile(rb"^CID=[0-9a-fA-F]{1,8}$", re.M)


def convert_argv(source: str, target: str) -> list[str]:
    return ["qemu-img", "convert", *(progress_flag() or ["-q"]), "-f", "raw", "-O", "vmdk",
            "-o", "subformat=streamOptimized", source, target]


def fix_cid(path: Path, cid: int) -> None:
    """Set the descriptor's content id to ``cid`` (32 bits)."""
    with path.open("r+b") as f:
        header = f.read(SECTOR)
        if header[:4] != b"KDMV":
            raise ValueError(f"{path}: not a VMDK sparse extent (no 'KDMV' magic)")
        offset, size = struct.unpack_from("<QQ", header, 28)  # descriptor, in sectors
        f.seek(offset * SECTOR)
        descriptor = f.read(size * SECTOR)
        text = descriptor.split(b"\0", 1)[0]
        fixed, count = _CID.subn(b"CID=%08x" % (cid & 0xFFFFFFFF), text, count=1)
        if count != 1:
            raise ValueError(f"{path}: no CID= line in the VMDK descriptor")
        if len(fixed) > len(descriptor):
            raise ValueError(f"{path}: the VMDK descriptor has no room for an 8-digit CID")
        f.seek(offset * SECTOR)
        f.write(fixed.ljust(len(descriptor), b"\0"))


def write(context: Context) -> Artifact:
    target = context.artifact_path("vmdk")
    target.unlink(missing_ok=True)
    run(convert_argv(str(context.disk_image), str(target)))
    fix_cid(target, context.derived_uuid("vmdk-cid").int)
    return artifact("vmdk", target)
