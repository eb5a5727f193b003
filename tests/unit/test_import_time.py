"""The boot path stays light: fast to import, no cloud SDKs, no image builder.

Timed as a boot runs it: the installed ``lockgate`` script doing a whole
``firstboot run`` and the runtime from start to listening, with
``PYTHONPROFILEIMPORTTIME`` so every module imported on the way is seen."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HEAVY = ("boto3", "botocore", "google", "azure", "jinja2")
BUDGET_MS = 100.0


def _python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        check=False,
    )


def _cumulative_ms(stderr: str, module: str) -> float:
    for line in stderr.splitlines():
        # "import time:   self [us] | cumulative | imported package"
        if line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == module:
            return int(line.split("|")[1]) / 1000
    raise AssertionError(f"{module} not in -X importtime output:\n{stderr[-2000:]}")


LOCKGATE = str(Path(sys.executable).with_name("lockgate"))  # the console script boot runs
BOOT_IMPORT_BUDGET_MS = 350.0  # measured 140-180 ms on the shared 2-core test machine
RUNTIME_START_BUDGET_S = 5.0  # process start -> listening; measured 0.45-0.5 s


def _imports(stderr: str) -> tuple[float, set[str]]:
    """(milliseconds spent importing, modules imported) from ``-X importtime`` output.

    The total is the sum of the top-level entries' cumulative times (nested imports are
    indented and already counted in their parents)."""
    total_us, names = 0, set()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, cumulative, name = line.split("|")
        names.add(name.strip())
        if not name[1:].startswith(" "):
            total_us += int(cumulative)
    return total_us / 1000, names


def _not_on_a_boot_path(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY
            or m == "lockgate.image" or m.startswith("lockgate.image.")}


def test_firstboot_run_as_booted_imports_within_budget(tmp_path: Path) -> None:
    """The whole ``lockgate firstboot run`` a boot runs, against a NoCloud-style seed."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "user-data").write_text("password=Import-Time-1 accept_license=y timezone=UTC")
    (seed / "meta-data").write_text("instance-id: iid-import-time\nlocal-hostname: it-1\n")
    results = []
    for attempt in range(3):  # best of three: the machine is shared
        root = tmp_path / f"root{attempt}"
        began = time.monotonic()
        done = subprocess.run(
            [LOCKGATE, "firstboot", "run", "--source", f"file:{seed / 'user-data'}",
             "--root", str(root), "--console", str(tmp_path / "console")],
            capture_output=True, text=True, timeout=120, cwd="/", check=False,
            env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
        wall = time.monotonic() - began
        assert done.returncode == 0, done.stderr[-2000:]
        status = json.loads((root / "run/lockgate/firstboot.json").read_text())
        assert status["state"] == "configured", status
        import_ms, modules = _imports(done.stderr)
        assert "lockgate.firstboot.service" in modules
        assert not _not_on_a_boot_path(modules), sorted(_not_on_a_boot_path(modules))
        results.append((import_ms, wall))
    best_ms = min(ms for ms, _ in results)
    assert best_ms < BOOT_IMPORT_BUDGET_MS, f"imports of firstboot run: {sorted(results)}"


def test_runtime_start_until_listening_within_budget(tmp_path: Path) -> None:
    """``lockgate runtime serve`` from process start to its serving line (REST + Admin UI
    listening), with everything it imports on the way, its workers included."""
    argv = [LOCKGATE, "runtime", "serve", "--state-dir", str(tmp_path), "--workers", "1",
            "--grace", "1", "--management-host", "127.0.0.1", "--rest-port", "0",
            "--admin-port", "0"]
    errors = tmp_path / "stderr"
    began = time.monotonic()
    with errors.open("w") as err_file:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err_file, text=True,
                                cwd="/", env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
        serving_after = None
        try:
            assert proc.stdout is not None
            deadline = began + 60
            for line in proc.stdout:  # ends when serve exits (it prints the line first)
                if line.startswith("lockgate-runtime: serving"):
                    serving_after = time.monotonic() - began
                    break
                if time.monotonic() > deadline:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    stderr = errors.read_text()
    assert serving_after is not None, stderr[-2000:]
    _, modules = _imports(stderr)
    assert "lockgate.runtime.serve" in modules
    assert not _not_on_a_boot_path(modules), sorted(_not_on_a_boot_path(modules))
    assert serving_after < RUNTIME_START_BUDGET_S, f"runtime listening after {serving_after:.2f} s"


def test_userdata_parser_imports_within_budget() -> None:
    times = []
    for _ in range(3):
        done = _python("import lockgate.firstboot.userdata", "-X", "importtime")
        assert done.returncode == 0, done.stderr[-2000:]
        times.append(_cumulative_ms(done.stderr, "lockgate.firstboot.userdata"))
    assert min(times) < BUDGET_MS, f"import lockgate.firstboot.userdata took {sorted(times)} ms"


def _modules_after(code: str) -> set[str]:
    done = _python(code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))")
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


