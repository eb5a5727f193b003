"""lockgate's wheel for the image: built from a clean copy, with what the appliance runs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lockgate.image.build.context import Context
from lockgate.image.build.install import build_lockgate_wheel
from lockgate.image.build.profile import load_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_has_all_parts_and_unit_files(tmp_path: Path) -> None:
    profile = load_profile(REPO / "image/profiles/appliance.yaml")
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
    assert not (REPO / "image/lockgate.egg-info").exists()


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
