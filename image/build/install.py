"""The lockgate layer: a venv at /opt/lockgate using the image's own python3.

Wheels are downloaded on the host into ``cache/wheels/<key>`` (the key hashes
constraints.txt and the requirement names) and installed *inside* the rootfs
by the image's python through ``chroot``, with pip run straight from its wheel,
so the venv, its script shebangs and its byte-code are exactly what the
appliance's interpreter would have made. lockgate itself is built as a wheel
from a clean copy of the checkout, so stray build files never reach the image;
that wheel (its proxy core compiled, see setup.py) is kept in
``cache/lockgate-wheel/<key>``, the key hashing every file that goes into it.

A new wheel is built in a build tree kept in ``cache/lockgate-build/<key>`` (the
key hashing the setup files and the interpreter), brought to the checkout's
files before each build: unchanged files keep their times, and mypyc rewrites a
C file only when its text changes, so setuptools links the proxy core's
extensions again only when the compiled code changed. A change elsewhere costs
the type check and packing (~5 CPU s) instead of a full C compile (~22 CPU s).
Everything but the compiled extensions is rebuilt from the synced tree each time,
so a deleted source never lingers in the wheel.
"""

from __future__ import annotations

import fcntl
import filecmp
import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from lockgate.errors import die
from lockgate.image.build.context import Context
from lockgate.proc import output, run

VENV = Path("/opt/lockgate")
COMMANDS = ("lockgate", "z-initial-config", "z-reset-password", "z-expand-logs-partition",
            "start-lockgate", "stop-lockgate", "upgrade", "rollback", "rollback-helper")
STAGING = Path("/tmp/lockgate-wheels")  # inside the rootfs, removed afterwards
# What the wheel is built from, at the top of the checkout (setup.py reads
# scripts/layout.py; README.md is the long description). Nothing else is copied
# or hashed, so editing docs or tests does not compile the proxy core again.
WHEEL_INPUTS = {"setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE",
                "scripts", "src", "image", "firstboot", "runtime"}
# Never copied, at any depth: VCS data, environments, caches, build leftovers.
SKIP = {".git", ".venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
        "node_modules"}
# Build-host only, so left out of the appliance's wheel (paths in the checkout): the
# image builder, its boot tool, publishers and cloud metadata emulators (all of
# lockgate.image), the benchmarks and the demo. The appliance runs none of them, and
# `lockgate image` there says it is build-host only (lockgate.cli). setup.py skips a
# part whose folder is absent.
HOST_ONLY = {"image", "src/lockgate/bench.py", "src/lockgate/benchmarks",
             "src/lockgate/demo.py"}


def _host_python() -> str:
    import sys

    return sys.executable


def wheels_dir(context: Context) -> Path:
    lg = context.profile.lockgate
    h = hashlib.sha256(lg.constraints.read_bytes())
    h.update(" ".join(sorted(lg.requirements)).encode())
    return context.cache_dir / "wheels" / h.hexdigest()[:16]


def download_wheels(context: Context) -> Path:
    """Runtime dependencies (and pip itself), pinned by constraints.txt, cached."""
    target = wheels_dir(context)
    if (target / ".complete").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    lg = context.profile.lockgate
    run([_host_python(), "-m", "pip", "download", "--quiet", "--only-binary=:all:",
         "--dest", target, "-c", lg.constraints, "pip", *lg.requirements])
    (target / ".complete").touch()
    return target


def skip_names(source: Path, skip_abs: set[Path]) -> Callable[[str, list[str]], set[str]]:
    """shutil.copytree's ``ignore`` for what never goes into lockgate's appliance wheel."""
    source = source.resolve()
    host_only = {source / rel for rel in HOST_ONLY}

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder).resolve()
        top = here == source
        return {n for n in names if n in SKIP or (top and n not in WHEEL_INPUTS)
                or n.endswith((".egg-info", ".so")) or (here / n) in skip_abs
                or (here / n) in host_only}

    return ignore