def _top(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("module", ["lockgate.firstboot", "lockgate.firstboot.userdata", "lockgate.runtime"])
def test_no_cloud_sdk_or_template_engine(module: str) -> None:
    loaded = _modules_after(f"import {module}")
    assert module in loaded
    assert not _top(loaded) & set(HEAVY), sorted(_top(loaded) & set(HEAVY))


def test_plain_user_data_parse_needs_no_yaml_or_cryptography() -> None:
    loaded = _modules_after(
        "from lockgate.firstboot.userdata import parse\n"
        "s, _ = parse(b'password=x accept_license=y timezone=UTC cluster_host=h cluster_fingerprint=unsafe')\n"
        "assert s.cluster_host == 'h'"
    )
    assert "yaml" not in loaded
    assert "cryptography" not in _top(loaded)


def test_cloud_config_and_sd_cert_load_their_libraries_on_demand() -> None:
    loaded = _modules_after(
        "from lockgate.firstboot.userdata import parse, UserDataError\n"
        "parse(b'#cloud-config\\npassword: x\\n')\n"
        "try:\n    parse(b'sd_cert=AAAA')\nexcept UserDataError:\n    pass"
    )
    assert "yaml" in loaded
    assert "cryptography.x509" in loaded


def test_firstboot_parse_command_does_not_import_the_image_builder() -> None:
    loaded = _modules_after(
        "import sys\n"
        "from lockgate.cli import main\n"
        "sys.argv = ['lockgate', 'firstboot', 'parse', 'password=x', '--json']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code"
    )
    assert "lockgate.firstboot.userdata_cmd" in loaded
    assert not {m for m in loaded if m == "lockgate.image" or m.startswith("lockgate.image.")}
    assert not _top(loaded) & set(HEAVY)


# Everything the appliance runs (units, console scripts, CLI groups): none of it may pull in
# a cloud SDK, which only `lockgate image publish` imports (and the appliance never has).
APPLIANCE_MODULES = ("lockgate.firstboot.service", "lockgate.firstboot.cli", "lockgate.firstboot.expand",
                     "lockgate.firstboot.wizard", "lockgate.runtime.cli", "lockgate.runtime.serve",
                     "lockgate.runtime.control", "lockgate.runtime.system_cli")
CLOUD_SDKS = {"boto3", "botocore", "s3transfer", "google", "azure"}


def test_appliance_paths_load_no_cloud_sdk() -> None:
    loaded = _modules_after("\n".join(f"import {m}" for m in APPLIANCE_MODULES))
    assert set(APPLIANCE_MODULES) <= loaded
    assert not _top(loaded) & CLOUD_SDKS, sorted(_top(loaded) & CLOUD_SDKS)
    assert not {m for m in loaded if m.startswith("lockgate.image")}


@pytest.mark.parametrize("group", ["firstboot", "runtime", "system"])
def test_appliance_command_groups_load_no_cloud_sdk(group: str) -> None:
    loaded = _modules_after(
        "import sys\n"
        "from lockgate.cli import main\n"
        f"sys.argv = ['lockgate', '{group}', '--help']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code"
    )
    assert not _top(loaded) & CLOUD_SDKS, sorted(_top(loaded) & CLOUD_SDKS)
