"""vmdk: streamOptimized, the VMDK flavour AWS VM Import and VMware OVA take."""

from __future__ import annotations

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact, progress_flag
from lockgate.proc import run


def convert_argv(source: str, target: str) -> list[str]:
    return ["qemu-img", "convert", *(progress_flag() or ["-q"]), "-f", "raw", "-O", "vmdk",
            "-o", "subformat=streamOptimized", source, target]


def write(context: Context) -> Artifact:
    target = context.artifact_path("vmdk")
    target.unlink(missing_ok=True)
    run(convert_argv(str(context.disk_image), str(target)))
    return artifact("vmdk", target)
