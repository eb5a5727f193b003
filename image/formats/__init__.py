"""Output formats, one module each; every module has ``write(context) -> Artifact``.

The raw disk is the source of every other format. ``raw`` is written first;
the others only read it, so :mod:`lockgate.image.build.pipeline` runs them at
the same time (and :mod:`lockgate.image.formats.cache` skips the ones whose
input did not change).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from lockgate.image.build.context import Artifact, Context

CHUNK = 4 * 1024 * 1024
_ZEROS = bytes(CHUNK)

# sha256 state of whole files already hashed in this process, keyed by what identifies
# the file's bytes (ctime too: raw.write sets the mtime back, the kernel moves ctime): the raw disk is hashed once for its own artifact and the VHD (the
# raw bytes plus a footer) continues from that state instead of reading 2 GiB again.
_states: dict[tuple[str, int, int, int, int, int], Any] = {}
_states_lock = threading.Lock()


def _identity(path: Path) -> tuple[str, int, int, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


def _hash_sparse(path: Path) -> Any:
    """sha256 of ``path``, reading only its data: holes are hashed from a zero buffer
    (a 2 GiB disk image is mostly holes, and reading them costs a kernel copy each)."""
    h = hashlib.sha256()
    zeros = memoryview(_ZEROS)
    with path.open("rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole from here to the end (or no SEEK_DATA)
                data = size
            while pos < data:  # the hole
                n = min(CHUNK, data - pos)
                h.update(zeros[:n])
                pos += n
            if pos >= size:
                break
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            f.seek(pos)
            while pos < hole:
                chunk = f.read(min(CHUNK, hole - pos))
                if not chunk:
                    raise OSError(f"{path}: shorter than its size while hashing")
                h.update(chunk)
                pos += len(chunk)
    return h


def sha256_state(path: Path) -> Any:
    """A sha256 object fed with all of ``path`` (a copy: the caller may go on feeding it)."""
    key = _identity(path)
    with _states_lock:
        known = _states.get(key)
    if known is None:
        known = _hash_sparse(path)
        with _states_lock:
            _states.clear()  # keep one: only the raw disk is ever continued from
            _states[key] = known
    return known.copy()


def sha256_file(path: Path) -> str:
    return str(_hash_sparse(path).hexdigest())


def artifact(fmt: str, path: Path, sha256: str | None = None) -> Artifact:
    """The artifact record; ``sha256`` when the writer already hashed what it wrote."""
    return Artifact(format=fmt, path=path, sha256=sha256 or sha256_file(path),
                    size=path.stat().st_size)


def progress_flag() -> list[str]:
    """``qemu-img -p`` (a percent line) when someone is watching a terminal and this is
    the only conversion running (formats converted side by side would mix their lines)."""
    alone = threading.current_thread() is threading.main_thread()
    return ["-p"] if alone and sys.stdout.isatty() else []


def format_module(name: str) -> Any:
    return importlib.import_module(f"lockgate.image.formats.{name}")


def write_format(context: Context, name: str) -> Artifact:
    result: Artifact = format_module(name).write(context)
    return result
