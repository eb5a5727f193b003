"""lockgate's wheel for the image: built from a clean copy, with what the appliance runs."""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from lockgate.image.build.context import Context
from lockgate.image.build.install import (
    build_lockgate_wheel,
    build_tree,
    prune_build_trees,
    skip_names,
    sync_tree,
)
from lockgate.image.build.profile import load_profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import layout  # scripts/layout.py: which modules are compiled

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_has_all_parts_and_unit_files(tmp_path: Path) -> None:
    """Also: after a change outside the proxy core, the next wheel reuses the compiled
    extensions of the build tree (not linked again: same file times) and carries the
    change, and a file deleted from the checkout is gone from it."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=skip_names(REPO, {REPO / "build", REPO / "cache"}),
                    symlinks=True)
    (checkout / "runtime/gone_soon.py").write_text("GONE = True\n")
    profile = load_profile(REPO / "image/profiles/appliance.yaml")
    profile = replace(profile, lockgate=replace(profile.lockgate, source=checkout))
    ctx = Context(profile=profile, version="1.0", source_date_epoch=1700000000,
                  formats=("raw",), out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    ctx.work_dir.mkdir(parents=True)
    wheel = build_lockgate_wheel(ctx)
    names = set(zipfile.ZipFile(wheel).namelist())
    for wanted in ("lockgate/cli.py", "lockgate/firstboot/units/lockgate-firstboot.service",
                   "lockgate/runtime/units/lockgate.service"):
        assert wanted in names, wanted
    # Build-host only (install.HOST_ONLY): the image builder, emulators, benchmarks, demo.
    assert not any(n.startswith(("lockgate/image/", "lockgate/benchmarks/"))
                   or n in ("lockgate/bench.py", "lockgate/demo.py") for n in names)
    assert not any(n.startswith(("tests/", "build/", "lockgate/tests/")) for n in names)
    assert not any("__pycache__" in n for n in names)
    # The checkout itself is left as it was: no build/ or egg-info written into it.
    assert not (checkout / "build").exists()
    assert not list(checkout.rglob("*.egg-info"))
    assert "lockgate/runtime/gone_soon.py" in names

    tree = build_tree(ctx)
    compiled = {p: p.stat().st_mtime_ns for p in tree.glob("build/lib.*/**/*.so")}
    assert len(compiled) == len(layout.NATIVE) + 1  # one per module and the shared group
    with (checkout / "src/lockgate/cli.py").open("a") as f:
        f.write("# an edited comment\n")
    (checkout / "runtime/gone_soon.py").unlink()
    again = build_lockgate_wheel(ctx)
    assert again != wheel
    assert {p: p.stat().st_mtime_ns for p in tree.glob("build/lib.*/**/*.so")} == compiled
    first, second = zipfile.ZipFile(wheel), zipfile.ZipFile(again)
    assert {n: first.read(n) for n in names if n.endswith(".so")} == \
        {n: second.read(n) for n in second.namelist() if n.endswith(".so")}
    assert second.read("lockgate/cli.py").endswith(b"# an edited comment\n")
    assert "lockgate/runtime/gone_soon.py" not in second.namelist()


def test_sync_tree_mirrors_and_keeps_unchanged_files(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    for rel, text in {"a.py": "a", "pkg/b.py": "b", "pkg/c.py": "c", "docs/x.md": "x"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    (src / "link").symlink_to("pkg")
    plain = lambda _folder, names: {n for n in names if n == "docs"}  # noqa: E731
    sync_tree(src, dest, plain)
    assert (dest / "pkg/b.py").read_text() == "b" and (dest / "link").readlink() == Path("pkg")
    assert not (dest / "docs").exists()
    (dest / "build").mkdir()
    (dest / "build/out.so").write_text("compiled")
    (dest / "stray.py").write_text("left from before")
    os.utime(dest / "pkg/b.py", ns=(1, 1))
    os.utime(dest / "pkg/c.py", ns=(1, 1))
    (src / "pkg/c.py").write_text("c, edited")
    (src / "a.py").unlink()
    (src / "a.py").mkdir()  # a file became a folder
    (src / "a.py/inner.py").write_text("inner")
    sync_tree(src, dest, plain, keep=lambda p: p == dest / "build")
    assert (dest / "pkg/b.py").stat().st_mtime_ns == 1  # unchanged: untouched
    assert (dest / "pkg/c.py").read_text() == "c, edited"
    assert (dest / "pkg/c.py").stat().st_mtime_ns > 1  # changed: now, not the source's time
    assert (dest / "a.py/inner.py").read_text() == "inner"
    assert not (dest / "stray.py").exists()
    assert (dest / "build/out.so").read_text() == "compiled"


def test_wheel_cache_key_follows_the_wheel_inputs_only(tmp_path: Path) -> None:
    from lockgate.image.build.install import skip_names, source_key

    src = tmp_path / "checkout"
    for rel, text in {"setup.py": "setup()", "runtime/proxy/http1.py": "x = 1",
                      "docs/runtime-config.md": "# doc", "tests/unit/test_x.py": "",
                      "src/lockgate/bench.py": "", "image/cloudemu/ec2.py": "",
                      "runtime/proxy/http1.cpython-311-x86_64-linux-gnu.so": "built"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    out = src / "build"
    out.mkdir()

    def key() -> str:
        return source_key(src, skip_names(src, {out.resolve()}))

    first = key()
    (src / "docs/runtime-config.md").write_text("# doc, edited")
    (src / "tests/unit/test_x.py").write_text("assert True")
    (src / "runtime/proxy/http1.cpython-311-x86_64-linux-gnu.so").write_text("rebuilt")
    (out / "lockgate.raw").write_text("an artifact")
    (src / "src/lockgate/bench.py").write_text("edited = True")  # build-host only
    (src / "image/cloudemu/ec2.py").write_text("edited = True")
    assert key() == first  # none of that is built into the wheel
    (src / "runtime/proxy/http1.py").write_text("x = 2")
    assert key() != first
    (src / "runtime/proxy/http1.py").write_text("x = 1")
    (src / "setup.py").chmod(0o755)
    assert key() != first  # modes count too


def test_build_trees_are_pruned_to_the_last_two_used(tmp_path: Path) -> None:
    trees = [tmp_path / name for name in ("old", "older", "recent", "current")]
    for age, tree in zip((300, 400, 100, 500), trees, strict=True):
        tree.mkdir()
        (tree / "build").mkdir()
        os.utime(tree, (1_700_000_000 - age, 1_700_000_000 - age))
    prune_build_trees(tmp_path / "current")  # the one just used, whatever its time
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["current", "recent"]
