"""The format cache: a format whose input did not change is not converted again.

Every format is a function of the raw disk's bytes and the format's own
parameters, so its output is stored under ``<cache>/formats/<format>/<key>/``
with ``key`` the sha256 of

* the raw disk's sha256,
* the artifact's file name (the version is in it) and ``SOURCE_DATE_EPOCH``,
* the profile's digest (the VHD's unique id and the root slot's size derive from it),
* the sha256 of the format's own module (a changed writer writes anew),
* the version of each program the writer runs (``qemu-img --version`` ...; for
  ``vmdk`` and ``qcow2``, written in Python, zlib's and the packing code's),
* for ``upgrade``: the kernel, its command line, the machine architecture, the
  signing key's id and the source of the bundle layout module (its root
  filesystem is the raw disk's root-a partition).

A hit hard-links the stored file into the output folder (a copy across file
systems); a miss hard-links what the writer made into the store. The entry
records size, sha256 and the file's mtime: a stored file changed in place (the
two names share it) no longer matches and is not served.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import format_module
from lockgate.proc import run

KEEP = 2  # entries kept per format: this build's and the one before (a rollback)
ENTRY = "entry.json"

# The programs each format runs: their versions are part of its key.
TOOLS: dict[str, tuple[tuple[str, ...], ...]] = {
    "vhd": (("qemu-img", "--version"), ("cp", "--version")),
    "gce": (("tar", "--version"), ("pigz", "--version")),
    "upgrade": (("zstd", "--version"),),
}

_tool_versions: dict[tuple[str, ...], str] = {}


def tool_version(argv: tuple[str, ...]) -> str:
    if argv not in _tool_versions:
        # Some print it on stderr (older pigz); the first line is enough for all of them.
        proc = run(list(argv), capture=True, quiet=True)
        text = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        _tool_versions[argv] = text.splitlines()[0] if text else ""
    return _tool_versions[argv]


def _source_sha256(module: Any) -> str:
    return hashlib.sha256(Path(module.__file__ or "").read_bytes()).hexdigest()


def _upgrade_params(context: Context) -> dict[str, Any]:
    from lockgate.runtime.system import bundle, keys

    key = context.signing_key
    return {"kernel": context.kernel_version, "kernel_cmdline": context.profile.kernel_cmdline,
            "architecture": bundle.machine_architecture(),
            # The bundle's header, member names and format version live there.
            "layout": _source_sha256(bundle),
            "signing_key": keys.key_id(key.public_key().public_bytes_raw()) if key else None}


def _zlib_params(context: Context) -> dict[str, Any]:
    import zlib

    # The VMDK and qcow2 writers compress with the zlib Python is linked to, not with a
    # program; the qcow2 writer reads and packs clusters with the VMDK module's code.
    return {"zlib": zlib.ZLIB_RUNTIME_VERSION, "packer": _source_sha256(format_module("vmdk"))}


EXTRA: dict[str, Callable[[Context], dict[str, Any]]] = {"upgrade": _upgrade_params,
                                                         "vmdk": _zlib_params,
                                                         "qcow2": _zlib_params}
SUFFIX = {"qcow2": "qcow2", "vhd": "vhd", "vmdk": "vmdk", "gce": "gce.tar.gz",
          "upgrade": "upgrade"}


def params(context: Context, fmt: str) -> dict[str, Any]:
    """Everything besides the raw disk that the format's bytes depend on."""
    return {"format": fmt, "name": context.artifact_path(SUFFIX[fmt]).name,
            "source_date_epoch": context.source_date_epoch,
            "profile": context.profile.digest(),
            "writer": _source_sha256(format_module(fmt)),
            "tools": [tool_version(argv) for argv in TOOLS.get(fmt, ())],
            **EXTRA.get(fmt, lambda _c: {})(context)}


def cache_key(raw_sha256: str, fmt_params: dict[str, Any]) -> str:
    text = json.dumps({"raw": raw_sha256, "params": fmt_params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def entry_dir(context: Context, fmt: str, key: str) -> Path:
    return context.cache_dir / "formats" / fmt / key


def _link(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s bytes: a hard link, else a sparse copy."""
    partial = target.with_name(f".{target.name}.link")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        run(["cp", "--sparse=always", "--preserve=timestamps", source, partial])
    partial.replace(target)


def lookup(context: Context, fmt: str, key: str) -> Artifact | None:
    """The stored artifact linked into the output folder, or None (a miss)."""
    folder = entry_dir(context, fmt, key)
    try:
        entry = json.loads((folder / ENTRY).read_text())
        stored = folder / entry["name"]
        st = stored.stat()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if st.st_size != entry.get("size") or st.st_mtime_ns != entry.get("mtime_ns"):
        return None  # changed since it was stored
    target = context.artifact_path(SUFFIX[fmt])
    _link(stored, target)
    os.utime(folder)  # most recently used: pruning keeps it
    return Artifact(format=fmt, path=target, sha256=str(entry["sha256"]), size=st.st_size)


def store(context: Context, fmt: str, key: str, art: Artifact) -> None:
    folder = entry_dir(context, fmt, key)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    stored = folder / art.path.name
    _link(art.path, stored)
    entry = {"format": fmt, "name": art.path.name, "sha256": art.sha256, "size": art.size,
             "mtime_ns": stored.stat().st_mtime_ns}
    (folder / ENTRY).write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
    prune(folder.parent, keep=folder)


def prune(formats_dir: Path, keep: Path) -> None:
    """Drop all but the KEEP most recently used entries (``keep`` always stays)."""
    entries = sorted((p for p in formats_dir.iterdir() if p.is_dir() and p != keep),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)