def _skip_outputs(context: Context) -> Callable[[str, list[str]], set[str]]:
    return skip_names(context.profile.lockgate.source,
                      {context.out_dir.resolve(), context.cache_dir.resolve()})


def source_key(source: Path, ignore: Callable[[str, list[str]], set[str]]) -> str:
    """A hash of every file that goes into lockgate's wheel (names, modes and bytes)."""
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(source):
        skipped = ignore(folder, dirs + files)
        dirs[:] = sorted(d for d in dirs if d not in skipped)
        for name in sorted(f for f in files if f not in skipped):
            path = Path(folder, name)
            h.update(f"{path.relative_to(source)}\0{path.lstat().st_mode:o}\0".encode())
            h.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
    return h.hexdigest()[:16]


def lockgate_wheel_dir(context: Context) -> Path:
    key = source_key(context.profile.lockgate.source, _skip_outputs(context))
    return context.cache_dir / "lockgate-wheel" / key


# setuptools' PEP 517 build_wheel hook, as `pip wheel --no-build-isolation` calls it, but
# without pip's metadata step first: setup.py runs mypyc (a type check of the proxy core,
# ~4.5 CPU s) each time it is run, so running it once instead of twice halves that.
BUILD_WHEEL = "import sys\nfrom setuptools import build_meta\nbuild_meta.build_wheel(sys.argv[1])"
# The build tree's key: what decides how setuptools and mypyc build.
BUILD_KEY_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "scripts/layout.py")


