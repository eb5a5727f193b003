"""The compiled proxy core: what runs is current, and the Python sources still hold.

setup.py compiles the modules in ``scripts/layout.py``'s NATIVE list with mypyc
and the editable install puts them beside their sources, where Python prefers
them. A compiled module older than its source would run stale code under every
other test, so that is checked first. The sources stay the reference: with
``LOCKGATE_PURE_PYTHON=1`` the runtime loads them, and the proxy's unit tests
and a proxying integration test run again that way here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

from lockgate.runtime import PURE_PYTHON_ENV, core_build

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import layout  # noqa: E402

compiled_only = pytest.mark.skipif(
    not layout.compile_wanted() or os.environ.get(PURE_PYTHON_ENV) == "1",
    reason="LOCKGATE_COMPILE=0 or LOCKGATE_PURE_PYTHON=1: the proxy core runs from its sources")


def _python(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=True, env={**os.environ, **env}, cwd=REPO)
    return done.stdout.strip()


@compiled_only
def test_compiled_modules_are_current_and_are_what_runs() -> None:
    assert layout.stale() == [], "run make setup: a compiled module is missing or older than its source"
    for name in layout.NATIVE:
        module = import_module(name)
        # (mypyc names __file__ after its shared library when one compiled module
        # loads another, so only the kind of file is checked, not its folder)
        assert module.__file__ is not None and not module.__file__.endswith(".py"), module.__file__
        assert layout.compiled_files(name), name
    assert core_build() == "compiled"


def test_pure_python_switch_loads_every_native_module_from_source() -> None:
    code = ("import json, importlib, lockgate.runtime as r\n"
            f"print(json.dumps([importlib.import_module(m).__file__ for m in {list(layout.NATIVE)!r}]"
            " + [r.core_build()]))")
    out = _python(code, **{PURE_PYTHON_ENV: "1"})
    *files, build = __import__("json").loads(out)
    assert files == [str(layout.source_of(m)) for m in layout.NATIVE]
    assert build == "python"


def test_layout_maps_modules_to_their_folders() -> None:
    assert layout.source_of("lockgate.runtime.proxy.http1") == REPO / "runtime/proxy/http1.py"
    assert layout.source_of("lockgate.files") == REPO / "src/lockgate/files.py"
    assert layout.source_of("lockgate.image") == REPO / "image/__init__.py"
    with pytest.raises(ValueError):
        layout.source_of("lockgatex.runtime")


def test_typetree_links_every_part_in_the_installed_shape(tmp_path: Path) -> None:
    tree = layout.typetree(tmp_path)
    top = tree / "lockgate"
    assert (top / "runtime/proxy/http1.py").resolve() == REPO / "runtime/proxy/http1.py"
    assert (top / "files.py").resolve() == REPO / "src/lockgate/files.py"
    assert (top / "image/__init__.py").resolve() == REPO / "image/__init__.py"
    (top / "gone.py").symlink_to(REPO / "README.md")  # a module that no longer exists
    layout.typetree(tmp_path)
    assert not (top / "gone.py").exists()


@pytest.mark.skipif(os.environ.get(PURE_PYTHON_ENV) == "1", reason="this run is already pure Python")
def test_proxy_tests_pass_on_the_python_sources() -> None:
    tests = ["tests/unit/test_proxy_http1.py", "tests/unit/test_proxy_pools.py",
             "tests/unit/test_proxy_status.py", "tests/unit/test_proxy_tcp.py",
             "tests/integration/test_runtime_proxy.py::test_forwarding_headers_hop_by_hop_and_head",
             "tests/integration/test_runtime_proxy.py::test_chunked_request_and_response_bodies_pass_intact",
             "tests/integration/test_runtime_proxy.py::test_raw_pipelined_requests_are_answered_in_order",
             "tests/integration/test_runtime_proxy.py::test_errors_431_400_503_502"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                          capture_output=True, text=True, timeout=400, check=False, cwd=REPO,
                          env={**os.environ, PURE_PYTHON_ENV: "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-1000:]
