"""Power cuts during ``upgrade``: every next boot lands in a good version, configuration intact.

The quick subset of the benchmark's cut points (``lockgate.benchmarks.powercut``;
``make bench`` runs over 20 of them). One persistent copy of the e2e image,
with a signing key made for the test baked into slot A; the new version is a
bundle made from slot A's root filesystem (new filesystem UUID, its own
version in ``release.json``) and signed with that key. QEMU is SIGKILLed at:

1. ``write-50%``: ``upgrade`` writing slot B, at its 50 % progress line;
2. ``pause:after-install-entry``: slot B written and verified, the configuration
   copied, ``slot-b.cfg`` written, the trial not yet scheduled (a TEST-ONLY
   wrapper runs the product's ``upgrade`` and stops there);
3. ``trial:waiting-for-health``: ``upgrade`` ran to its reboot; the trial boot is
   cut while the boot check waits for health, before the commit.

After each cut QEMU starts again on the same disk: the old version runs (the
third also says the trial was ROLLED BACK), the REST API answers and the pool
made over REST before the first cut is there.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from slot_tools import SlotDisk, sh
from ssh_login import need_ssh

from lockgate.benchmarks.powercut import QUICK_POINTS, Appliance, derive_bundle, run_cuts, trust_key
from lockgate.image.boot.overlay import resolve_image

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(2400)]

NEW = "9.1.0-powercut"


def test_power_cuts_during_upgrade_land_in_a_good_version(
        appliance_image: Path, console_log: Path, tmp_path: Path) -> None:
    need_ssh()
    if not shutil.which("debugfs"):
        pytest.skip("debugfs not installed (e2fsprogs)")
    disk = tmp_path / "powercut.raw"
    sh("cp", "--sparse=always", resolve_image(appliance_image), disk)
    work = tmp_path / "work"
    work.mkdir()
    old, _ = SlotDisk(disk, work).slot_a_entry()
    key = Ed25519PrivateKey.generate()
    trust_key(disk, work, key)
    started = time.monotonic()
    bundle = derive_bundle(disk, work, NEW, key)
    made_s = time.monotonic() - started
    app = Appliance(disk, work, console_log.parent, old, NEW, name="powercut-quick")
    report = run_cuts(app, QUICK_POINTS, bundle)
    print(f"\npowercut e2e: bundle made in {made_s:.0f} s; {report.runs} cuts, "
          f"{report.good_boots} good boots, {report.kernel_boots} kernel boots in "
          f"{report.qemu_starts} QEMU runs, {report.seconds:.0f} s")
    for outcome in report.outcomes:
        print(f"  {outcome.point}: {outcome.version} (slot {outcome.slot}) "
              f"{outcome.boot_s:.0f} s {outcome.note}")
    assert [o.point for o in report.outcomes] == [p.name for p in QUICK_POINTS]
    assert [o.version for o in report.outcomes] == [old] * len(QUICK_POINTS)
    assert report.outcomes[-1].note == "rolled back"
    assert report.good_boots == report.runs == len(QUICK_POINTS)
