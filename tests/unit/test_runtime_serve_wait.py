"""``lockgate runtime serve --wait-for``: the runtime starts beside first boot, loads its
code, and reads nothing until first boot's record of this boot exists."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from lockgate.runtime.serve import firstboot_masked, wait_for_inputs


@pytest.fixture
def machine(tmp_path: Path) -> tuple[Path, Path]:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/boot/vmlinuz ro console=ttyS0\n")
    units = tmp_path / "units"
    units.mkdir()
    return cmdline, units


def test_it_returns_once_first_boot_writes_its_record(tmp_path: Path,
                                                      machine: tuple[Path, Path]) -> None:
    record = tmp_path / "run/firstboot.json"
    record.parent.mkdir()
    timer = threading.Timer(0.4, record.write_text, args=("{}",))
    began = time.monotonic()
    timer.start()
    try:
        assert wait_for_inputs(record, 10.0, ("colorsys",), *machine, gone=lambda: False)
    finally:
        timer.cancel()
    assert 0.35 <= time.monotonic() - began < 5.0
    assert "colorsys" in sys.modules  # loaded while waiting


def test_a_record_already_there_means_no_wait(tmp_path: Path,
                                             machine: tuple[Path, Path]) -> None:
    record = tmp_path / "firstboot.json"
    record.write_text("{}")
    began = time.monotonic()
    assert wait_for_inputs(record, 10.0, (), *machine)
    assert time.monotonic() - began < 0.5


def test_it_starts_anyway_after_the_timeout(tmp_path: Path, machine: tuple[Path, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    assert not wait_for_inputs(tmp_path / "never", 0.3, (), *machine, gone=lambda: False)
    assert 0.3 <= time.monotonic() - began < 3.0
    assert "did not appear in 0 s; starting anyway" in capsys.readouterr().out


def test_a_first_boot_that_ended_without_its_record_is_not_waited_for(
        tmp_path: Path, machine: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    asked = []

    def gone() -> bool:
        asked.append(time.monotonic())
        return len(asked) >= 2  # running at the first look, failed at the second

    began = time.monotonic()
    assert not wait_for_inputs(tmp_path / "never", 30.0, (), *machine, gone=gone,
                               check_every=0.2)
    assert len(asked) == 2 and time.monotonic() - began < 5.0
    assert "first boot ended without" in capsys.readouterr().out


def test_a_masked_first_boot_is_not_waited_for(tmp_path: Path,
                                               machine: tuple[Path, Path]) -> None:
    cmdline, units = machine
    assert not firstboot_masked(cmdline, units)
    cmdline.write_text("ro systemd.mask=lockgate-firstboot.service systemd.mask=x.service\n")
    assert firstboot_masked(cmdline, units)
    began = time.monotonic()
    assert not wait_for_inputs(tmp_path / "never", 30.0, (), cmdline, units)
    assert time.monotonic() - began < 1.0
    cmdline.write_text("ro\n")
    (units / "lockgate-firstboot.service").symlink_to("/dev/null")  # systemctl mask
    assert firstboot_masked(cmdline, units)
