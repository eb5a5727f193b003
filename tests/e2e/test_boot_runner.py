"""The QEMU runner on a disk with nothing to boot: firmware output, watchdog, clean-up.

Needs QEMU but not the appliance image (~10 s under TCG).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest

from lockgate.image.boot import BootError, booted

pytestmark = pytest.mark.qemu


def _work_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("lockgate-boot-*"))


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_a_disk_that_does_not_boot_ends_in_a_quiet_console_error_and_is_cleaned_up(
        tmp_path: Path, firmware: str) -> None:
    disk = tmp_path / "blank.raw"
    with disk.open("wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    log = tmp_path / "console.log"
    before = _work_dirs()
    with pytest.raises(BootError, match=r"no new console output for 8 s.*console\.log"), \
            booted(disk, cloud="ec2", firmware=firmware, accel="tcg", console_log=log,
                   quiet_timeout=8) as vm:
        firmware_banner = "SeaBIOS" if firmware == "bios" else "BdsDxe"
        vm.wait_for(firmware_banner, 60, what="the firmware banner")
        if firmware == "bios":  # SMBIOS reached the firmware: EC2's system UUID
            vm.wait_for("Machine UUID ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8", 30)
        vm.wait_firstboot(120)
    assert vm.process.poll() is not None  # QEMU is gone
    assert _work_dirs() <= before  # overlay and work folder removed
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == digest  # image untouched
    assert log.stat().st_size > 0
    # The console may show a generated admin password: the log is the owner's only.
    assert log.stat().st_mode & 0o777 == 0o600
