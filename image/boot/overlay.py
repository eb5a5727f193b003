"""Throw-away disks: a qcow2 overlay over the pristine image, a copy of the UEFI variables.

The built image is never written to unless the user asks (``--persist``):
QEMU writes into an overlay whose backing file is the image, and the overlay
is deleted with the VM's work folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lockgate.errors import BadInput
from lockgate.image.boot.qemu import OVMF_VARS
from lockgate.proc import run

QCOW2_MAGIC = b"QFI\xfb"


def resolve_image(image: Path) -> Path:
    """The disk file for ``image``: a file, or a build folder (its manifest's raw artifact)."""
    if image.is_dir():
        for candidate in _raw_candidates(image):
            if candidate.is_file():
                return candidate
        raise BadInput(f"{image}: no raw disk image in this folder; "
                       "run `lockgate image build` first")
    if not image.is_file():
        raise BadInput(f"{image}: no such image; run `lockgate image build` or give a disk file")
    return image


def _raw_candidates(folder: Path) -> list[Path]:
    """The manifest's raw artifact first, then ``disk.raw``, then a single ``*.raw``."""
    found: list[Path] = []
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            artifacts = json.loads(manifest.read_text()).get("artifacts", [])
        except ValueError as exc:
            raise BadInput(f"{manifest}: not JSON ({exc}); rebuild the image") from exc
        found += [folder / a["path"] for a in artifacts if a.get("format") == "raw"]
    found.append(folder / "disk.raw")
    raws = sorted(folder.glob("*.raw"))
    if len(raws) == 1:
        found.append(raws[0])
    return found


def image_format(disk: Path) -> str:
    with disk.open("rb") as fh:
        return "qcow2" if fh.read(4) == QCOW2_MAGIC else "raw"


def make_overlay(image: Path, workdir: Path, size_bytes: int | None = None) -> Path:
    """A qcow2 file in ``workdir`` backed by ``image`` (optionally bigger than it)."""
    overlay = workdir / "overlay.qcow2"
    argv: list[str | os.PathLike[str]] = [
        "qemu-img", "create", "-q", "-f", "qcow2", "-F", image_format(image),
        "-b", image.resolve(), overlay]
    if size_bytes is not None:
        argv.append(str(size_bytes))
    run(argv, capture=True)
    return overlay


def copy_ovmf_vars(workdir: Path, source: Path = OVMF_VARS) -> Path:
    if not source.is_file():
        raise BadInput(f"{source}: missing; install the ovmf package for --firmware uefi")
    target = workdir / "OVMF_VARS.fd"
    shutil.copyfile(source, target)
    return target
