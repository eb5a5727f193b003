"""start-lockgate / stop-lockgate: systemctl with the exact argv, or a clear no-systemd message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lockgate.errors import Failure
from lockgate.runtime import control as control_module
from lockgate.runtime.control import control, start_main, stop_main


def fake_systemctl(bin_dir: Path, log: Path, exit_code: int = 0) -> None:
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "unit trouble" >&2\nexit {exit_code}\n')
    script.chmod(0o755)


def test_runs_systemctl_with_the_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "calls"
    fake_systemctl(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    marker = tmp_path / "systemd"
    marker.mkdir()
    control("start", marker)
    control("stop", marker)
    assert log.read_text().splitlines() == ["start lockgate.service", "stop lockgate.service"]
    assert "traffic manager started" in capsys.readouterr().out


def test_failing_systemctl_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl(tmp_path / "bin", tmp_path / "calls", exit_code=5)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    marker = tmp_path / "systemd"
    marker.mkdir()
    with pytest.raises(Failure, match="exit code 5"):
        control("start", marker)


def test_without_systemd_says_so(tmp_path: Path) -> None:
    with pytest.raises(Failure, match="systemd is not running"):
        control("start", tmp_path / "absent")


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd runs here")
@pytest.mark.parametrize("script", ["start-lockgate", "stop-lockgate"])
def test_installed_scripts_without_systemd(script: str) -> None:
    path = shutil.which(script) or str(Path(sys.executable).with_name(script))
    if not Path(path).exists():
        pytest.skip(f"{script} is not installed in this environment")
    proc = subprocess.run([path], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: systemd is not running")
    assert proc.stdout == ""


@pytest.mark.parametrize(("main", "name"), [(start_main, "start-lockgate"),
                                            (stop_main, "stop-lockgate")])
def test_commands_take_no_arguments(main: Callable[[list[str] | None], None], name: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["extra"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert f"Usage: {name}" in capsys.readouterr().out


def test_command_without_systemd_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(control_module, "SYSTEMD_MARKER", tmp_path / "absent")
    with pytest.raises(SystemExit) as exited:
        start_main([])
    assert exited.value.code == 1
    assert capsys.readouterr().err.startswith("error: systemd is not running")
