"""Profile validation: every mistake ends in one sentence naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lockgate.errors import BadInput
from lockgate.image.build.profile import Firmware, MiB, load_profile, parse_size

REPO = Path(__file__).resolve().parents[2]
APPLIANCE = REPO / "image/profiles/appliance.yaml"


def write_profile(tmp_path: Path, changes: dict[str, Any], drop: tuple[str, ...] = ()) -> Path:
    data = yaml.safe_load(APPLIANCE.read_text())
    data["lockgate"]["source"] = str(REPO)
    data["lockgate"]["constraints"] = str(REPO / "constraints.txt")
    for key in drop:
        data.pop(key)
    for key, value in changes.items():
        target = data
        *parents, last = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error_for(tmp_path: Path, changes: dict[str, Any], drop: tuple[str, ...] = ()) -> str:
    with pytest.raises(BadInput) as info:
        load_profile(write_profile(tmp_path, changes, drop))
    return info.value.format_message()


def test_the_shipped_profile_loads() -> None:
    profile = load_profile(APPLIANCE)
    assert profile.release == "bookworm"
    assert profile.firmware is Firmware.HYBRID
    assert profile.lockgate.source == REPO
    assert profile.disk.size == 2048 * MiB and profile.disk.esp == 64 * MiB
    assert profile.disk.data == 2048 * MiB - 2 * MiB - MiB - 64 * MiB - 2 * 800 * MiB
    for driver in ("nvme", "ena", "virtio_blk", "virtio_scsi", "virtio_net", "hv_vmbus",
                   "hv_storvsc", "hv_netvsc", "gve"):
        assert driver in profile.initramfs_drivers
    assert "lockgate-expand-data.service" in profile.units


@pytest.mark.parametrize(("changes", "expected"), [
    ({"firmware": "coreboot"}, "profile: firmware: 'coreboot' is not one of bios | uefi | hybrid"),
    ({"release": "buster"}, "profile: release: 'buster' is not supported"),
    ({"mirror": "deb.debian.org"}, "profile: mirror: 'deb.debian.org' is not an http(s)://"),
    ({"disk.size": "2GB"}, "profile: disk.size: expected a size such as 64MiB or 2GiB, got '2GB'"),
    ({"disk.esp": "1000KiB"}, "profile: disk.esp: '1000KiB' is not a positive whole number of MiB"),
    ({"disk.esp": "16MiB"}, "profile: disk.esp: must be at least 33MiB"),
    ({"disk.size": "1GiB"}, "profile: disk.size: 1024 MiB leaves 0 MiB for data"),
    ({"disk.swap": "1GiB"}, "profile: disk.swap: unknown key"),
    ({"kernel_cmdline": "ro root=/dev/sda1"}, "profile: kernel_cmdline: must not set root="),
    ({"kernel_cmdline": "console=ttyS0"}, "profile: kernel_cmdline: must contain ro"),
    ({"packages": ["systemd-sysv", "python3", "initramfs-tools"]},
     "profile: packages: must include linux-image-cloud-amd64"),
    ({"packages": ["linux-image-cloud-amd64", "Bad Name"]},
     "profile: packages[1]: 'Bad Name' is not a Debian package name"),
    ({"packages": "python3"}, "profile: packages: expected a list, got str 'python3'"),
    ({"initramfs_drivers": ["nvme", "nvme"]}, "profile: initramfs_drivers: lists an entry twice"),
    ({"units.enable": ["lockgate"]}, "profile: units.enable[0]: 'lockgate' is not a systemd unit"),
    ({"units.disable": ["lockgate.service"]},
     "profile: units: lockgate.service is both enabled and disabled"),
    ({"hostname": "Lock_Gate"}, "profile: hostname: 'Lock_Gate' is not a valid host name"),
    ({"lockgate.source": "/nonexistent"}, "profile: lockgate.source: /nonexistent has no pyproject"),
    ({"colour": "blue"}, "profile: colour: unknown key; check the spelling"),
])
def test_mistakes_name_the_field(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    assert expected in error_for(tmp_path, changes)


def test_missing_name_is_reported(tmp_path: Path) -> None:
    assert error_for(tmp_path, {}, drop=("name",)) == "profile: name: missing; it is required"


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(BadInput, match=r"not valid YAML at line 2"):
        load_profile(bad)
    with pytest.raises(BadInput, match=r"cannot read it"):
        load_profile(tmp_path / "absent.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(BadInput, match=r"top level: expected a mapping"):
        load_profile(scalar)


def test_sizes() -> None:
    assert parse_size("x", "64MiB") == 64 * MiB
    assert parse_size("x", "2GiB") == 2048 * MiB
    assert parse_size("x", 1048576) == MiB
    with pytest.raises(BadInput):
        parse_size("x", True)


def test_rootfs_key_follows_only_package_fields(tmp_path: Path) -> None:
    base = load_profile(write_profile(tmp_path, {}))
    other_disk = load_profile(write_profile(tmp_path, {"disk.size": "3GiB", "hostname": "x1"}))
    more_packages = load_profile(write_profile(
        tmp_path, {"packages": [*base.packages, "curl"]}))
    assert base.rootfs_key() == other_disk.rootfs_key()
    assert base.rootfs_key() != more_packages.rootfs_key()
    assert base.digest() != other_disk.digest()
