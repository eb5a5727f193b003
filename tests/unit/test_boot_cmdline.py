"""An extra kernel command line for one boot: written into the overlay's ESP, never the image.

Real tools on a small real disk: sfdisk (GPT with a partition named ESP),
mkfs.fat + mtools (the slot config), qemu-img/qemu-io (the overlay).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lockgate.errors import BadInput
from lockgate.image.boot.overlay import (
    MTOOLS_ENV,
    append_kernel_cmdline,
    make_overlay,
    with_extra_cmdline,
)
from lockgate.image.grub import slot_entry
from lockgate.proc import output, run

MIB = 1024 * 1024
ESP_START = 2 * MIB
SLOT = slot_entry("a", "1.0", "0f4f35f2-959f-5e9d-9f1c-76a3593fa0e4",
                  "f7b2e614-66e9-5ace-ba75-201a16feaf19", "ro console=ttyS0,115200 panic=10")


def _disk(tmp_path: Path, esp_name: str = "ESP") -> Path:
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as fh:
        fh.truncate(40 * MIB)
    run(["sfdisk", "-q", disk], input=f"label: gpt\nstart=2MiB, size=33MiB, "
        f'type=U, name="{esp_name}"\n', capture=True)
    esp = tmp_path / "esp.img"
    with esp.open("wb") as fh:
        fh.truncate(33 * MIB)
    run(["mkfs.fat", "-F", "32", esp], capture=True)
    slot = tmp_path / "slot-a.cfg"
    slot.write_text(SLOT)
    run(["mmd", "-i", esp, "::/grub"], env=MTOOLS_ENV, capture=True)
    run(["mcopy", "-i", esp, slot, "::/grub/slot-a.cfg"], env=MTOOLS_ENV, capture=True)
    with disk.open("r+b") as fh:
        fh.seek(ESP_START)
        fh.write(esp.read_bytes())
    return disk


def _slot_in(disk: Path, tmp_path: Path) -> str:
    raw = tmp_path / "back.raw"
    run(["qemu-img", "convert", "-O", "raw", disk, raw], capture=True)
    return output(["mtype", "-i", f"{raw}@@{ESP_START}", "::/grub/slot-a.cfg"], env=MTOOLS_ENV)


def test_the_overlay_boots_with_the_extra_arguments_and_the_image_is_untouched(
        tmp_path: Path) -> None:
    disk = _disk(tmp_path)
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    work = tmp_path / "work"
    work.mkdir()
    overlay = make_overlay(disk, work)
    append_kernel_cmdline(disk, overlay, work, "systemd.mask=a.service  systemd.mask=b.service")
    slot = _slot_in(overlay, tmp_path)
    linux = [line.strip() for line in slot.splitlines() if line.strip().startswith("linux ")]
    assert linux == ["linux /boot/vmlinuz root=PARTUUID=f7b2e614-66e9-5ace-ba75-201a16feaf19 "
                     "ro console=ttyS0,115200 panic=10 lockgate.entry=lockgate-1.0 lockgate.slot=a "
                     "lockgate.trial=${lockgate_trial} systemd.mask=a.service "
                     "systemd.mask=b.service"]
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before
    assert "systemd.mask" not in _slot_in(disk, tmp_path)


@pytest.mark.parametrize("extra", ["", "  ", "a=$b", "x; reboot", 'q="1"', "a\nb"])
def test_arguments_grub_would_misread_are_refused(tmp_path: Path, extra: str) -> None:
    disk = _disk(tmp_path)
    with pytest.raises(BadInput, match="extra kernel command line"):
        append_kernel_cmdline(disk, make_overlay(disk, tmp_path), tmp_path, extra)


def test_a_disk_without_an_esp_is_refused(tmp_path: Path) -> None:
    disk = _disk(tmp_path, esp_name="other")
    with pytest.raises(BadInput, match="no GPT partition named ESP"):
        append_kernel_cmdline(disk, make_overlay(disk, tmp_path), tmp_path, "quiet")


def test_a_slot_file_without_a_linux_line_is_refused() -> None:
    assert with_extra_cmdline("  linux /vmlinuz ro\n", "quiet") == "  linux /vmlinuz ro quiet\n"
    with pytest.raises(BadInput, match="no linux line"):
        with_extra_cmdline("menuentry x {\n}\n", "quiet")


def test_booted_refuses_an_extra_cmdline_on_the_image_itself(tmp_path: Path) -> None:
    from lockgate.image.boot import booted

    disk = _disk(tmp_path)
    with pytest.raises(BadInput, match="cannot be combined with persist"), \
            booted(disk, persist=True, kernel_cmdline_extra="quiet"):
        pass  # pragma: no cover - never reached: refused before QEMU starts
