"""Filesystem images, made from directories without mounting anything.

ext4: ``mkfs.ext4 -d`` with a fixed UUID and directory-hash seed. e2fsprogs
1.47.0 honours ``E2FSPROGS_FAKE_TIME`` for the superblock and creation times
but copies each file's ctime from the build tree (the time it was unpacked,
which nobody can set) and its atime (which mke2fs's own reading moves), so a
generated ``debugfs`` script then sets every inode's ctime and atime to
SOURCE_DATE_EPOCH: two builds give the same bytes.

FAT (ESP): ``mkfs.fat --invariant`` with a fixed serial; mtools writes
directory entries with SOURCE_DATE_EPOCH's time (files are copied with
``mcopy -m`` after their mtimes are set to it).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from lockgate.image.build.context import Context
from lockgate.proc import run


def set_tree_times(tree: Path, epoch: int) -> None:
    """atime/mtime of every entry (not following symlinks) to ``epoch``."""
    for folder, dirs, files in os.walk(tree):
        for name in dirs + files:
            os.utime(os.path.join(folder, name), (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def ctime_script(tree: Path, epoch: int) -> str:
    """debugfs commands that set the ctime of every path in ``tree`` to ``epoch``."""
    lines = [f"sif / ctime @{epoch}", f"sif / atime @{epoch}"]
    for folder, dirs, files in os.walk(tree):
        rel = os.path.relpath(folder, tree)
        base = "" if rel == "." else "/" + rel
        for name in sorted(dirs + files):
            path = f"{base}/{name}"
            if '"' in path or "\n" in path:
                raise ValueError(f"{path!r}: a file name debugfs cannot be given")
            # atime too: mke2fs reading a file moves its atime (relatime).
            lines.append(f'sif "{path}" ctime @{epoch}')
            lines.append(f'sif "{path}" atime @{epoch}')
    return "\n".join(lines) + "\n"


def make_ext4(context: Context, tree: Path, image: Path, size: int, fs_uuid: uuid.UUID,
              label: str) -> None:
    if image.exists():
        image.unlink()
    epoch = context.source_date_epoch
    set_tree_times(tree, epoch)
    run(["mkfs.ext4", "-q", "-F", "-L", label, "-U", str(fs_uuid), "-m", "0", "-b", "4096",
         "-E", f"hash_seed={fs_uuid},root_owner=0:0,lazy_itable_init=0,nodiscard",
         "-d", tree, image, f"{size // 1024}k"], env=context.env, capture=True)
    script = context.work_dir / f"{image.name}.debugfs"
    script.write_text(ctime_script(tree, epoch))
    run(["debugfs", "-w", "-f", script, image], env=context.env, capture=True)
    run(["e2fsck", "-f", "-n", image], env=context.env, capture=True)


def make_esp(context: Context, image: Path, size: int, serial: str, files: dict[str, Path]) -> None:
    """A FAT32 ESP holding ``files`` (path on the ESP -> file on the host)."""
    if image.exists():
        image.unlink()
    epoch = context.source_date_epoch
    # --invariant must come before -i: it would otherwise reset the serial to 1234-ABCD.
    run(["mkfs.fat", "-F", "32", "-S", "512", "-s", "1", "-n", "LOCKGATE", "--invariant",
         "-i", serial, "-C", image, str(size // 1024)], env=context.env, capture=True)
    folders = sorted({str(Path(p).parent) for p in files} - {"."},
                     key=lambda p: (p.count("/"), p))
    made: set[str] = set()
    for folder in folders:
        parts = Path(folder).parts
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                run(["mmd", "-i", image, f"::/{sub}"], env=context.env)
                made.add(sub)
    for dest, source in sorted(files.items()):
        os.utime(source, (epoch, epoch))
        run(["mcopy", "-m", "-i", image, source, f"::/{dest}"], env=context.env)
