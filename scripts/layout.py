"""Where lockgate's packages live in this checkout, and which modules are compiled.

The three parts live in top-level folders and install as ``lockgate.image``,
``lockgate.firstboot`` and ``lockgate.runtime``; ``src/lockgate`` is the core.
setup.py maps them for pip. mypy and mypyc cannot follow such a mapping, so
:func:`typetree` builds ``build/typetree/lockgate``, a tree of symbolic links
with the installed shape: without it ``import lockgate.runtime.pools`` is
unknown to mypy and every cross-module type silently becomes ``Any``.

NATIVE lists the proxy's per-request modules, which setup.py compiles with
mypyc (unless ``LOCKGATE_COMPILE=0``). An editable install puts the compiled
modules next to their sources and Python prefers them, so a compiled module
older than its source would hide an edit: ``python scripts/layout.py stale``
lists those, and ``make setup`` rebuilds them.

Standard library only: setup.py imports this before anything is installed.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PARTS = {"lockgate": "src/lockgate", "lockgate.image": "image",
         "lockgate.firstboot": "firstboot", "lockgate.runtime": "runtime"}
NATIVE = ("lockgate.runtime.pools", "lockgate.runtime.proxy.context",
          "lockgate.runtime.proxy.http1", "lockgate.runtime.proxy.http_transport",
          "lockgate.runtime.proxy.tcp_transport")
NATIVE_GROUP = "lockgate.runtime._native"  # the shared library: runtime/_native__mypyc.*.so
TYPETREE = Path("build/typetree")


def compile_wanted() -> bool:
    return os.environ.get("LOCKGATE_COMPILE", "1") != "0"


def source_of(module: str, root: Path = HERE) -> Path:
    """runtime/proxy/http1.py for lockgate.runtime.proxy.http1."""
    for package in sorted(PARTS, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            rest = module[len(package):].lstrip(".").replace(".", "/")
            return root / PARTS[package] / (rest + ".py" if rest else "__init__.py")
    raise ValueError(f"{module} is not in a lockgate package")


def compiled_files(module: str, root: Path = HERE) -> list[Path]:
    source = source_of(module, root)
    stem = source.with_suffix("")
    return [p for suffix in EXTENSION_SUFFIXES if (p := Path(f"{stem}{suffix}")).exists()]


def typetree(dest: Path, root: Path = HERE) -> Path:
    """(Re)build ``dest/lockgate`` as links to the real folders; returns ``dest``."""
    top = dest / "lockgate"
    top.mkdir(parents=True, exist_ok=True)
    want: dict[str, Path] = {}
    for entry in (root / PARTS["lockgate"]).iterdir():
        if entry.name != "__pycache__":
            want[entry.name] = entry
    for package, folder in PARTS.items():
        if package != "lockgate":
            want[package.rsplit(".", 1)[1]] = root / folder
    # relative links: the checkout may move
    want_links = {name: Path(os.path.relpath(target, top.resolve())) for name, target in want.items()}
    for link in top.iterdir():
        if not link.is_symlink() or link.readlink() != want_links.get(link.name):
            link.unlink()
    for name, target in want_links.items():
        if not (top / name).is_symlink():
            (top / name).symlink_to(target)
    return dest


def stale(root: Path = HERE) -> list[Path]:
    """Compiled modules that do not match what is wanted.

    With compiling on: sources whose compiled module is missing or older.
    With ``LOCKGATE_COMPILE=0``: compiled modules left over, which would shadow the sources.
    """
    found = []
    for module in NATIVE:
        source = source_of(module, root)
        built = compiled_files(module, root)
        if not compile_wanted():
            found += built
        elif not built or min(p.stat().st_mtime for p in built) < source.stat().st_mtime:
            found.append(source)
    if not compile_wanted():  # and mypyc's shared library beside them
        found += compiled_files(NATIVE_GROUP + "__mypyc", root)
    return found


def main(argv: list[str]) -> int:
    if argv == ["typetree"]:
        print(typetree(HERE / TYPETREE))
        return 0
    if argv == ["stale"]:
        for path in stale():
            print(path.relative_to(HERE))
        return 0
    print("usage: layout.py typetree|stale", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
