"""The new version's copy of the configuration is on disk before it is renamed into place.

A power cut seconds after ``upgrade`` (the power-cut bench's
``after-schedule-trial`` point, in QEMU) left ``versions/<new>/config/users.json``
and ``licence.json`` with 0 bytes: the copy was renamed into place before its
files' data were written, the trial's runtime crash-looped and the upgrade was
rolled back. A power cut cannot be made here; this checks what the kernel is
asked for, in order: every copied file and folder fsynced (by the path each
fsync reached, ``/proc/self/fd``) before the rename that publishes the copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_files_fat_fsync import record_fsyncs

from lockgate.paths import StatePaths
from lockgate.runtime.system import configs


def test_copy_for_fsyncs_every_copied_file_and_folder_before_the_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = StatePaths(tmp_path / "state")
    (state.config / "pools").mkdir(parents=True, mode=0o700)
    (state.config / "users.json").write_text('{"admin": "x"}')
    (state.config / "pools" / "web.json").write_text('{"nodes": ["10.0.0.1:80"]}')
    (state.config / "localtime").symlink_to("/usr/share/zoneinfo/UTC")
    state.runtime.mkdir(mode=0o700)
    (state.runtime / "licence.json").write_text("{}")
    configs.activate(state, "1.0.0")

    steps = record_fsyncs(monkeypatch)
    configs.copy_for(state, "1.0.0", "2.0.0")

    partial = state.versions / ".2.0.0.partial"
    rename = steps.index(f"rename {partial} -> {state.versions / '2.0.0'}")
    synced = {s.removeprefix("fsync ") for s in steps[:rename]}
    for path in ("config/users.json", "config/pools/web.json", "config/pools", "config",
                 "runtime/licence.json", "runtime", ""):
        assert str(partial / path).rstrip("/") in synced, (path, steps)
    assert steps[rename + 1] == f"fsync {state.versions}"
    copied = state.versions / "2.0.0"
    assert (copied / "config/pools/web.json").read_text() == '{"nodes": ["10.0.0.1:80"]}'
    assert os.readlink(copied / "config/localtime") == "/usr/share/zoneinfo/UTC"
