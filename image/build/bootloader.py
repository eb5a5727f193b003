"""GRUB images and configuration for the ESP (both firmwares share one ESP)."""

from __future__ import annotations

from pathlib import Path

from lockgate.image import gpt, grub
from lockgate.image.build.context import Context
from lockgate.image.build.templates import render

# No visible menu wait (issue 12 measured 3 s lost there); Esc or Shift shows it.
MENU_TIMEOUT = 0
MENU_STYLE = "hidden"


def slot_config(context: Context, slot: str, fs_uuid: str, partuuid: str) -> str:
    return grub.slot_entry(slot, context.version, fs_uuid, partuuid,
                           context.profile.kernel_cmdline)


def make_bootloader(context: Context) -> dict[str, Path]:
    """Build GRUB images and configs into work/esp; return the ESP's file map."""
    esp = context.work_dir / "esp"
    esp.mkdir(parents=True, exist_ok=True)
    early = context.work_dir / "grub-early.cfg"
    early.write_text(grub.early_config(context.fat_serial()))
    files: dict[str, Path] = {}
    firmware = context.profile.firmware
    if firmware.bios:
        grub.make_image("i386-pc", context.work_dir / "core.img", early, context.env)
    if firmware.uefi:
        efi = esp / "BOOTX64.EFI"
        grub.make_image("x86_64-efi", efi, early, context.env)
        files["EFI/BOOT/BOOTX64.EFI"] = efi
    (esp / "grub.cfg").write_text(render("grub.cfg.j2", version=context.version,
                                         default_id=context.entry_id, timeout=MENU_TIMEOUT,
                                         timeout_style=MENU_STYLE))
    files["grub/grub.cfg"] = esp / "grub.cfg"
    (esp / "slot-a.cfg").write_text(slot_config(
        context, "a", str(context.derived_uuid("fs-root-a")),
        str(context.derived_uuid(f"part-{gpt.ROOT_A}"))))
    files["grub/slot-a.cfg"] = esp / "slot-a.cfg"
    (esp / "grubenv").write_bytes(grub.grubenv({"saved_entry": context.entry_id}))
    files["grub/grubenv"] = esp / "grubenv"
    return files


def install_bios_boot(context: Context, layout: gpt.Layout) -> None:
    if not context.profile.firmware.bios:
        return
    part = layout.by_name(gpt.BIOS_BOOT)
    grub.bios_setup(context.disk_image, grub.GRUB_LIB / "i386-pc/boot.img",
                    context.work_dir / "core.img", part.start_lba, part.size)