def build_tree(context: Context) -> Path:
    source = context.profile.lockgate.source
    h = hashlib.sha256(f"{sys.version}\0{sys.platform}\0".encode())
    for rel in BUILD_KEY_FILES:
        path = source / rel
        h.update(f"{rel}\0".encode() + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    return context.cache_dir / "lockgate-build" / h.hexdigest()[:16]


def sync_tree(source: Path, dest: Path, ignore: Callable[[str, list[str]], set[str]],
              keep: Callable[[Path], bool] = lambda _p: False) -> None:
    """Make ``dest`` hold what ``shutil.copytree(source, dest, ignore=ignore)`` would, leaving
    files whose bytes and mode are already right untouched (their times too; a changed file
    gets the current time, so no build tool takes it for older than its output). Paths of
    ``dest`` for which ``keep`` is true are left alone."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        there = dest / here.relative_to(source)
        names = dirs + files
        skipped = ignore(folder, names)
        wanted = {n for n in names if n not in skipped}
        # Links to folders are copied as links (copytree's symlinks=True), not walked.
        dirs[:] = sorted(d for d in dirs if d in wanted and not (here / d).is_symlink())
        for old in (there.iterdir() if there.is_dir() else ()):
            if old.name not in wanted and not keep(old):
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()
        for name in dirs:
            target = there / name
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            target.mkdir(exist_ok=True)
        for name in sorted(wanted - set(dirs)):
            src, target = here / name, there / name
            if src.is_symlink():
                if not target.is_symlink() or os.readlink(target) != os.readlink(src):
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    target.unlink(missing_ok=True)
                    target.symlink_to(os.readlink(src))
                continue
            if (target.is_file() and not target.is_symlink()
                    and target.stat().st_mode == src.stat().st_mode
                    and filecmp.cmp(src, target, shallow=False)):
                continue
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
            shutil.copyfile(src, target)
            shutil.copymode(src, target)


def _clear_stale_outputs(tree: Path) -> None:
    """Drop every build output but mypyc's C files and the compiled extensions: the rest
    (packages' .py files, data, egg-info, the bdist staging) is made afresh from the
    synced sources, so nothing deleted or reverted in the checkout survives in it."""
    build = tree / "build"
    for lib in build.glob("lib.*"):
        for folder, _dirs, files in os.walk(lib):
            for name in files:
                if not name.endswith(".so"):
                    Path(folder, name).unlink()
    for path in [*build.glob("bdist.*"), *tree.rglob("*.egg-info")]:
        shutil.rmtree(path, ignore_errors=True)


KEEP_TREES = 2  # build trees kept: this one and the one before (a branch switched back)


def prune_build_trees(keep: Path) -> None:
    """Drop all but the KEEP_TREES most recently used build trees (``keep`` always stays;
    one another build holds the lock of is left alone)."""
    trees = sorted((p for p in keep.parent.iterdir() if p.is_dir() and p != keep),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in trees[KEEP_TREES - 1:]:
        lock_path = old.with_name(old.name + ".lock")
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(old, ignore_errors=True)
            lock_path.unlink(missing_ok=True)


def build_lockgate_wheel(context: Context) -> Path:
    """lockgate's wheel for this checkout, built once per content (compiling takes ~20 CPU s;
    recompiling is skipped when the compiled modules' C code did not change)."""
    dest = lockgate_wheel_dir(context)
    cached = sorted(dest.glob("lockgate-*.whl"))
    if len(cached) == 1:
        return cached[0]
    tree = build_tree(context)
    tree.parent.mkdir(parents=True, exist_ok=True)
    building = dest.with_name(dest.name + ".partial")
    with open(tree.with_name(tree.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time in this tree
        if building.exists():
            shutil.rmtree(building)
        source = context.profile.lockgate.source
        sync_tree(source, tree, _skip_outputs(context),
                  keep=lambda p: p == tree / "build")
        _clear_stale_outputs(tree)
        building.mkdir(parents=True)
        run([_host_python(), "-c", BUILD_WHEEL, building], env=context.env, cwd=tree,
            capture=True)
    os.utime(tree)  # most recently used: pruning keeps it
    prune_build_trees(tree)
    wheels = sorted(building.glob("lockgate-*.whl"))
    if len(wheels) != 1:
        raise die(f"building lockgate's wheel from {context.profile.lockgate.source} gave "
                  f"{len(wheels)} wheels, not 1")
    if dest.exists():
        shutil.rmtree(dest)
    building.rename(dest)
    return dest / wheels[0].name


def _chroot(context: Context, *argv: str) -> None:
    # The host's pip settings (find-links, constraints files) mean nothing in the rootfs.
    env = {**context.env, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": str(STAGING),
           "PIP_NO_INDEX": "1", "PIP_NO_CACHE_DIR": "1", "PYTHONHASHSEED": "0",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    run(["chroot", context.rootfs, *argv], env=env)


def install_lockgate(context: Context) -> None:
    wheels = download_wheels(context)
    lockgate_wheel = build_lockgate_wheel(context)
    staging = context.rootfs / STAGING.relative_to("/")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(wheels, staging)
    shutil.copy2(lockgate_wheel, staging)
    shutil.copy2(context.profile.lockgate.constraints, staging / "constraints.txt")
    pip_wheel = sorted(staging.glob("pip-*.whl"))
    if not pip_wheel:
        raise die(f"no pip wheel in {wheels}; delete that folder and build again")
    venv = context.rootfs / VENV.relative_to("/")
    if venv.exists():
        shutil.rmtree(venv)
    _chroot(context, "/usr/bin/python3", "-m", "venv", "--without-pip", str(VENV))
    pip = f"{STAGING}/{pip_wheel[-1].name}/pip"
    _chroot(context, f"{VENV}/bin/python3", pip, "install", "--quiet", "--no-warn-script-location",
            "-c", f"{STAGING}/constraints.txt", f"{STAGING}/{lockgate_wheel.name}")
    shutil.rmtree(staging)
    # Tools pip leaves behind in the venv are of no use on a read-only appliance.
    for leftover in (venv / "bin").glob("Activate.ps1"):
        leftover.unlink()
    bin_dir = context.rootfs / "usr/local/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        if not (venv / "bin" / command).exists():
            raise die(f"lockgate's wheel did not install {command}; check pyproject.toml's "
                      "[project.scripts]")
        link = bin_dir / command
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(VENV / "bin" / command)
    version = output(["chroot", context.rootfs, f"{VENV}/bin/lockgate", "--version"])
    if "lockgate" not in version:
        raise die(f"the installed lockgate does not run in the image: {version!r}")
