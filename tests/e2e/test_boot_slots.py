"""Slot switch on the running appliance: Debian's grub-set-default picks the version in slot B.

Everything is prepared on a copy of the built image file, without mounting or
loop devices (tests/e2e/slot_tools.py): slot A's ext4 is copied into slot B
with a new filesystem UUID and a marker ``/etc/issue`` (debugfs), and slot B's
menu entry ``lockgate-<v2>`` goes on the ESP next to slot A's (mtools), written
by the same function the build and the upgrade tools use. A test-only unit in
slot A then runs ``grub-set-default lockgate-<v2>`` on the booted appliance
(Debian's own tool, writing the ESP's grubenv through /boot/grub) and reboots.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from slot_tools import MIB, STEP_PRELUDE, TOOLS, SlotDisk, copy_bytes, partitions, sh, step_unit

from lockgate.image.boot.overlay import resolve_image
from lockgate.image.boot.vm import booted

# The first test also builds the image (session fixture), so allow for a cold build.
pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(3600)]

V2 = "0.2.0-e2e"
GROW = 1024 * MIB


def test_grub_set_default_on_the_appliance_boots_the_other_slot_and_the_data_partition_grows(
        appliance_image: Path, console_log: Path, tmp_path: Path) -> None:
    for tool in TOOLS:
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.fail(f"{tool} is missing (e2fsprogs, mtools, grub-common, fdisk)")
    disk = tmp_path / "slots.raw"
    sh("cp", "--sparse=always", resolve_image(appliance_image), disk)
    slots = SlotDisk(disk, tmp_path)
    v1, _ = slots.slot_a_entry()
    marker = f"lockgate {V2} booted from root slot b"
    slot_b = slots.make_slot_b(V2, {"/etc/issue": (f"{marker} \\l\n\n", 0o644)})
    step = STEP_PRELUDE + f"""
if [ "$stage" = 0 ]; then
    next 1
    grub-set-default lockgate-{V2}
    echo "e2e-step: grub-set-default done: $(grub-editenv list | tr '\\n' ' ')"
    systemctl --no-block reboot
fi
"""
    slots.enable_unit(slots.slot_a_target(), "lockgate-e2e-step.service",
                      step_unit("e2e: grub-set-default to slot B, then reboot"),
                      {"/usr/local/sbin/lockgate-e2e-step": (step, 0o755)})
    assert slots.grubenv() == f"saved_entry=lockgate-{v1}\n"
    # The same boot also proves z-expand-logs-partition: a disk 1 GiB bigger than the image
    # (as a cloud disk would be) ends up with the data partition and its ext4 filling it.
    data_before = partitions(disk)["data"]
    grown = disk.stat().st_size + GROW
    with disk.open("r+b") as fh:
        fh.truncate(grown)
    with booted(disk, cloud="nocloud", firmware="bios", console_log=console_log, persist=True,
                user_data=b"accept_license=y", powerdown_timeout=20) as vm:
        vm.wait_for(f"Loading lockgate {v1} from root slot a", 180, what="GRUB loading slot A")
        done = vm.wait_for(rf"e2e-step: grub-set-default done: saved_entry=lockgate-{V2}", 400,
                           what="grub-set-default run on the appliance")
        at = done.end()
        vm.wait_for(f"Loading lockgate {V2} from root slot b", 180, start=at,
                    what="GRUB loading slot B after the reboot")
        vm.wait_for(rf"Command line:.*root=PARTUUID={slot_b.partuuid}.*lockgate.entry="
                    rf"lockgate-{V2} lockgate.slot=b lockgate.trial=0", 120, start=at,
                    what="the kernel command line naming slot B")
        vm.wait_for(marker, 300, start=at, what="slot B's /etc/issue on the serial getty")
        vm.wait_for(f"lockgate-boot: running lockgate {V2} \\(slot b\\), the default", 120,
                    start=at, what="the boot check naming the running version")
    assert slots.grubenv() == f"saved_entry=lockgate-{V2}\n"
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
