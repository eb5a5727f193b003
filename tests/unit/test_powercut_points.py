"""The power-cut points of ``lockgate.benchmarks.powercut`` on the host, in seconds.

The benchmark and the e2e test SIGKILL QEMU while a TEST-ONLY wrapper holds the
product's ``upgrade`` at a named step; a misspelt or unreachable point would
only show after many minutes of booting. Here the same wrapper runs the real
``upgrade`` against a GPT disk-image file (the hidden --disk/--esp/... options,
as in test_system_upgrade.py), is SIGKILLed at each point, and what is left
must be safe: GRUB's next boot is the old version unless the trial was fully
scheduled, a slot with a menu entry is completely written, and the next
``upgrade`` succeeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from test_system_upgrade import FS_SIZE, PATH_ENV, Appliance, make_bundle, run

from lockgate.benchmarks.powercut import FULL_POINTS, PAUSE_WRAPPER, CutPoint, reached_percent
from lockgate.runtime.system import boot
from lockgate.runtime.system import bundle as bundles
from lockgate.runtime.system.keys import generate, load_public
from lockgate.runtime.system.upgrade import install

# Every pause point; of the write points the first line, the middle and the last.
HOST_POINTS = [p for p in FULL_POINTS
               if p.kind == "pause" or (p.kind == "write" and p.at in ("0", "50", "100"))]


@pytest.fixture(scope="module")
def new_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(bundle 2.0.0, its root filesystem, the public key)."""
    work = tmp_path_factory.mktemp("powercut")
    generate(work / "site")
    tree = work / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "payload.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    image = work / "root.ext4"
    with image.open("wb") as f:
        f.truncate(FS_SIZE)
    assert run("mkfs.ext4", "-q", "-F", "-d", tree, image).returncode == 0
    return make_bundle(work, "2.0.0", image, work / "site.key"), image, work / "site.pub"


def upgrade_argv(appliance: Appliance, bundle: Path, pub: Path) -> list[str]:
    return [str(bundle), "--no-restart", *appliance.flags(), "--keys-dir",
            str(appliance.root / "no-keys"), "--trusted-key", str(pub)]


def killed_at(appliance: Appliance, point: CutPoint, bundle: Path, pub: Path) -> list[str]:
    """Run the wrapper (or plain ``upgrade`` for a write point) and SIGKILL it at ``point``."""
    wrapper = appliance.root / "powercut-upgrade.py"
    wrapper.write_text(PAUSE_WRAPPER)
    if point.kind == "pause":
        argv = [sys.executable, str(wrapper), point.at]
        line = f"powercut-pause: {point.at}"
        marker: Callable[[str], bool] = line.__eq__
    else:
        argv = [sys.executable, "-m", "lockgate", "system", "upgrade"]
        marker = reached_percent(int(point.at))
    env = {**PATH_ENV, "PYTHONUNBUFFERED": "1",
           "LOCKGATE_BOOT_LOCK": str(appliance.root / "grubenv.lock")}
    child = subprocess.Popen([*argv, *upgrade_argv(appliance, bundle, pub)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert child.stdout is not None
    lines: list[str] = []
    timer = threading.Timer(60, child.kill)  # a point never reached ends the test
    timer.start()
    try:
        for raw in child.stdout:
            lines.append(raw.decode().rstrip())
            if marker(lines[-1]):
                child.send_signal(signal.SIGKILL)
                break
    finally:
        timer.cancel()
        child.wait(timeout=30)
        child.stdout.close()
    assert lines and marker(lines[-1]), "\n".join(lines[-20:])
    return lines


def next_boot(appliance: Appliance) -> str:
    """The entry GRUB boots next: a pending one-time entry, else the default."""
    env = appliance.env
    return env.get("next_entry") or env["saved_entry"]


@pytest.mark.parametrize("point", HOST_POINTS, ids=[p.name for p in HOST_POINTS])
def test_every_cut_point_is_reached_and_leaves_a_bootable_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: CutPoint,
        new_bundle: tuple[Path, Path, Path]) -> None:
    monkeypatch.setenv("LOCKGATE_BOOT_LOCK", str(tmp_path / "grubenv.lock"))
    bundle, rootfs, pub = new_bundle
    appliance = Appliance(tmp_path)
    killed_at(appliance, point, bundle, pub)

    entry = next_boot(appliance)
    lands = {"lockgate-1.0.0": "old", "lockgate-2.0.0": "new"}[entry]
    assert lands in point.lands, (point.name, appliance.env)
    # The old version is where it was; a slot GRUB knows is complete.
    assert appliance.read_partition(appliance.a) == b"A" * len(appliance.read_partition(appliance.a))
    if "lockgate-2.0.0" in boot.installed_entries(appliance.esp).values():
        assert appliance.read_partition(appliance.b, FS_SIZE) == rootfs.read_bytes()
    if lands == "old":
        assert not (appliance.esp / "grub/slot-b.cfg").exists() or entry != "lockgate-2.0.0"
    # What the VM check demands after such a cut holds here.
    if point.entry_written:
        assert boot.installed_entries(appliance.esp).get("b") == "lockgate-2.0.0"

    # After the cut the same upgrade goes through.
    install(appliance.machine, bundle, [load_public(pub)], architecture="amd64",
            say=lambda _: None)
    assert appliance.env == {"saved_entry": "lockgate-1.0.0", "next_entry": "lockgate-2.0.0"}
    assert appliance.read_partition(appliance.b, FS_SIZE) == rootfs.read_bytes()
    header = bundles.read_header(bundle)
    assert header.version == "2.0.0"
