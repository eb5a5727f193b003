"""vmdk: streamOptimized, the VMDK flavour AWS VM Import and VMware OVA take.

qemu-img gives each new image a random content id (``CID=`` in the text
descriptor); it is replaced with a fixed one (same length, in place: nothing
checksums the descriptor) so the same build gives the same file.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact, progress_flag
from lockgate.proc import run

SECTOR = 512
_CID = re.compile(rb"^CID=[0-9a-fA-F]{8}$", re.M)


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
        found = _CID.search(descriptor)
        if found is None:
            raise ValueError(f"{path}: no CID= line in the VMDK descriptor")
        f.seek(offset * SECTOR + found.start())
        f.write(b"CID=%08x" % (cid & 0xFFFFFFFF))


def write(context: Context) -> Artifact:
    target = context.artifact_path("vmdk")
    target.unlink(missing_ok=True)
    run(convert_argv(str(context.disk_image), str(target)))
    fix_cid(target, context.derived_uuid("vmdk-cid").int)
    return artifact("vmdk", target)
