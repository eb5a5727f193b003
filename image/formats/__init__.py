"""Output formats, one module each; every module has ``write(context) -> Artifact``.

The raw disk is the source of every other format.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

from lockgate.image.build.context import Artifact, Context


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def artifact(fmt: str, path: Path) -> Artifact:
    return Artifact(format=fmt, path=path, sha256=sha256_file(path), size=path.stat().st_size)


def progress_flag() -> list[str]:
    """``qemu-img -p`` (a percent line) when someone is watching a terminal."""
    return ["-p"] if sys.stdout.isatty() else []


def write_format(context: Context, name: str) -> Artifact:
    module = importlib.import_module(f"lockgate.image.formats.{name}")
    result: Artifact = module.write(context)
    return result
