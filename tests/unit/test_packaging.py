"""The three part folders install as ``lockgate.*``, as a wheel and as an editable install.

The wheel is built from a copy of the build inputs (top-level build files and
the four package folders), not in the shared working tree: an in-tree build
writes ``build/`` and ``*.egg-info`` where others work, and two concurrent runs
would trip over each other.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
PART_FOLDERS = {"src/lockgate": "lockgate", "image": "lockgate/image",
                "firstboot": "lockgate/firstboot", "runtime": "lockgate/runtime"}
TOP_LEVEL_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE",
                   "scripts/layout.py")
SKIP = ("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.so")
# Data files the appliance needs at run time (see setup.py's package_data).
DATA_PATTERNS = ("*.service", "*.yaml", "*.j2", "*.html", "*.json", "*.sh")


def _run(
    argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=cwd, env=env)
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _copy_build_inputs(dest: Path) -> None:
    for name in TOP_LEVEL_FILES:
        if (REPO / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    for folder in PART_FOLDERS:
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns(*SKIP))


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(wheel file, install target, wheel dir) for a wheel built from the repo's sources."""
    source = tmp_path_factory.mktemp("source")
    wheel_dir = tmp_path_factory.mktemp("wheel")
    target = tmp_path_factory.mktemp("target")
    _copy_build_inputs(source)
    _run([str(VENV_BIN / "pip"), "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(source)])
    wheels = list(wheel_dir.glob("lockgate-*.whl"))
    assert len(wheels) == 1, wheels
    _run([str(VENV_BIN / "pip"), "install", "--no-deps", "-q", "--target", str(target), str(wheels[0])])
    return wheels[0], target, wheel_dir


# Takes ~15 s (pip wheel, compiling the proxy core, + pip install --target); not marked slow.
pytestmark = pytest.mark.skipif(not (VENV_BIN / "pip").exists(), reason=".venv not set up (run make setup)")


def test_wheel_has_only_the_lockgate_package(wheel_install: tuple[Path, Path, Path]) -> None:
    wheel, _, _ = wheel_install
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"lockgate"}


def test_install_target_has_no_bare_part_packages(wheel_install: tuple[Path, Path, Path]) -> None:
    _, target, _ = wheel_install
    installed = {p.name for p in target.iterdir()}
    assert not installed & {"image", "firstboot", "runtime", "src"}, sorted(installed)
    assert "lockgate" in installed
    for part in ("image", "firstboot", "runtime"):
        assert (target / "lockgate" / part / "__init__.py").is_file()


def test_wheel_ships_every_python_module_and_data_file(wheel_install: tuple[Path, Path, Path]) -> None:
    wheel, _, _ = wheel_install
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    missing = []
    for folder, package in PART_FOLDERS.items():
        for path in (REPO / folder).rglob("*"):
            rel = path.relative_to(REPO / folder)
            if not path.is_file() or "__pycache__" in rel.parts:
                continue
            # Every module counts: a folder of modules without __init__.py is a bug
            # that only shows on the appliance (find_packages skips it).
            wanted = path.suffix == ".py" or any(fnmatch.fnmatch(path.name, p) for p in DATA_PATTERNS)
            if wanted and f"{package}/{rel.as_posix()}" not in shipped:
                missing.append(f"{folder}/{rel.as_posix()}")
    assert not missing, f"not in the wheel: {missing}"


def test_wheel_install_imports_from_the_target(wheel_install: tuple[Path, Path, Path]) -> None:
    _, target, wheel_dir = wheel_install
    code = (
        "import json, lockgate, lockgate.image, lockgate.firstboot.settings, lockgate.runtime\n"
        "import importlib.util\n"
        "print(json.dumps({m: __import__(m, fromlist=['x']).__file__ for m in "
        "['lockgate', 'lockgate.image', 'lockgate.firstboot.settings', 'lockgate.runtime']}))\n"
        "print(json.dumps([importlib.util.find_spec(n) is None for n in ['image', 'firstboot', 'runtime']]))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = _run([sys.executable, "-c", code], cwd=wheel_dir, env=env)
    files_line, missing_line = done.stdout.strip().splitlines()[-2:]
    files = json.loads(files_line)
    for module, file in files.items():
        assert Path(file).is_relative_to(target), f"{module} came from {file}, not the wheel install"
    assert files["lockgate.image"] == str(target / "lockgate" / "image" / "__init__.py")
    assert json.loads(missing_line) == [True, True, True]


def test_editable_install_maps_parts_to_repo_folders(tmp_path: Path) -> None:
    code = (
        "import json, importlib.util, lockgate.image, lockgate.firstboot, lockgate.runtime\n"
        "print(json.dumps([lockgate.image.__file__, lockgate.firstboot.__file__, lockgate.runtime.__file__]))\n"
        "print(json.dumps([importlib.util.find_spec(n) is None for n in ['image', 'firstboot', 'runtime']]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = _run([str(VENV_BIN / "python"), "-c", code], cwd=tmp_path, env=env)
    files_line, missing_line = done.stdout.strip().splitlines()[-2:]
    assert json.loads(files_line) == [
        str(REPO / "image" / "__init__.py"),
        str(REPO / "firstboot" / "__init__.py"),
        str(REPO / "runtime" / "__init__.py"),
    ]
    assert json.loads(missing_line) == [True, True, True]


def test_wheel_ships_the_proxy_core_compiled_and_installed_it_runs(
        wheel_install: tuple[Path, Path, Path]) -> None:
    wheel, target, wheel_dir = wheel_install
    sys.path.insert(0, str(REPO / "scripts"))
    import layout

    if not layout.compile_wanted():
        pytest.skip("LOCKGATE_COMPILE=0: the wheel is pure Python")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    for module in layout.NATIVE:
        stem = module.replace(".", "/")
        assert f"{stem}.py" in shipped  # the source stays: tracebacks, LOCKGATE_PURE_PYTHON
        assert any(n.startswith(stem + ".cpython-") and n.endswith(".so") for n in shipped), stem
    code = ("import lockgate.runtime as r, lockgate.runtime.proxy.http1 as h\n"
            "print(r.core_build(), h.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "LOCKGATE_PURE_PYTHON"}
    env["PYTHONPATH"] = str(target)
    build, file = _run([sys.executable, "-c", code], cwd=wheel_dir, env=env).stdout.split()
    assert build == "compiled" and Path(file).is_relative_to(target)


# What the appliance runs, and what only the build host does (image/build/install.py).
APPLIANCE_PARTS = ("lockgate/cli.py", "lockgate/http.py", "lockgate/firstboot/service.py",
                   "lockgate/firstboot/units/lockgate-firstboot.service",
                   "lockgate/firstboot/wizard/finish.py", "lockgate/runtime/serve.py",
                   "lockgate/runtime/tls.py", "lockgate/runtime/units/lockgate.service",
                   "lockgate/runtime/system/bundle.py")
HOST_ONLY_PREFIXES = ("lockgate/image/", "lockgate/benchmarks/", "lockgate/bench.py",
                      "lockgate/demo.py")


@pytest.fixture(scope="module")
def appliance_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, install target) of the wheel the image build installs on the appliance,
    built by the image build's own code (pure Python here: the file list is the point)."""
    from lockgate.image.build.context import Context
    from lockgate.image.build.install import build_lockgate_wheel
    from lockgate.image.build.profile import load_profile

    tmp = tmp_path_factory.mktemp("appliance-wheel")
    profile = load_profile(REPO / "image/profiles/appliance.yaml")
    ctx = Context(profile=profile, version="1.0", source_date_epoch=1700000000,
                  formats=("raw",), out_dir=tmp / "out", cache_dir=tmp / "cache")
    ctx.work_dir.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOCKGATE_COMPILE", "0")
        wheel = build_lockgate_wheel(ctx)
    target = tmp / "target"
    _run([str(VENV_BIN / "pip"), "install", "--no-deps", "-q", "--target", str(target), str(wheel)])
    return wheel, target


def test_appliance_wheel_carries_runtime_and_firstboot_but_no_build_host_code(
        appliance_wheel: tuple[Path, Path]) -> None:
    wheel, _ = appliance_wheel
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for wanted in APPLIANCE_PARTS:
        assert wanted in names, wanted
    assert any(n.startswith("lockgate/firstboot/datasources/") for n in names)
    leaked = sorted(n for n in names if n.startswith(HOST_ONLY_PREFIXES))
    assert leaked == [], leaked
    assert not any("cloudemu" in n or "publish" in n for n in names)
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    with zipfile.ZipFile(wheel) as archive:
        assert b"lockgate/image/" not in archive.read(record)


def test_appliance_lockgate_offers_no_build_host_commands(
        appliance_wheel: tuple[Path, Path], tmp_path: Path) -> None:
    _, target = appliance_wheel
    # Only the installed wheel: the checkout's editable install must not fill the gaps.
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path\n"
            "                    if 'editable' not in getattr(f, '__module__', '')]\n"
            "from lockgate.cli import main\nmain(sys.argv[1:])\n")
    env = {**os.environ, "PYTHONPATH": str(target)}

    def lockgate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path, env=env, check=False)

    help_text = lockgate("--help")
    assert help_text.returncode == 0, help_text.stderr
    commands = help_text.stdout.split("Commands:", 1)[1].split()
    assert "image" not in commands
    assert {"firstboot", "runtime", "system"} <= set(commands)
    image = lockgate("image", "build", "--help")
    assert image.returncode == 1
    assert image.stderr.startswith("error: 'lockgate image' is build-host only")
    assert len(image.stderr.splitlines()) == 1 and "Traceback" not in image.stderr
    firstboot = lockgate("firstboot", "parse", "password=Secret-123 accept_license=yes",
                         "--json")
    assert firstboot.returncode == 0, firstboot.stderr
    assert json.loads(firstboot.stdout)["accept_license"] is True
