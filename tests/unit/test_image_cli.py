"""`lockgate image build` mistakes end in one line and exit 2, before any work starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def lockgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (["--formats", "raw,ova"], "error: --formats: 'ova' is not one of raw, qcow2, vhd, vmdk, gce, upgrade"),
    (["--version", "1.0 beta"], "error: --version '1.0 beta': use letters, digits"),
    (["--profile", "/nonexistent.yaml"], "error: profile /nonexistent.yaml: cannot read it"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = lockgate("image", "build", "--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [message] or proc.stderr.startswith(message)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_profile_field(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    text = (REPO / "image/profiles/appliance.yaml").read_text()
    text = text.replace("firmware: hybrid", "firmware: efi")
    text = text.replace("source: ../..", f"source: {REPO}")
    text = text.replace("constraints: ../../constraints.txt", f"constraints: {REPO}/constraints.txt")
    profile.write_text(text)
    proc = lockgate("image", "build", "--profile", str(profile), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: profile: firmware: 'efi' is not one of bios | uefi | hybrid"


def test_help_lists_the_options() -> None:
    proc = lockgate("image", "build", "--help")
    assert proc.returncode == 0
    for option in ("--profile", "--version", "--formats", "--out", "--cache-dir"):
        assert option in proc.stdout
