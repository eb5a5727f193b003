"""Writing state files safely: the one place that does it.

A file is replaced atomically (temp file with its final mode, fsync, rename,
fsync of the folder) so a power cut leaves the old content or the new, never
half, and a secret is never readable with a wider mode for a moment. A file
that cannot be read any more is renamed aside, not deleted: it may be the only
copy of something an operator wants back.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path


def make_dirs(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` with ``mode``; missing parents get 0755 (they are /var, /run ...)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        wanted = mode if directory == path else 0o755
        os.mkdir(directory, wanted)
        os.chmod(directory, wanted)  # mkdir's mode is filtered by the umask


def atomic_write(path: Path, data: bytes, mode: int | None = 0o600,
                 dir_mode: int = 0o700) -> None:
    """Replace ``path`` with ``data``; the file never exists with a wider ``mode``.

    The temporary file is made by ``mkstemp`` (a new name, O_EXCL, 0600) in the
    same folder, so nothing planted there is written through and two writers
    never share one. ``mode=None`` is for FAT (the ESP): it has no modes to
    set (a chmod on a vfat mount fails) and its mount options decide who reads.
    """
    if mode is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        make_dirs(path.parent, dir_mode)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    tmp = Path(name)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if mode is None:
        # vfat's rename writes the new directory entry with size 0 and no cluster; the
        # file's size and first cluster reach it only when its inode is written back
        # (~30 s later). A power cut in between left a 0-byte slot entry on the ESP
        # (found by the power-cut bench): fsync the file again under its new name.
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(path.parent)


def atomic_symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target``, replacing whatever ``link`` was, in one rename."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside(paths: list[Path], why: str) -> list[Path]:
    """Rename each of ``paths`` to ``<name>.<why>-<UTC time>`` beside it, one time for all
    (a pair kept together reads as one). A rename keeps the file's mode."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    kept = []
    for path in paths:
        target = path.with_name(f"{path.name}.{why}-{stamp}")
        os.replace(path, target)
        kept.append(target)
    return kept


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """A cheap change detector for pollers: (inode, mtime_ns, size), None when missing.

    The inode because every writer here replaces a file by a rename; the size
    because mtime is only as fine as the kernel's clock tick.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
