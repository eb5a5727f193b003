"""The thin ``lockgate`` root command, run as the installed console script."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from lockgate.cli import root

REPO = Path(__file__).resolve().parents[2]
LOCKGATE = REPO / ".venv" / "bin" / "lockgate"

pytestmark = pytest.mark.skipif(not LOCKGATE.exists(), reason=".venv/bin/lockgate not installed (run make setup)")


def lockgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOCKGATE), *args], capture_output=True, text=True, timeout=60, cwd="/", check=False
    )


def test_version() -> None:
    done = lockgate("--version")
    assert done.returncode == 0
    assert done.stdout == f"lockgate, version {version('lockgate')}\n"
    assert done.stderr == ""


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_four_parts(flag: str) -> None:
    done = lockgate(flag)
    assert done.returncode == 0
    commands = done.stdout.split("Commands:", 1)[1].split()
    for part in ("image", "firstboot", "runtime", "system"):
        assert part in commands
    assert done.stderr == ""


def test_help_does_not_import_the_parts() -> None:
    # The root lists the parts from a table; nothing is imported for --help.
    done = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "python"),
            "-c",
            "import sys\nfrom lockgate.cli import main\nsys.argv=['lockgate','--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('lockgate.image', 'lockgate.runtime', 'lockgate.firstboot'))), file=sys.stderr)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_unknown_command_exits_2_with_one_line() -> None:
    done = lockgate("no-such-command")
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "no-such-command" in done.stderr


def test_unknown_command_exits_2_and_names_it() -> None:
    done = lockgate("no-such-command")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "No such command 'no-such-command'" in done.stderr


def test_bad_input_exits_2_with_error_line() -> None:
    done = lockgate("firstboot", "parse", "accept_license=perhaps", "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "error: accept_license: expected y/yes/true or n/no/false, got 'perhaps'\n"


def test_bad_input_through_click_runner_matches_the_script() -> None:
    result = CliRunner().invoke(root, ["firstboot", "parse", "accept_license=perhaps", "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == lockgate("firstboot", "parse", "accept_license=perhaps", "--json").stderr
