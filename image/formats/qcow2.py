"""qcow2: compressed, for local QEMU/KVM and OpenStack-style clouds."""

from __future__ import annotations

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact, progress_flag
from lockgate.proc import run


def convert_argv(source: str, target: str) -> list[str]:
    return ["qemu-img", "convert", *(progress_flag() or ["-q"]), "-f", "raw", "-O", "qcow2", "-c",
            "-o", "compression_type=zlib", source, target]


def write(context: Context) -> Artifact:
    target = context.artifact_path("qcow2")
    target.unlink(missing_ok=True)
    run(convert_argv(str(context.disk_image), str(target)))
    return artifact("qcow2", target)
