"""A trial whose user space hangs comes back on the previous version through the watchdog.

Longer than the quick subset (the watchdog waits 60 s, then three boots), so it
runs only with ``LOCKGATE_E2E_LONG=1``:

1. v1 (slot A): ``schedule_trial(lockgate-<v2>)`` (the product's call) and reboot.
2. v2, trial: a TEST-ONLY unit in the test's copy of slot B waits until systemd
   has armed the watchdog, then sends PID 1 SIGSEGV: systemd's crash handler
   freezes it, nothing pets the watchdog, softdog resets the machine.
3. v1: GRUB boots ``saved_entry``; the boot check says the trial was ROLLED BACK.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from slot_tools import STEP_PRELUDE, SlotDisk, sh, step_unit

from lockgate.image.boot.overlay import resolve_image
from lockgate.image.boot.vm import booted

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(3600),
              pytest.mark.skipif(os.environ.get("LOCKGATE_E2E_LONG") != "1",
                                 reason="long e2e run: set LOCKGATE_E2E_LONG=1")]

V2 = "0.2.0-hang"
PYTHON = "/opt/lockgate/bin/python"
# TEST ONLY, written into the test's copy of slot B ($$: a literal $ for systemd).
HANG_UNIT = """# TEST ONLY (tests/e2e/test_trial_boot_hang.py): not part of any image.
[Unit]
Description=e2e: freeze PID 1 once systemd pets the watchdog
DefaultDependencies=no
After=systemd-modules-load.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for i in $$(seq 120); do [ "$$(cat /sys/class/watchdog/watchdog0/state 2>/dev/null)" = active ] && break; sleep 1; done; echo "e2e-hang: watchdog $$(cat /sys/class/watchdog/watchdog0/state); freezing PID 1" > /dev/console; kill -SEGV 1'
[Install]
WantedBy=sysinit.target
"""


def test_a_hung_trial_is_reset_by_the_watchdog_and_rolled_back(
        appliance_image: Path, console_log: Path, tmp_path: Path) -> None:
    disk = tmp_path / "hang.raw"
    sh("cp", "--sparse=always", resolve_image(appliance_image), disk)
    slots = SlotDisk(disk, tmp_path)
    v1, _ = slots.slot_a_entry()
    slots.make_slot_b(V2, {
        "/etc/systemd/system/lockgate-e2e-hang.service": (HANG_UNIT, 0o644)})
    slots.debugfs(f"{disk}?offset={slots.start('root-b')}",
                  "mkdir /etc/systemd/system/sysinit.target.wants",
                  "symlink /etc/systemd/system/sysinit.target.wants/lockgate-e2e-hang.service "
                  "/etc/systemd/system/lockgate-e2e-hang.service")
    step = STEP_PRELUDE + f"""
if [ "$stage" = 0 ]; then
    next 1
    {PYTHON} -c 'from lockgate.runtime.system import boot; boot.schedule_trial("lockgate-{V2}")'
    echo "e2e-step 0: hang trial scheduled"
    systemctl --no-block reboot
fi
"""
    slots.enable_unit(slots.slot_a_target(), "lockgate-e2e-step.service",
                      step_unit("e2e: schedule a trial that hangs"),
                      {"/usr/local/sbin/lockgate-e2e-step": (step, 0o755)})
    started = time.monotonic()
    with booted(disk, cloud="nocloud", firmware="bios", console_log=console_log, persist=True,
                user_data=b"accept_license=y", powerdown_timeout=20, quiet_timeout=240) as vm:
        at = vm.wait_for("e2e-step 0: hang trial scheduled", 600, what="the trial scheduled").end()
        at = vm.wait_for(f"Loading lockgate {V2} from root slot b", 240, start=at,
                         what="GRUB loading the v2 trial").end()
        frozen = vm.wait_for("e2e-hang: watchdog active; freezing PID 1", 400, start=at,
                             what="PID 1 frozen with the watchdog armed")
        frozen_at = vm.elapsed
        at = vm.wait_for(f"Loading lockgate {v1} from root slot a", 300, start=frozen.end(),
                         what="the watchdog reset and GRUB loading v1").end()
        reset_s = vm.elapsed - frozen_at
        vm.wait_for(f"lockgate-boot: the trial boot of lockgate {V2} was ROLLED BACK", 400,
                    start=at, what="the rollback on the console")
        vm.wait_for(f"lockgate-boot: running lockgate {v1} \\(slot a\\), the default", 120,
                    start=at, what="v1 running")
    boots = len(re.findall(r"\] Command line: ", vm.console_text))
    print(f"\nhang e2e: {boots} boots in {time.monotonic() - started:.0f} s; "
          f"PID 1 frozen -> GRUB again in {reset_s:.0f} s")
    assert boots == 3
    # GRUB's own save_env leaves an empty "next_entry=" behind after a trial.
    env = dict(line.split("=", 1) for line in slots.grubenv().splitlines())
    assert env.get("saved_entry") == f"lockgate-{v1}" and not env.get("next_entry"), env
