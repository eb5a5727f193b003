"""Offline slot switch: a second version in root slot B, chosen with grub-editenv, boots.

Everything is done on a copy of the built image file, without mounting or
loop devices: slot A's ext4 is copied, given a new filesystem UUID and a
marker ``/etc/issue`` (debugfs), and written into slot B's offset; the slot B
menu entry ``lockgate-<v2>`` goes on the ESP next to slot A's (mtools), and
``grub-editenv`` on a copy of the ESP's grubenv makes it the default.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from lockgate.image.boot.overlay import resolve_image
from lockgate.image.boot.vm import booted
from lockgate.image.grub import slot_entry

# The first test also builds the image (session fixture), so allow for a cold build.
pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(3600)]

V2 = "0.2.0-e2e"
MIB = 1024 * 1024
GROW = 1024 * MIB
MTOOLS = {"MTOOLS_SKIP_CHECK": "1"}


def sh(*argv: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    full_env = None
    if env:
        import os

        full_env = {**os.environ, **env}
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=full_env,
                          timeout=timeout)
    assert proc.returncode == 0, f"{argv[0]} failed: {proc.stderr.strip()}"
    return proc.stdout


def partitions(disk: Path) -> dict[str, dict[str, object]]:
    table = json.loads(sh("sfdisk", "--json", disk))["partitiontable"]
    return {str(p["name"]): p for p in table["partitions"]}


def copy_bytes(src: Path, src_offset: int, dst: Path, dst_offset: int, length: int) -> None:
    sh("dd", f"if={src}", f"of={dst}", "bs=4M", "iflag=skip_bytes,count_bytes",
       "oflag=seek_bytes", f"skip={src_offset}", f"seek={dst_offset}", f"count={length}",
       "conv=notrunc,sparse", "status=none")


def install_slot_b(disk: Path, work: Path) -> tuple[str, str]:
    """Put version V2 into slot B and select it; returns (B's PARTUUID, issue marker)."""
    parts = partitions(disk)
    a, b, esp = parts["root-a"], parts["root-b"], parts["ESP"]
    assert a["size"] == b["size"]
    size = int(str(a["size"])) * 512
    fs = work / "root-b.ext4"
    copy_bytes(disk, int(str(a["start"])) * 512, fs, 0, size)
    new_uuid = str(uuid.uuid4())
    sh("e2fsck", "-fy", fs)
    sh("tune2fs", "-U", new_uuid, fs)
    marker = f"lockgate {V2} booted from root slot b"
    issue = work / "issue"
    issue.write_text(f"{marker} \\l\n\n")
    sh("debugfs", "-w", "-R", "rm /etc/issue", fs)
    sh("debugfs", "-w", "-R", f"write {issue} /etc/issue", fs)
    copy_bytes(fs, 0, disk, int(str(b["start"])) * 512, size)

    esp_ref = f"{disk}@@{int(str(esp['start'])) * 512}"
    slot_a = sh("mtype", "-i", esp_ref, "::/grub/slot-a.cfg", env=MTOOLS)
    b_fs_uuid = sh("blkid", "-o", "value", "-s", "UUID", work / "root-b.ext4")  # sanity: new UUID
    assert b_fs_uuid.strip() == new_uuid
    # The entry is written by the same function the build and the upgrade tools use.
    linux = re.search(r"linux /boot/vmlinuz root=PARTUUID=\S+ ?(.*)", slot_a)
    assert linux, slot_a
    slot_b = slot_entry("b", V2, new_uuid, str(b["uuid"]).lower(), linux[1].strip())
    assert f'--id "lockgate-{V2}"' in slot_b
    (work / "slot-b.cfg").write_text(slot_b)
    sh("mcopy", "-o", "-i", esp_ref, work / "slot-b.cfg", "::/grub/slot-b.cfg", env=MTOOLS)
    grubenv = work / "grubenv"
    sh("mcopy", "-o", "-i", esp_ref, "::/grub/grubenv", grubenv, env=MTOOLS)
    sh("grub-editenv", grubenv, "set", f"saved_entry=lockgate-{V2}")
    assert grubenv.stat().st_size == 1024
    sh("mcopy", "-o", "-i", esp_ref, grubenv, "::/grub/grubenv", env=MTOOLS)
    return str(b["uuid"]).lower(), marker


def test_offline_slot_switch_boots_the_other_slot_and_the_data_partition_grows(appliance_image: Path, console_log: Path,
                                                  tmp_path: Path) -> None:
    for tool in ("sfdisk", "e2fsck", "tune2fs", "debugfs", "mtype", "mcopy", "grub-editenv",
                 "blkid"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.fail(f"{tool} is missing (e2fsprogs, mtools, grub-common, fdisk)")
    disk = tmp_path / "slots.raw"
    sh("cp", "--sparse=always", resolve_image(appliance_image), disk)
    partuuid_b, marker = install_slot_b(disk, tmp_path)
    # The same boot also proves z-expand-logs-partition: a disk 1 GiB bigger than the image
    # (as a cloud disk would be) ends up with the data partition and its ext4 filling it.
    data_before = partitions(disk)["data"]
    grown = disk.stat().st_size + GROW
    with disk.open("r+b") as fh:
        fh.truncate(grown)
    with booted(disk, cloud="nocloud", firmware="bios", console_log=console_log, persist=True,
                user_data=b"accept_license=y", powerdown_timeout=20) as vm:
        vm.wait_for(f"Loading lockgate {V2} from root slot b", 180, what="GRUB loading slot B")
        vm.wait_for(rf"Command line:.*root=PARTUUID={partuuid_b}", 120,
                    what="the kernel command line naming slot B")
        vm.wait_firstboot(300)
        vm.wait_for(marker, 120, what="slot B's /etc/issue on the serial getty")
        assert "from root slot a" not in vm.console_text
    assert_data_partition_grew(disk, data_before, grown, tmp_path)


def assert_data_partition_grew(disk: Path, before: dict[str, object], disk_size: int,
                               work: Path) -> None:
    after = partitions(disk)["data"]
    assert after["start"] == before["start"] and after["uuid"] == before["uuid"]
    end = (int(str(after["start"])) + int(str(after["size"]))) * 512
    assert disk_size - 2 * MIB <= end <= disk_size - 33 * 512, (before, after)
    # The filesystem was resized online; replay its journal on a copy before reading it.
    part = work / "data.ext4"
    size = int(str(after["size"])) * 512
    copy_bytes(disk, int(str(after["start"])) * 512, part, 0, size)
    subprocess.run(["e2fsck", "-fy", str(part)], capture_output=True, timeout=300)
    info = sh("dumpe2fs", "-h", part)
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fs_bytes = int(fields["Block count"]) * int(fields["Block size"])
    assert fs_bytes >= size - 4 * MIB, f"ext4 has {fs_bytes} bytes of a {size}-byte partition"
