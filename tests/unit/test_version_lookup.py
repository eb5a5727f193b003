"""lockgate.__version__ on an installed wheel comes from its dist-info folder name,
without importing importlib.metadata (seconds of every boot-time process under TCG)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import lockgate

SOURCE = Path(lockgate.__file__)
PROBE = ("import sys, lockgate; print(lockgate.__version__); "
         "print('importlib.metadata' in sys.modules)")


def _run(site: Path) -> list[str]:
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); "
                          + PROBE], capture_output=True, text=True, timeout=60, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    return out.stdout.split()


def test_an_installed_wheel_names_its_version_without_importlib_metadata(tmp_path: Path) -> None:
    (tmp_path / "lockgate").mkdir()
    shutil.copyfile(SOURCE, tmp_path / "lockgate/__init__.py")
    (tmp_path / "lockgate-9.8.7.dist-info").mkdir()
    assert _run(tmp_path) == ["9.8.7", "False"]


def test_without_a_dist_info_it_falls_back_to_importlib_metadata(tmp_path: Path) -> None:
    (tmp_path / "lockgate").mkdir()
    shutil.copyfile(SOURCE, tmp_path / "lockgate/__init__.py")
    version, used_metadata = _run(tmp_path)
    assert used_metadata == "True"
    assert version  # this checkout's installed version, or 0.0.0+unknown
