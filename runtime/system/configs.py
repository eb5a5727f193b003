"""Each installed version keeps its own configuration, as in the reference product.

On the data partition, ``versions/<version>/config`` and
``versions/<version>/runtime`` hold one version's configuration; ``config``
and ``runtime`` (what every part of lockgate reads, ``lockgate.paths``) are
symlinks into the running version's. ``upgrade`` copies the running
configuration into the new version's folder; every boot points the links at
the running version (``lockgate system activate``, before first boot and the
runtime start). So a rollback brings back the configuration as it was at the
upgrade, and changes made since stay with the newer version.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lockgate.files import atomic_symlink, fsync_dir, make_dirs, set_aside
from lockgate.paths import StatePaths

PER_VERSION = ("config", "runtime")


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(Path(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total


def config_size(state: StatePaths) -> int:
    """Bytes the running configuration takes (what a copy for a new version needs)."""
    return sum(_tree_size(state.base / name) for name in PER_VERSION
               if (state.base / name).exists())


def _copy(source: Path, target: Path) -> None:
    if source.exists():
        shutil.copytree(source, target, symlinks=True)
    else:
        target.mkdir(mode=0o700, parents=True)
    _sync_tree(target)


def _sync_tree(top: Path) -> None:
    """fsync every file and folder of a fresh copy before it is renamed into place.

    Without it a power cut seconds after ``upgrade`` left the new version's
    ``users.json`` and ``licence.json`` with 0 bytes (ext4 writes a new file's
    data later than the rename that publishes its folder): the trial's runtime
    crash-looped and the upgrade was rolled back (found by the power-cut bench).
    """
    for folder, _dirs, files in os.walk(top):
        for name in files:
            path = Path(folder, name)
            if path.is_symlink():
                continue
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def _replace_dir(partial: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    fsync_dir(target.parent)


def activate(state: StatePaths, version: str) -> list[str]:
    """Point ``config`` and ``runtime`` at ``version``'s own folders; what it did, in words.

    The first time (the image's data partition has real folders) they move
    into the running version's folder. A version with no folder of its own
    (set by hand with grub-set-default, say) starts from a copy of what the
    links pointed at.
    """
    done = []
    make_dirs(state.versions / version, 0o700)
    for name in PER_VERSION:
        live, want = state.base / name, state.versions / version / name
        link = f"{state.versions.name}/{version}/{name}"
        if live.is_symlink():
            if os.readlink(live) == link and want.is_dir():
                continue
            if not want.exists():
                partial = want.with_name(f".{name}.partial")
                if partial.exists():
                    shutil.rmtree(partial)
                _copy(live, partial)  # follows the link: the last running version's
                _replace_dir(partial, want)
                done.append(f"{name}: copied for {version} from {os.readlink(live)}")
        elif live.is_dir():
            if want.exists():
                kept = set_aside([live], "unversioned")
                done.append(f"{name}: kept {kept[0].name} aside")
            else:
                os.replace(live, want)
                fsync_dir(want.parent)
                done.append(f"{name}: moved into versions/{version}")
        elif not want.exists():
            want.mkdir(mode=0o700)
        atomic_symlink(link, live)
        done.append(f"{name} -> {link}")
    return done


def copy_for(state: StatePaths, running: str, new: str) -> None:
    """The running configuration becomes ``new``'s own (replacing an older copy of it)."""
    activate(state, running)  # a data partition from before per-version folders
    partial = state.versions / f".{new}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(mode=0o700)
    for name in PER_VERSION:
        _copy(state.base / name, partial / name)
    fsync_dir(partial)
    _replace_dir(partial, state.versions / new)


def prune(state: StatePaths, keep: set[str]) -> list[str]:
    """Remove the folders of versions no slot holds any more."""
    removed: list[str] = []
    if not state.versions.is_dir():
        return removed
    for folder in sorted(state.versions.iterdir()):
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder)
            removed.append(folder.name)
    return removed
