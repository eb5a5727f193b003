"""``lockgate firstboot run`` points the configuration at the running version's own
before it applies anything (what lockgate-activate.service did in a process of its
own), and leaves a tree without a release record alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lockgate.paths import RELEASE_FILE, StatePaths

USER_DATA = "password=Pw-for-tests-1 accept_license=Yes"


def _run(root: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    seed = tmp / "seed"
    seed.mkdir(exist_ok=True)
    (seed / "meta-data").write_text("instance-id: i-activate\n")
    (seed / "user-data").write_text(USER_DATA)
    return subprocess.run([sys.executable, "-m", "lockgate", "firstboot", "run", "--source",
                           f"file:{seed / 'user-data'}", "--root", str(root), "--console",
                           str(tmp / "console")], capture_output=True, text=True, timeout=120)


def test_first_boot_activates_the_running_version_first(tmp_path: Path) -> None:
    root = tmp_path / "root"
    state = StatePaths.under_root(root)
    state.config.mkdir(parents=True)
    (state.config / "kept.json").write_text("{}")  # the image's real folder, moved once
    release = root / RELEASE_FILE.relative_to("/")
    release.parent.mkdir(parents=True)
    release.write_text(json.dumps({"version": "3.1.4"}))
    proc = _run(root, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lockgate-activate: config -> versions/3.1.4/config" in proc.stdout
    assert os.readlink(state.config) == "versions/3.1.4/config"
    assert (state.versions / "3.1.4/config/kept.json").exists()
    # What first boot wrote went into the version's own configuration.
    assert (state.versions / "3.1.4/config" / state.users.name).exists()


def test_without_a_release_record_nothing_is_moved(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = _run(root, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lockgate-activate" not in proc.stdout + proc.stderr
    state = StatePaths.under_root(root)
    assert not state.config.is_symlink()
