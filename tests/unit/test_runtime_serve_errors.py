"""`lockgate runtime serve` / `reload` with a bad state dir or a damaged store: one
`error:` line and exit 1, never a traceback (a unit restarting forever with a
traceback in the journal tells the operator nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LOCKGATE = str(Path(sys.executable).with_name("lockgate"))
EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "runtime.yaml")


def lockgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LOCKGATE, *args], capture_output=True, text=True, timeout=60,
                          check=False, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", ["serve", "reload"])
def test_unusable_state_dir_is_one_error_line(tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = lockgate("runtime", command, "--config", EXAMPLE, "--state-dir", str(blocker / "x"),
                    "--no-management") if command == "serve" else \
        lockgate("runtime", command, "--config", EXAMPLE, "--state-dir", str(blocker / "x"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(blocker) in lines[0]


@pytest.mark.parametrize("command", ["serve", "reload"])
def test_damaged_store_is_one_error_line_and_is_left_alone(tmp_path: Path, command: str) -> None:
    store = tmp_path / "runtime" / "config.json"
    store.parent.mkdir()
    store.write_text('{"version": 3, "tree": {')
    extra = ["--no-management"] if command == "serve" else []
    proc = lockgate("runtime", command, "--state-dir", str(tmp_path), *extra)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {store}: "), proc.stderr
    assert store.read_text() == '{"version": 3, "tree": {'  # the operator decides, not us
