"""A deliberately broken version through the real upgrade flow comes back by itself.

The broken version is a bundle made from the e2e image's slot A root
filesystem (``lockgate.benchmarks.powercut.derive_bundle``) with a TEST-ONLY
systemd drop-in that keeps ``lockgate.service`` from ever starting; it is signed
with a key made for the test and baked into the test's copy of slot A. The
product is not changed: the switch lives only in this test's bundle.

Version 2 is a good bundle made the same way (slot A's root filesystem, a new
filesystem UUID, its own version). One QEMU run:

1. the image's version (1) boots: first boot, a pool over REST, v2's bundle in
   over SSH; ``sudo upgrade`` -> v2's trial proves healthy and is the default;
2. v3's bundle in; ``sudo upgrade`` installs it (into the slot v1 was in) and
   reboots; its trial crash-loops, the boot check gives it up and reboots;
3. v2 runs again — at most 2 kernel boots after the upgrade — says the trial
   was ROLLED BACK, is still the default, and its REST API and pool (made on
   v1) are as they were.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from slot_tools import SlotDisk, sh
from ssh_login import need_ssh

from lockgate.benchmarks.powercut import (
    BUNDLE,
    DATA,
    Appliance,
    broken_runtime_files,
    broken_trial,
    derive_bundle,
    trust_key,
    upgrade_and_commit,
)
from lockgate.image.boot.overlay import resolve_image

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(2400)]

GOOD, BROKEN = "9.2.0-good", "9.3.0-broken"


def test_a_broken_version_rolls_back_by_itself_within_two_boots(
        appliance_image: Path, console_log: Path, tmp_path: Path) -> None:
    need_ssh()
    if not shutil.which("debugfs"):
        pytest.skip("debugfs not installed (e2fsprogs)")
    disk = tmp_path / "broken.raw"
    sh("cp", "--sparse=always", resolve_image(appliance_image), disk)
    work = tmp_path / "work"
    work.mkdir()
    slots = SlotDisk(disk, work)
    first, _ = slots.slot_a_entry()
    key = Ed25519PrivateKey.generate()
    trust_key(disk, work, key)
    good = derive_bundle(disk, work, GOOD, key)
    broken = derive_bundle(disk, work, BROKEN, key, files=broken_runtime_files(BROKEN))
    app = Appliance(disk, work, console_log.parent, first, GOOD, name="broken-trial")
    remote = f"{DATA}/broken.upgrade"
    started = time.monotonic()
    with app.boot() as vm:
        app.setup(vm, {BUNDLE: good})
        upgrade_and_commit(app, vm, BUNDLE, GOOD)
        # Room on the data partition: v2's bundle out, the broken one in.
        app.guest(vm, f"sudo -n rm -f {BUNDLE}")
        app.guest(vm, f"sudo -n tee {remote} >/dev/null", input=broken.read_bytes(), timeout=1200)
        upgraded_at = vm.elapsed
        boots, back = broken_trial(app, vm, remote, BROKEN, GOOD)
        back_s = vm.elapsed - upgraded_at
        app.old, app.new = GOOD, BROKEN
        outcome = app.check_boot(vm, back, ("old",), "broken", time.monotonic(),
                                 expect_rollback=True)
        status = app.guest(vm, "sudo -n lockgate system status")
    print(f"\nbroken-trial e2e: back on {outcome.version} after {boots} boots, {back_s:.0f} s "
          f"after the upgrade started; {time.monotonic() - started:.0f} s in all\n{status}")
    assert boots <= 2, boots
    assert (outcome.version, outcome.slot) == (GOOD, "b")
    assert f"last trial: lockgate-{BROKEN}: ROLLED BACK" in status, status
    assert "crash-looping" in status, status
    # The broken version stays installed in slot A, but is not the default.
    assert f"default:    lockgate-{GOOD}" in status, status
