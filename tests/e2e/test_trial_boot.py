"""Trial boots come back by themselves: a broken runtime and a panicking kernel in slot B.

One VM, one disk, six boots (a test-only unit in slot A drives the stages on
the appliance itself, with the product's and Debian's tools):

1. v1 (slot A): a marker on the data partition breaks v2's runtime (slot B
   carries a TEST-ONLY drop-in honouring it); ``grub-reboot lockgate-<v2>``.
2. v2, trial: ``lockgate.service`` crash-loops; the boot check records the
   failure and reboots.
3. v1: says the trial was ROLLED BACK (console and ``lockgate system status``);
   writes slot B's entry again with ``init=/bin/false`` (``install_entry`` on the
   real FAT ESP) and schedules the trial with ``schedule_trial``.
4. v2, trial: the kernel panics ("Attempted to kill init"), panic=10 reboots.
5. v1: says the trial was ROLLED BACK; repairs slot B's entry, removes the
   marker, ``grub-reboot lockgate-<v2>`` again.
6. v2, trial: healthy; the boot check makes it the default.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from slot_tools import STEP_PRELUDE, SlotDisk, sh, step_unit

from lockgate.image.boot.overlay import resolve_image
from lockgate.image.boot.vm import Vm, booted

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(3600)]

V2 = "0.2.0-trial"
BREAK = "/var/lib/lockgate/e2e-break-runtime"
# TEST ONLY, written into the test's copy of slot B: v2's runtime fails while BREAK exists.
BROKEN_RUNTIME = ("# TEST ONLY (tests/e2e/test_trial_boot.py): not part of any image.\n"
                  f"[Service]\nExecStartPre=/bin/sh -c '! test -e {BREAK}'\n")
PYTHON = "/opt/lockgate/bin/python"


def step_script(v1: str, fs_uuid: str, partuuid: str, cmdline: str) -> str:
    def entry(extra: str) -> str:
        words = f"{cmdline} {extra}".strip()
        return (f"{PYTHON} -c 'from pathlib import Path; from lockgate.runtime.system import boot; "
                f'boot.install_entry(Path("/boot/efi"), "b", "{V2}", "{fs_uuid}", '
                f'"{partuuid}", "{words}")\'')
    status = f"{PYTHON} -m lockgate.runtime.system.health status | sed 's/^/e2e-status: /'"
    return STEP_PRELUDE + f"""
case "$stage" in
0)
    next 1
    touch {BREAK}
    grub-reboot lockgate-{V2}
    echo "e2e-step 0: grub-reboot: $(grub-editenv list | tr '\\n' ' ')"
    systemctl --no-block reboot ;;
1)
    next 2
    {status}
    {entry("init=/bin/false")}
    {PYTHON} -c 'from lockgate.runtime.system import boot; boot.schedule_trial("lockgate-{V2}")'
    echo "e2e-step 1: panic trial scheduled: $(grub-editenv list | tr '\\n' ' ')"
    systemctl --no-block reboot ;;
2)
    next 3
    {status}
    {entry("")}
    rm -f {BREAK}
    grub-reboot lockgate-{V2}
    echo "e2e-step 2: healthy trial scheduled on lockgate {v1}"
    systemctl --no-block reboot ;;
