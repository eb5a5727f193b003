"""atomic_write(mode=None), the ESP's writer: the file is fsynced again under its new name.

On vfat a rename writes the new directory entry with size 0 and no cluster;
the size and first cluster reach it only when the file's inode is written
back. The power-cut benchmark (lockgate.benchmarks.powercut, point
``after-schedule-trial``) cut QEMU ~10 s after ``upgrade`` wrote
``grub/slot-b.cfg``: the next boot found it with 0 bytes (GRUB then booted the
old version as a "trial"). A power cut cannot be made here, so this checks
the order of the durable steps as the kernel sees them: every fsync, by the
file it reached (``/proc/self/fd``), around the rename.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lockgate.files import atomic_write


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The real os.fsync and os.replace, with what each fsync reached and each rename made."""
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        steps.append(f"rename {src} -> {dst}")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return steps


def test_a_fat_write_fsyncs_the_renamed_file_then_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "grub" / "slot-b.cfg"
    steps = record_fsyncs(monkeypatch)
    atomic_write(target, b"menuentry\n", mode=None)
    assert target.read_bytes() == b"menuentry\n"
    rename = next(i for i, s in enumerate(steps)
                  if s.startswith("rename ") and s.endswith(f" -> {target}"))
    assert steps[rename - 1].startswith(f"fsync {target.parent}/.slot-b.cfg."), steps
    assert steps[rename + 1:] == [f"fsync {target}", f"fsync {target.parent}"], steps


def test_other_writes_keep_one_fsync_of_the_data_and_one_of_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state" / "record.json"
    steps = record_fsyncs(monkeypatch)
    atomic_write(target, b"{}\n")
    assert [s.split(" ")[0] for s in steps] == ["fsync", "rename", "fsync"], steps
    assert steps[-1] == f"fsync {target.parent}"
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)
