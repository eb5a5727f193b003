"""The wizard's NTP server and SSH intrusion prevention answers take effect when the wizard
finishes, through the same functions first boot uses, not at the next boot.

Driven through ``z-initial-config --replay-from`` (the console wizard; the web wizard
finishes through the same ``finish.apply_all``) on a temporary root: the files the image
points systemd-timesyncd and sshguard at change at once, and first boot's every-boot
re-apply of the records afterwards finds nothing left to change.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from lockgate.firstboot.apply.services import (
    NO_SSHGUARD_FILE,
    TIMESYNCD_FILE,
    apply_recorded,
    timesyncd_text,
)
from lockgate.firstboot.wizard.cli import wizard_cmd
from lockgate.paths import StatePaths

PASSWORD = "Wizard-Services-9"


def run_wizard(tmp_path: Path, root: Path, ntp: str, sshguard: str) -> None:
    replay = tmp_path / "answers.txt"
    replay.write_text(f"password={PASSWORD}\naccept_license=y\ntimezone=UTC\n"
                      f"ntp_server={ntp}\nssh_intrusion_prevention={sshguard}\n")
    replay.chmod(0o600)
    result = CliRunner().invoke(wizard_cmd, ["--root", str(root), "--replay-from", str(replay)])
    assert result.exit_code == 0, result.output


def test_wizard_answers_reach_timesyncd_and_sshguard_at_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    state = StatePaths.under_root(root)
    timesyncd = state.base / TIMESYNCD_FILE
    marker = state.config / NO_SSHGUARD_FILE

    run_wizard(tmp_path, root, "time.example.net", "n")
    assert timesyncd.read_text() == timesyncd_text("time.example.net")
    assert "NTP=time.example.net\n" in timesyncd.read_text()
    assert marker.is_file()  # sshguard.service's ConditionPathExists=! now keeps it off
    written = (timesyncd.read_text(), timesyncd.stat().st_mtime_ns, marker.stat().st_mtime_ns)
    assert apply_recorded(root) == []  # the next boot's re-apply: nothing left to change
    assert (timesyncd.read_text(), timesyncd.stat().st_mtime_ns,
            marker.stat().st_mtime_ns) == written

    run_wizard(tmp_path, root, "", "y")  # back to Debian's pool and sshguard on
    assert timesyncd.read_text() == timesyncd_text(None)
    assert "NTP=" not in timesyncd.read_text()
    assert not marker.exists()
    assert apply_recorded(root) == []
    assert not marker.exists()
