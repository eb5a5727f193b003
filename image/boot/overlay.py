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
from lockgate.image.grub import GRUB_UNSAFE
from lockgate.proc import output, run

QCOW2_MAGIC = b"QFI\xfb"
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}  # partition images have no real disk geometry


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


ESP_NAME = "ESP"  # the ESP's GPT partition name (lockgate.image.gpt)


def append_kernel_cmdline(image: Path, overlay: Path, workdir: Path, extra: str) -> None:
    """Append ``extra`` to every slot's ``linux`` line, in the overlay only.

    ``grub.cfg`` reads nothing that could carry extra kernel arguments, so the
    ESP is copied out of the raw image, each ``grub/slot-*.cfg`` is edited with
    mtools, and the edited ESP is written into the qcow2 overlay with
    ``qemu-io``: the image itself stays as built. Used to boot the same image
    with some units masked (a bare-boot baseline).
    """
    words = extra.split()
    if not words or any(c in GRUB_UNSAFE for c in extra):
        raise BadInput(f"extra kernel command line {extra!r}: empty, or has characters GRUB "
                       "would misread")
    if image_format(image) != "raw":
        raise BadInput(f"{image}: an extra kernel command line needs a raw image")
    start, size = _esp_extent(image)
    esp = workdir / "esp-cmdline.img"
    with image.open("rb") as src, esp.open("wb") as dst:
        src.seek(start)
        dst.write(src.read(size))
    names = [line.rsplit("/", 1)[-1] for line in
             output(["mdir", "-b", "-i", esp, "::/grub"], env=MTOOLS_ENV).splitlines()]
    slots = [n for n in names if n.startswith("slot-") and n.endswith(".cfg")]
    if not slots:
        raise BadInput(f"{image}: no grub/slot-*.cfg on the ESP; not a lockgate image?")
    for name in slots:
        text = output(["mtype", "-i", esp, f"::/grub/{name}"], env=MTOOLS_ENV)
        edited = workdir / name
        edited.write_text(with_extra_cmdline(text, " ".join(words)))
        run(["mcopy", "-o", "-i", esp, edited, f"::/grub/{name}"], env=MTOOLS_ENV, capture=True)
    run(["qemu-io", "-f", "qcow2", "-c", f"write -q -s {esp} {start} {size}", overlay],
        capture=True)


def with_extra_cmdline(slot_cfg: str, extra: str) -> str:
    """``slot_cfg`` with ``extra`` appended to each ``linux`` line."""
    lines = slot_cfg.splitlines()
    out = [f"{line} {extra}" if line.lstrip().startswith("linux ") else line for line in lines]
    if out == lines:
        raise BadInput("slot config has no linux line to append the kernel command line to")
    return "\n".join(out) + "\n"


def _esp_extent(image: Path) -> tuple[int, int]:
    """(offset, length) in bytes of the partition named ESP, from the GPT."""
    table = json.loads(output(["sfdisk", "--json", image]))["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    for part in table.get("partitions", []):
        if part.get("name") == ESP_NAME:
            return int(part["start"]) * sector, int(part["size"]) * sector
    raise BadInput(f"{image}: no GPT partition named {ESP_NAME}")