esac
"""


class Timeline:
    """Console milestones in order, with QEMU-relative times for the report."""

    def __init__(self, vm: Vm) -> None:
        self.vm, self.at = vm, 0
        self.marks: list[tuple[float, str]] = []

    def expect(self, pattern: str, timeout: float, what: str) -> re.Match[str]:
        match = self.vm.wait_for(pattern, timeout, start=self.at, what=what)
        self.at = match.end()
        self.marks.append((round(self.vm.elapsed, 1), what))
        return match


def test_broken_and_panicking_trials_roll_back_and_a_healthy_one_commits(
        appliance_image: Path, console_log: Path, tmp_path: Path) -> None:
    disk = tmp_path / "trial.raw"
    sh("cp", "--sparse=always", resolve_image(appliance_image), disk)
    slots = SlotDisk(disk, tmp_path)
    v1, _ = slots.slot_a_entry()
    slot_b = slots.make_slot_b(V2, {
        "/etc/systemd/system/lockgate.service.d/e2e-broken.conf": (BROKEN_RUNTIME, 0o644)})
    slots.enable_unit(slots.slot_a_target(), "lockgate-e2e-step.service",
                      step_unit("e2e: drive the trial-boot stages"),
                      {"/usr/local/sbin/lockgate-e2e-step":
                       (step_script(v1, slot_b.fs_uuid, slot_b.partuuid, slot_b.cmdline), 0o755)})
    started = time.monotonic()
    with booted(disk, cloud="nocloud", firmware="bios", console_log=console_log, persist=True,
                user_data=b"accept_license=y", powerdown_timeout=20) as vm:
        t = Timeline(vm)
        # 1: v1 schedules a trial of v2 with Debian's grub-reboot.
        t.expect(f"Loading lockgate {v1} from root slot a", 180, "boot 1: GRUB loads v1")
        t.expect(rf"e2e-step 0: grub-reboot: saved_entry=lockgate-{v1} next_entry=lockgate-{V2}",
                 400, "boot 1: grub-reboot ran on the appliance")
        # 2: the trial crash-loops and is given up.
        t.expect(f"Loading lockgate {V2} from root slot b", 180, "boot 2: GRUB loads the v2 trial")
        t.expect(r"Command line:.*lockgate.slot=b lockgate.trial=1", 120,
                 "boot 2: the kernel is told it is a trial")
        t.expect(f"lockgate-boot: trial of lockgate {V2} FAILED: lockgate.service is "
                 f"crash-looping.*rebooting into lockgate {v1}", 400,
                 "boot 2: the boot check gives the trial up")
        # 3: back on v1 by itself, and it says so.
        t.expect(f"Loading lockgate {v1} from root slot a", 180, "boot 3: GRUB loads v1")
        t.expect(f"lockgate-boot: the trial boot of lockgate {V2} was ROLLED BACK: "
                 "lockgate.service is crash-looping", 300, "boot 3: the rollback is on the console")
        t.expect(f"lockgate-boot: running lockgate {v1} \\(slot a\\), the default", 60,
                 "boot 3: v1 runs")
        t.expect(f"e2e-status: last trial: lockgate-{V2}: ROLLED BACK", 200,
                 "boot 3: system status says so")
        t.expect("e2e-step 1: panic trial scheduled: "
                 f"saved_entry=lockgate-{v1} next_entry=lockgate-{V2}", 200,
                 "boot 3: install_entry + schedule_trial of a panicking v2")
        # 4: the trial's kernel panics; panic=10 resets the machine.
        t.expect(f"Loading lockgate {V2} from root slot b", 180, "boot 4: GRUB loads the v2 trial")
        t.expect(r"Kernel panic - not syncing", 180, "boot 4: the kernel panics")
        # 5: back on v1, which says so.
        t.expect(f"Loading lockgate {v1} from root slot a", 120, "boot 5: GRUB loads v1")
        t.expect(f"lockgate-boot: the trial boot of lockgate {V2} was ROLLED BACK: the trial "
                 "boot did not come up", 300, "boot 5: the rollback is on the console")
        t.expect(f"e2e-status: running: +lockgate {v1} \\(slot a", 200,
                 "boot 5: system status names v1")
        t.expect("e2e-step 2: healthy trial scheduled", 200, "boot 5: a healthy v2 trial")
        # 6: the healthy trial becomes the default.
        t.expect(f"Loading lockgate {V2} from root slot b", 180, "boot 6: GRUB loads the v2 trial")
        t.expect(f"lockgate-boot: lockgate {V2} is healthy after \\d+ s; it is now the default",
                 400, "boot 6: the trial is committed")
    total = time.monotonic() - started
    assert slots.grubenv() == f"saved_entry=lockgate-{V2}\n"
    # One per kernel start ("Loading lockgate" shows twice per boot: serial and VGA-on-serial).
    boots = len(re.findall(r"\] Command line: ", vm.console_text))
    print(f"\ntrial-boot e2e: {boots} boots in {total:.0f} s")
    for when, what in t.marks:
        print(f"  [{when:7.1f} s] {what}")
    assert boots == 6
