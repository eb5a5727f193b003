"""The timezone step on a writable tree and on the read-only-root layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lockgate.firstboot.apply.base import ApplyContext, Outcome
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.apply.timezone import apply_timezone, set_timezone
from lockgate.firstboot.settings import Settings
from lockgate.paths import StatePaths


def test_writable_root_gets_etc_files_and_the_data_partition_record(tmp_path: Path) -> None:
    set_timezone(tmp_path, "Europe/London")
    assert (tmp_path / "etc/timezone").read_text() == "Europe/London\n"
    assert os.readlink(tmp_path / "etc/localtime") == "/usr/share/zoneinfo/Europe/London"
    config = StatePaths.under_root(tmp_path).config
    assert (config / "timezone").read_text() == "Europe/London\n"
    assert os.readlink(config / "localtime") == "/usr/share/zoneinfo/Europe/London"
    set_timezone(tmp_path, "Asia/Tokyo")  # again: replaced, not stacked
    assert os.readlink(tmp_path / "etc/localtime") == "/usr/share/zoneinfo/Asia/Tokyo"
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["localtime", "timezone"]


def test_read_only_root_layout_changes_only_the_data_partition(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    os.symlink("/var/lib/lockgate/config/localtime", etc / "localtime")
    os.symlink("/var/lib/lockgate/config/timezone", etc / "timezone")
    etc.chmod(0o555)  # as on the appliance: /etc cannot change
    try:
        set_timezone(tmp_path, "America/New_York")
    finally:
        etc.chmod(0o755)
    assert os.readlink(etc / "localtime") == "/var/lib/lockgate/config/localtime"
    config = StatePaths.under_root(tmp_path).config
    assert os.readlink(config / "localtime") == "/usr/share/zoneinfo/America/New_York"
    assert (config / "timezone").read_text() == "America/New_York\n"


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "/etc/passwd", "../../etc/shadow", ""])
def test_invalid_names_are_refused_before_anything_changes(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="timezone"):
        set_timezone(tmp_path, bad)
    assert not (tmp_path / "etc").exists()


def test_apply_uses_the_default_time_zone(tmp_path: Path) -> None:
    result = apply_timezone(ApplyContext(tmp_path, Console(str(tmp_path / "c"))), Settings())
    assert result.result is Outcome.OK
    assert (tmp_path / "etc/timezone").read_text() == "America/Los_Angeles\n"
