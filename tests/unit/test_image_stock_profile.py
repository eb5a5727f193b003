"""The stock Debian profile the boot benchmark compares against: the appliance's own
packages, kernel command line, drivers, firmware and disk, with lockgate left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.errors import BadInput
from lockgate.image.build.profile import load_profile, parse_profile

PROFILES = Path(__file__).resolve().parents[2] / "image/profiles"


def test_stock_is_the_appliance_minus_lockgate() -> None:
    appliance = load_profile(PROFILES / "appliance.yaml")
    stock = load_profile(PROFILES / "stock.yaml")
    assert stock.stock and not appliance.stock
    assert stock.packages == appliance.packages
    assert stock.rootfs_key() == appliance.rootfs_key()  # one cached package layer for both
    for same in ("release", "mirror", "security_mirror", "variant", "firmware",
                 "kernel_cmdline", "initramfs_drivers", "disk"):
        assert getattr(stock, same) == getattr(appliance, same), same
    assert not [u for u in stock.units if u.startswith("lockgate")]
    assert stock.digest() != appliance.digest()


def test_stock_must_be_true_or_false(tmp_path: Path) -> None:
    data = {"name": "x", "packages": ["linux-image-cloud-amd64", "initramfs-tools",
                                      "systemd-sysv", "python3"], "stock": "yes"}
    with pytest.raises(BadInput, match="profile: stock: expected bool"):
        parse_profile(data, PROFILES / "x.yaml")
