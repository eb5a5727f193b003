"""GRUB: the boot sector patch at byte level, grubenv, grub.cfg and slot entries."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest

from lockgate.image import grub
from lockgate.image.build.templates import render


def synthetic_mbr() -> bytes:
    mbr = bytearray(512)
    mbr[446:462] = bytes([0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0xFF, 0xFF, 0x3F, 0])
    mbr[440:444] = b"\x12\x34\x56\x78"  # disk signature
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def synthetic_boot_img() -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(512))


def test_boot_sector_keeps_the_table_and_points_at_core() -> None:
    mbr, boot = synthetic_mbr(), synthetic_boot_img()
    sector = grub.patch_boot_sector(mbr, boot, core_lba=2048)
    assert len(sector) == 512
    assert sector[440:512] == mbr[440:512]  # signature, protective table, 0x55AA
    assert struct.unpack_from("<Q", sector, 0x5C)[0] == 2048
    assert sector[0x66:0x68] == b"\x90\x90"
    changed = {0x5C + i for i in range(8)} | {0x66, 0x67}
    for offset in range(440):
        if offset not in changed:
            assert sector[offset] == boot[offset], offset


def test_boot_sector_refuses_an_unpartitioned_disk() -> None:
    with pytest.raises(ValueError, match="no MBR signature"):
        grub.patch_boot_sector(bytes(512), synthetic_boot_img(), 2048)
    with pytest.raises(ValueError, match="one 512-byte sector"):
        grub.patch_boot_sector(synthetic_mbr(), b"\0" * 100, 2048)


def test_core_image_blocklist_points_after_its_first_sector() -> None:
    core = bytes(range(256)) * 8  # 2048 bytes: 4 sectors
    patched = grub.patch_core_image(core, 2048)
    assert struct.unpack_from("<Q", patched, 500)[0] == 2049
    assert patched[:500] == core[:500] and patched[508:] == core[508:]
    with pytest.raises(ValueError):
        grub.patch_core_image(b"\0" * 512, 2048)


def test_bios_setup_writes_both_pieces(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(synthetic_mbr() + bytes(4 * 1024 * 1024))
    boot_img, core_img = tmp_path / "boot.img", tmp_path / "core.img"
    boot_img.write_bytes(synthetic_boot_img())
    core_img.write_bytes(bytes([0xAB]) * 1536)
    grub.bios_setup(disk, boot_img, core_img, core_lba=2048, room=1024 * 1024)
    data = disk.read_bytes()
    assert data[:440] != synthetic_boot_img()[:440]  # patched copy, not verbatim
    assert struct.unpack_from("<Q", data, 0x5C)[0] == 2048
    core = data[2048 * 512: 2048 * 512 + 1536]
    assert struct.unpack_from("<Q", core, 500)[0] == 2049
    assert core[512:] == bytes([0xAB]) * 1024
    with pytest.raises(ValueError, match="BIOS-boot partition holds 1024"):
        grub.bios_setup(disk, boot_img, core_img, core_lba=2048, room=1024)


@pytest.mark.skipif(not Path("/usr/lib/grub/i386-pc/boot.img").exists(), reason="grub-pc-bin missing")
def test_real_grub_images(tmp_path: Path) -> None:
    """grub-mkimage with our early config: a core.img that fits, and an EFI binary."""
    config = tmp_path / "early.cfg"
    config.write_text(grub.early_config("B95E5133"))
    assert "--fs-uuid --set=root B95E-5133" in config.read_text()
    core, efi = tmp_path / "core.img", tmp_path / "BOOTX64.EFI"
    grub.make_image("i386-pc", core, config, {})
    grub.make_image("x86_64-efi", efi, config, {})
    assert 512 * 2 < core.stat().st_size < 1024 * 1024
    assert efi.read_bytes()[:2] == b"MZ"
    # mkimage stored the sector count of the rest of core.img in the blocklist.
    length = struct.unpack_from("<H", core.read_bytes(), 508)[0]
    assert length == -(-core.stat().st_size // 512) - 1


def test_grubenv_is_exactly_1024_bytes_and_readable(tmp_path: Path) -> None:
    env = grub.grubenv({"saved_entry": "lockgate-1.2.3"})
    assert len(env) == 1024
    assert env.startswith(b"# GRUB Environment Block\nsaved_entry=lockgate-1.2.3\n#")
    path = tmp_path / "grubenv"
    path.write_bytes(env)
    # Debian's own tool reads it back (what grub-set-default uses on the appliance).
    listed = subprocess.run(["grub-editenv", str(path), "list"], capture_output=True,
                            text=True, check=True).stdout
    assert listed == "saved_entry=lockgate-1.2.3\n"
    with pytest.raises(ValueError):
        grub.grubenv({"x": "y" * 1100})


def test_grub_cfg_one_shot_trial_logic() -> None:
    text = render("grub.cfg.j2", version="1.0", default_id="lockgate-1.0", timeout=0,
                  timeout_style="hidden")
    lines = [line.strip() for line in text.splitlines()]
    assert "load_env" in lines
    assert lines.index("load_env") < lines.index('if [ -n "${next_entry}" ]; then')
    # The trial entry is cleared *before* it boots, so a failed trial falls back.
    trial = lines.index('set default="${next_entry}"')
    assert lines[trial + 1] == "set next_entry="
    assert lines[trial + 2] == "save_env next_entry"
    assert lines[trial + 3] == "set lockgate_trial=1"
    assert lines.index("set lockgate_trial=0") < trial
    assert lines.index("export lockgate_trial") > trial
    assert 'set default="${saved_entry}"' in lines
    assert 'set default="lockgate-1.0"' in lines
    assert "terminal_output serial console" in lines
    assert 'source "${prefix}/slot-${slot}.cfg"' in lines
    # No visible menu wait; a held Shift still opens the menu.
    assert "set timeout=0" in lines and "set timeout_style=hidden" in lines
    assert lines[lines.index("if keystatus --shift; then") + 1] == "set timeout=-1"
    # GRUB 2.06 fallback: an entry NUMBER (ids are ignored before 2.12).
    assert 'set fallback="${lockgate_index}"' in lines
    assert not any(line.startswith("set fallback=\"lockgate") for line in lines)


def test_early_images_carry_the_keystatus_module() -> None:
    assert "keystatus" in grub.BIOS_MODULES and "keystatus" in grub.EFI_MODULES


def test_slot_entry_boots_its_own_kernel_from_its_partition() -> None:
    text = grub.slot_entry("a", "2.0~rc1", "0f0e-uuid", "1234-part",
                           "ro console=tty0 console=ttyS0,115200")
    assert re.search(r'menuentry "lockgate 2.0~rc1 \(slot a\)" --id "lockgate-2.0~rc1" \{', text)
    assert "search --no-floppy --fs-uuid --set=root 0f0e-uuid" in text
    assert ("linux /boot/vmlinuz root=PARTUUID=1234-part ro console=tty0 console=ttyS0,115200 "
            "lockgate.entry=lockgate-2.0~rc1 lockgate.slot=a lockgate.trial=${lockgate_trial}\n"
            in text)
    assert 'set lockgate_slot_id="lockgate-2.0~rc1"' in text
    assert "initrd /boot/initrd.img" in text
    assert text.rstrip().endswith("}")
    with pytest.raises(ValueError, match="cmdline"):
        grub.slot_entry("b", "1.0", "u", "p", 'ro init="/bin/sh"')
    with pytest.raises(ValueError, match="version"):
        grub.slot_entry("b", "1.0 x", "u", "p", "ro")
    with pytest.raises(ValueError, match="slot"):
        grub.slot_entry("c", "1.0", "u", "p", "ro")


def test_grub_accepts_the_generated_config(tmp_path: Path) -> None:
    """grub-script-check parses grub.cfg and a slot entry as GRUB itself would."""
    if not Path("/usr/bin/grub-script-check").exists():
        pytest.skip("grub-script-check missing")
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(render("grub.cfg.j2", version="1.0", default_id="lockgate-1.0", timeout=0,
                   timeout_style="hidden")
                   + grub.slot_entry("a", "1.0", "u-1", "p-1", "ro console=ttyS0,115200")
                   + grub.slot_entry("b", "2.0", "u-2", "p-2", "ro console=ttyS0,115200"))
    subprocess.run(["grub-script-check", str(cfg)], check=True)
