"""gce: the GCE image tarball.

GCE's rules: a gzip'd tar in GNU (oldgnu) format whose only member is a file
literally named ``disk.raw``, a whole number of GiB long. The raw disk is
copied sparsely to ``disk.raw``, padded to the next GiB, and tarred with
``-S`` so the holes stay holes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact
from lockgate.proc import run

GiB = 1024 * 1024 * 1024
MEMBER = "disk.raw"


def padded_size(size: int) -> int:
    return -(-size // GiB) * GiB


def tar_argv(target: Path, folder: Path, epoch: int) -> list[str]:
    return ["tar", "--format=oldgnu", "-Sczf", str(target), "-C", str(folder),
            f"--mtime=@{epoch}", "--owner=0", "--group=0", "--numeric-owner", MEMBER]


def write(context: Context) -> Artifact:
    folder = context.work_dir / "gce"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    member = folder / MEMBER
    run(["cp", "--sparse=always", context.disk_image, member])
    with member.open("r+b") as f:
        f.truncate(padded_size(member.stat().st_size))
    target = context.artifact_path("gce.tar.gz")
    target.unlink(missing_ok=True)
    run(tar_argv(target, folder, context.source_date_epoch), env={"GZIP": "-n"})
    shutil.rmtree(folder)
    return artifact("gce", target)
