"""GRUB for both firmwares, without grub-install and without mounting anything.

``grub-bios-setup`` refuses to work on an image file (it probes the
filesystem holding its ``-d`` directory), and what it does for a GPT disk
with a BIOS-boot partition is small, so :func:`bios_setup` does it in Python:

* copy ``boot.img[0:440]`` over the MBR, keeping the protective MBR's
  partition table and signature;
* store core.img's first LBA (u64, little-endian) at boot.img offset 0x5c;
* NOP the "is this a floppy/hard disk" drive check at 0x66, as
  grub-bios-setup does for hard disks;
* point core.img's first blocklist (u64 at offset 500 of its first sector)
  at core LBA + 1: the rest of core.img follows the first sector;
* write core.img at its LBA (the start of the BIOS-boot partition).
"""

from __future__ import annotations

import struct
from pathlib import Path

from lockgate.proc import run

# The slot entries and the environment block are written on the appliance too
# (upgrades), which has no lockgate.image: one implementation, in the runtime.
from lockgate.runtime.system.boot import GRUB_UNSAFE, encode_env, slot_entry

__all__ = ["GRUB_UNSAFE", "bios_setup", "early_config", "grubenv", "make_image", "slot_entry"]

SECTOR = 512
BOOT_CODE_END = 440  # after this: disk signature, partition table, 0x55AA
KERNEL_SECTOR_OFFSET = 0x5C
DRIVE_CHECK_OFFSET = 0x66
BLOCKLIST_START_OFFSET = SECTOR - 12  # struct { u64 start; u16 len; u16 segment; }

COMMON_MODULES = ("part_gpt", "part_msdos", "fat", "ext2", "normal", "configfile", "search",
                  "search_fs_uuid", "search_fs_file", "search_label", "linux", "echo", "test",
                  "loadenv", "serial", "terminal", "cat", "ls", "halt", "reboot", "sleep",
                  "gzio", "true", "minicmd", "regexp", "boot", "keystatus")
BIOS_MODULES = (*COMMON_MODULES, "biosdisk")
EFI_MODULES = (*COMMON_MODULES, "efi_gop", "efi_uga", "video", "video_fb", "all_video")

GRUB_LIB = Path("/usr/lib/grub")


def early_config(esp_serial: str) -> str:
    """The config built into the GRUB image: find the ESP, then read grub/grub.cfg."""
    fs_uuid = f"{esp_serial[:4]}-{esp_serial[4:]}"
    return (f"search --no-floppy --fs-uuid --set=root {fs_uuid}\n"
            "set prefix=($root)/grub\n")


def make_image(platform: str, output: Path, config: Path, env: dict[str, str]) -> None:
    """``grub-mkimage`` for ``i386-pc`` (core.img) or ``x86_64-efi`` (BOOTX64.EFI)."""
    modules = BIOS_MODULES if platform == "i386-pc" else EFI_MODULES
    run(["grub-mkimage", "-O", platform, "-d", GRUB_LIB / platform, "-o", output,
         "-c", config, "-p", "/grub", *modules], env=env)


def patch_boot_sector(mbr: bytes, boot_img: bytes, core_lba: int) -> bytes:
    """The new first sector: boot.img's code, the disk's own table and signature."""
    if len(mbr) != SECTOR or len(boot_img) != SECTOR:
        raise ValueError("the MBR and boot.img must both be one 512-byte sector")
    if mbr[510:512] != b"\x55\xaa":
        raise ValueError("the disk has no MBR signature; partition it first")
    sector = bytearray(mbr)
    sector[:BOOT_CODE_END] = boot_img[:BOOT_CODE_END]
    struct.pack_into("<Q", sector, KERNEL_SECTOR_OFFSET, core_lba)
    sector[DRIVE_CHECK_OFFSET:DRIVE_CHECK_OFFSET + 2] = b"\x90\x90"
    return bytes(sector)


def patch_core_image(core_img: bytes, core_lba: int) -> bytes:
    """core.img with its first blocklist pointing just after its first sector."""
    if len(core_img) < 2 * SECTOR:
        raise ValueError("core.img is too small to be a GRUB core image")
    core = bytearray(core_img)
    struct.pack_into("<Q", core, BLOCKLIST_START_OFFSET, core_lba + 1)
    return bytes(core)


def bios_setup(disk: Path, boot_img: Path, core_img: Path, core_lba: int,
               room: int) -> None:
    """Install boot.img and core.img on ``disk``; ``room`` is the BIOS-boot partition size."""
    core = core_img.read_bytes()
    if len(core) > room:
        raise ValueError(f"core.img is {len(core)} bytes; the BIOS-boot partition holds {room}")
    with disk.open("r+b") as f:
        mbr = f.read(SECTOR)
        f.seek(0)
        f.write(patch_boot_sector(mbr, boot_img.read_bytes(), core_lba))
        f.seek(core_lba * SECTOR)
        f.write(patch_core_image(core, core_lba))


def grubenv(values: dict[str, str]) -> bytes:
    """A GRUB environment block: exactly 1024 bytes, padded with '#'."""
    return encode_env(values)
