"""Power cuts during ``upgrade`` and a broken version's trial, on a real appliance under QEMU.

Shared by the upgrade benchmark (``make bench``: >= 20 cut points) and the e2e
tests (a quick subset). One persistent disk; each cut is a SIGKILL of QEMU at
a point chosen from what the guest says, never from a sleep:

* ``write-<N>``: while ``upgrade`` writes the inactive slot, when its progress
  line (every 10 %) reaches N %;
* ``pause:<point>``: a TEST-ONLY wrapper (:data:`PAUSE_WRAPPER`, copied onto
  the data partition) runs the product's own ``upgrade`` command and stops at
  one step of the GRUB/record update (before/after a function, a slot entry's
  temp file written but not renamed, the grubenv block written but not
  fsynced); the host cuts the power while it waits there;
* ``trial:<marker>``: ``upgrade`` runs to its reboot; the cut falls during the
  trial boot, before the commit (GRUB loading it, the kernel started, the boot
  check waiting for health).

After each cut QEMU starts again on the same disk and the boot is checked:
the boot check's console line, the version running (``rollback-helper
--json``) among the ones allowed for that point, the REST API answering, and
the pool made over REST before the first cut still there. A boot that lands
in the new version (its trial committed) is rolled back with ``rollback
--yes`` so the next cut starts from the old version again.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockgate import proc
from lockgate.errors import Failure

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lockgate.image.boot.vm import Vm

MIB = 1024 * 1024
BOOT_TIMEOUT = 900.0  # one guest boot under TCG on a busy 2-core host
UPGRADE_TIMEOUT = 1200.0
DATA = "/var/lib/lockgate"
WRAPPER = f"{DATA}/powercut-upgrade.py"
BUNDLE = f"{DATA}/powercut.upgrade"
GUEST_PYTHON = "/opt/lockgate/bin/python"
POOL = "powercut-pool"
CONFIG = "config/active"
SSH_OPTIONS = ("-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o",
               "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
               "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=10",
               "-o", "IdentitiesOnly=yes")
# What the boot check (lockgate-boot-commit.service) says once it knows how this boot went.
BOOT_VERDICT = re.compile(
    r"lockgate-boot: (?:running lockgate (?P<running>\S+) \(slot (?P<slot>[ab])\)"
    r"|lockgate (?P<committed>\S+) is healthy after \d+ s"
    r"|trial of lockgate (?P<failed>\S+) FAILED[^\n]*)")
KERNEL_START = re.compile(r"\] Command line: ")

# TEST/BENCH ONLY: copied onto a test appliance's data partition, never into an image.
PAUSE_WRAPPER = '''"""TEST/BENCH ONLY (lockgate.benchmarks.powercut): the product's own `upgrade`
command, stopped at one step so the host can cut the power there. Not part of any image."""
import os
import sys
import time

from lockgate.runtime.system import boot, configs, upgrade

POINT = sys.argv[1]


def pause(name):
    if name == POINT:
        print(f"powercut-pause: {name}", flush=True)
        time.sleep(900)
        raise SystemExit(f"powercut: paused at {name} but the power was not cut")


def around(module, attr, name):
    real = getattr(module, attr)

    def wrapped(*args, **kwargs):
        pause(f"before-{name}")
        result = real(*args, **kwargs)
        pause(f"after-{name}")
        return result

    setattr(module, attr, wrapped)


around(upgrade, "_forget_slot", "forget-slot")
around(configs, "copy_for", "copy-config")
around(boot, "install_entry", "install-entry")
around(boot, "write_trial_record", "trial-record")
around(boot, "schedule_trial", "schedule-trial")
real_replace, real_pwrite = os.replace, os.pwrite


def replace(src, dst, *args, **kwargs):
    if str(dst).endswith(".cfg"):
        pause("entry-temp-written")
    return real_replace(src, dst, *args, **kwargs)


def pwrite(fd, data, offset):
    written = real_pwrite(fd, data, offset)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = ""
    if target.endswith("/grubenv"):
        pause("grubenv-unflushed")
    return written


os.replace, os.pwrite = replace, pwrite

from lockgate.runtime.system.cli import upgrade as command  # noqa: E402

command.main(args=sys.argv[2:], prog_name="upgrade")
'''


@dataclass(frozen=True)
class CutPoint:
    """Where the power goes: ``kind`` write (``at`` a percentage), pause (a wrapper
    point) or trial (a console marker of the trial boot); ``lands`` the versions the
    next boot may run: "old", "new" or both."""

    name: str
    kind: str
    at: str
    lands: tuple[str, ...] = ("old",)
    # The slot entry was written before the cut: the new version must be listed as
    # installed after it (a 0-byte slot-b.cfg on the FAT ESP was once what was left).
    entry_written: bool = False


PROGRESS = re.compile(r"writing slot [ab]: +(\d+)% ")


def reached_percent(percent: int) -> Callable[[str], bool]:
    """The first progress line at ``percent`` or more (``upgrade`` prints one line per 10 %
    step, at the first block in that step: 0 means its first line)."""
    def reached(line: str) -> bool:
        match = PROGRESS.search(line)
        return match is not None and int(match[1]) >= percent
    return reached


def write_point(percent: int) -> CutPoint:
    return CutPoint(f"write-{percent}%", "write", str(percent))


ENTRY_WRITTEN = ("after-install-entry", "before-trial-record", "after-trial-record",
                 "grubenv-unflushed", "before-schedule-trial", "after-schedule-trial")


def pause_point(at: str, lands: tuple[str, ...] = ("old",)) -> CutPoint:
    return CutPoint(f"pause:{at}", "pause", at, lands, at in ENTRY_WRITTEN)


def trial_point(name: str, marker: str) -> CutPoint:
    return CutPoint(f"trial:{name}", "trial", marker)


# Console markers of the trial boot, in order; {v} is the new version (escaped).
TRIAL_GRUB = r"Loading lockgate {v} from root slot [ab]"
TRIAL_KERNEL = r"Command line:[^\n]*lockgate\.trial=1"
TRIAL_WAITING = r"lockgate-boot: trial boot of lockgate {v} \(slot [ab]\): waiting"

QUICK_POINTS = (
    write_point(50),
    pause_point("after-install-entry"),
    trial_point("waiting-for-health", TRIAL_WAITING),
)

# 20 points: each costs a boot (two when it lands in the new version, which is then rolled
# back) and most a whole slot write, a few minutes under TCG.
FULL_POINTS = (
    *(write_point(p) for p in (0, 10, 30, 50, 70, 90, 100)),
    pause_point("before-forget-slot"),
    pause_point("after-forget-slot"),
    pause_point("before-copy-config"),
    pause_point("after-copy-config"),
    pause_point("before-install-entry"),
    pause_point("entry-temp-written"),
    pause_point("after-install-entry"),
    pause_point("after-trial-record"),
    # The grubenv block written but not flushed: either block is a good outcome.
    pause_point("grubenv-unflushed", ("old", "new")),
    # Everything written, power lost before the reboot: the next boot is the trial.
    pause_point("after-schedule-trial", ("new",)),
    trial_point("grub", TRIAL_GRUB),
    trial_point("kernel", TRIAL_KERNEL),
    trial_point("waiting-for-health", TRIAL_WAITING),
)


@dataclass
class Outcome:
    point: str
    version: str
    slot: str
    good: bool
    boot_s: float
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"point": self.point, "version": self.version, "slot": self.slot,
                "good": self.good, "boot_s": round(self.boot_s, 1), "note": self.note}


# ---------------------------------------------------------------- bundles from a disk

def partitions(disk: Path) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) in bytes, from the disk's GPT."""
    table = json.loads(proc.output(["sfdisk", "--json", disk], timeout=60))["partitiontable"]
    return {str(p["name"]): (int(p["start"]) * 512, int(p["size"]) * 512)
            for p in table["partitions"]}


def _copy_bytes(src: Path, src_offset: int, dst: Path, dst_offset: int, length: int) -> None:
    proc.run(["dd", f"if={src}", f"of={dst}", "bs=4M", "iflag=skip_bytes,count_bytes",
              "oflag=seek_bytes", f"skip={src_offset}", f"seek={dst_offset}", f"count={length}",
              "conv=notrunc,sparse", "status=none"], timeout=600)


def _debugfs(target: str | Path, work: Path, requests: list[str]) -> None:
    script = work / "debugfs.cmds"
    script.write_text("\n".join(requests) + "\n")
    proc.run(["debugfs", "-w", "-f", script, target], capture=True, timeout=300)


def put_files(target: str | Path, work: Path, files: dict[str, tuple[str, int]]) -> None:
    """Write ``path -> (text, mode)`` into an ext4 (a file, or ``disk?offset=N``) with
    debugfs: no mount, no loop device. Parent folders are made."""
    requests: list[str] = []
    for n, (path, (text, mode)) in enumerate(sorted(files.items())):
        local = work / f"put-{n}"
        local.write_text(text)
        local.chmod(mode)
        parts = Path(path).parent.parts[1:]
        for i in range(1, len(parts) + 1):
            requests.append(f"mkdir /{'/'.join(parts[:i])}")  # fails harmlessly if there
        requests += [f"rm {path}", f"write {local} {path}"]
    _debugfs(target, work, requests)


def slot_a_cmdline(disk: Path, work: Path) -> str:
    """The profile's kernel command line words from slot A's GRUB entry on the ESP."""
    esp, _ = partitions(disk)["ESP"]
    local = work / "slot-a.cfg"
    proc.run(["mcopy", "-o", "-i", f"{disk}@@{esp}", "::/grub/slot-a.cfg", local],
             env={"MTOOLS_SKIP_CHECK": "1"}, timeout=60)
    match = re.search(r"linux /boot/vmlinuz root=PARTUUID=\S+ (.*)", local.read_text())
    if not match:
        raise Failure(f"{disk}: slot A's GRUB entry has no linux line")
    return " ".join(w for w in match[1].split() if not w.startswith("lockgate."))


def derive_bundle(disk: Path, work: Path, version: str, key: Ed25519PrivateKey, *,
                  files: dict[str, tuple[str, int]] | None = None) -> Path:
    """A signed bundle of version ``version`` made from ``disk``'s slot A root filesystem:
    a new filesystem UUID, ``/etc/lockgate/release.json`` saying ``version``, ``files``
    added (what makes a deliberately broken version, say). The build's own writer
    (:func:`lockgate.image.formats.upgrade.write_bundle`) signs it."""
    from lockgate.image.formats.upgrade import write_bundle

    offset, size = partitions(disk)["root-a"]
    rootfs = work / f"rootfs-{version}.ext4"
    rootfs.unlink(missing_ok=True)
    _copy_bytes(disk, offset, rootfs, 0, size)
    fs_uuid = str(uuid.uuid4())
    checked = proc.run(["e2fsck", "-fy", rootfs], check=False, capture=True, timeout=600)
    if checked.returncode not in (0, 1):  # 1: corrected, fine for a copy
        raise Failure(f"e2fsck of slot A's copy failed (exit {checked.returncode})")
    proc.run(["tune2fs", "-U", fs_uuid, rootfs], capture=True, timeout=120)
    release = json.dumps({"architecture": "amd64", "version": version})
    put_files(rootfs, work, {"/etc/lockgate/release.json": (release, 0o644), **(files or {})})
    target = work / f"lockgate-{version}.upgrade"
    write_bundle(target, version=version, rootfs=rootfs, fs_uuid=fs_uuid, kernel="derived",
                 kernel_cmdline=slot_a_cmdline(disk, work), source_date_epoch=0,
                 signing_key=key, work_dir=work)
    rootfs.unlink()
    return target


def broken_runtime_files(version: str) -> dict[str, tuple[str, int]]:
    """TEST/BENCH ONLY: a drop-in that keeps the runtime from ever starting (a version
    whose trial must fail), written into a derived bundle's root filesystem."""
    text = (f"# TEST/BENCH ONLY (lockgate.benchmarks.powercut): version {version} is broken "
            "on purpose.\n[Service]\nExecStartPre=/bin/false\n")
    return {"/etc/systemd/system/lockgate.service.d/broken-on-purpose.conf": (text, 0o644)}


def trust_key(disk: Path, work: Path, key: Ed25519PrivateKey, name: str = "powercut") -> None:
    """Bake ``key``'s public half into slot A's trusted keys (a test's copy of a disk)."""
    from lockgate.runtime.system.keys import public_pem

    offset, _ = partitions(disk)["root-a"]
    put_files(f"{disk}?offset={offset}", work,
              {f"/etc/lockgate/trusted-keys.d/{name}.pub":
               (public_pem(key.public_key()).decode(), 0o644)})


# ---------------------------------------------------------------- the appliance

class Appliance:
    """One persistent appliance disk booted again and again (ec2 metadata, a fixed
    instance id so first boot runs once, SSH as admin with a key made for the run)."""

    def __init__(self, disk: Path, work: Path, logs: Path, old: str, new: str,
                 say: Callable[[str], None] = print, name: str = "powercut") -> None:
        self.disk, self.work, self.logs, self.name = disk, work, logs, name
        self.old, self.new = old, new
        self.say = say
        self.password = "Powercut-" + secrets.token_urlsafe(10)
        self.instance = "i-powercut" + secrets.token_hex(4)
        self.key = work / "id_powercut"
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lockgate-powercut",
                  "-f", self.key], capture=True, timeout=60)
        self.public = (work / "id_powercut.pub").read_text().strip()
        self.qemu_starts = 0
        self.outcomes: list[Outcome] = []
        self.log_files: list[Path] = []

    # --- VMs and guest commands ----------------------------------------------------

    @contextlib.contextmanager
    def boot(self) -> Iterator[Vm]:
        from lockgate.image.boot.console import BootError
        from lockgate.image.boot.vm import booted

        self.qemu_starts += 1
        log = self.logs / f"{self.name}-{self.qemu_starts:02d}.log"
        self.log_files.append(log)
        with booted(self.disk, cloud="ec2", firmware="bios", persist=True,
                    ssh_key=self.public, instance_id=self.instance,
                    user_data=f"password={self.password} accept_license=y",
                    forwards=[(0, 22)], console_log=log, quiet_timeout=BOOT_TIMEOUT,
                    powerdown_timeout=60) as vm:
            try:
                yield vm
            except BootError as exc:
                raise Failure(f"{exc}\nconsole tail:\n{vm.console_text[-3000:]}") from exc

    def ssh_argv(self, vm: Vm, command: str) -> list[str]:
        return ["ssh", *SSH_OPTIONS, "-i", str(self.key), "-p", str(vm.ports[22]),
                "admin@127.0.0.1", command]

    def guest(self, vm: Vm, command: str, *, input: bytes | None = None,
              timeout: float = 300, wait: float = 300) -> str:
        """``command``'s stdout as admin; retried (bounded by ``wait``) while sshd comes up."""
        deadline = time.monotonic() + wait
        while True:
            done = proc.run(self.ssh_argv(vm, command), check=False, capture=True,
                            input=input, timeout=timeout)
            if done.returncode == 0:
                return done.stdout.decode(errors="replace")
            if time.monotonic() >= deadline or vm.process.poll() is not None:
                err = done.stderr.decode(errors="replace").strip()
                raise Failure(f"powercut: {command[:80]!r} in the VM failed (exit "
                              f"{done.returncode}): {err[-300:]}\nconsole tail:\n"
                              f"{vm.console_text[-3000:]}")
            time.sleep(5)

    def wait_console(self, vm: Vm, pattern: str | re.Pattern[str], start: int,
                     what: str, timeout: float = BOOT_TIMEOUT) -> re.Match[str]:
        from lockgate.image.boot.console import BootError

        try:
            return vm.wait_for(pattern, timeout, start=start, what=what)
        except BootError as exc:
            raise Failure(f"powercut: {exc}\nconsole tail:\n{vm.console_text[-3000:]}") from exc

    def cut_power(self, vm: Vm) -> None:
        """SIGKILL the emulator: the guest loses whatever it had not written to its disk."""
        vm.process.popen.kill()
        vm.process.popen.wait(timeout=30)

    # --- the steps --------------------------------------------------------------------

    def setup(self, vm: Vm, bundles: dict[str, Path]) -> None:
        """First boot: the pool over REST, the bundles and the pause wrapper onto the data
        partition."""
        from lockgate.image.boot import probe

        vm.wait_ready(BOOT_TIMEOUT)
        pin = probe.fingerprint(vm, 9070, deadline=BOOT_TIMEOUT)
        pool = {"properties": {"basic": {"nodes_table": [{"node": "192.0.2.7:8080",
                                                          "weight": 3}]}}}
        made = probe.rest(vm, "PUT", f"{CONFIG}/pools/{POOL}", user="admin",
                          password=self.password, pin=pin, body=pool, deadline=120)
        if made.status not in (200, 201):
            raise Failure(f"powercut: making the pool over REST: {made.status} "
                          f"{made.text()[:200]}")
        self.guest(vm, f"sudo -n tee {WRAPPER} >/dev/null", input=PAUSE_WRAPPER.encode())
        for remote, local in bundles.items():
            self.say(f"powercut: copying {local.name} ({local.stat().st_size / MIB:.0f} MiB) "
                     "into the VM")
            # synced: a cut seconds later must not take the bundle with it
            self.guest(vm, f"sudo -n tee {remote} >/dev/null && sync -f {remote}",
                       input=local.read_bytes(), timeout=1200)

    def check_boot(self, vm: Vm, start: int, allowed: tuple[str, ...], point: str,
                   started: float, expect_rollback: bool = False,
                   entry_written: bool = False) -> Outcome:
        """The boot after a cut: the boot check's verdict, the version running, REST
        answering with the pool made before the cuts."""
        from lockgate.image.boot import probe

        verdict = self.wait_console(vm, BOOT_VERDICT, start, f"{point}: the boot check's verdict")
        if verdict["failed"]:
            raise Failure(f"powercut: {point}: the boot after the cut failed its trial: "
                          f"{verdict[0]}\nconsole tail:\n{vm.console_text[-3000:]}")
        notes = []
        if expect_rollback:
            self.wait_console(vm, rf"lockgate-boot: the trial boot of lockgate "
                                  rf"{re.escape(self.new)} was ROLLED BACK", start,
                              f"{point}: the rollback said on the console", 60)
            notes.append("rolled back")
        versions = json.loads(self.guest(vm, "sudo -n rollback-helper --json", wait=BOOT_TIMEOUT))
        running = [v for v in versions if v.get("running")]
        if len(running) != 1:
            raise Failure(f"powercut: {point}: rollback-helper shows {versions}")
        version, slot = str(running[0]["version"]), str(running[0]["slot"])
        if entry_written and self.new not in {str(v.get("version")) for v in versions}:
            raise Failure(f"powercut: {point}: the cut came after {self.new}'s GRUB entry was "
                          f"written, but it is not installed now: {versions}")
        want = {"old": self.old, "new": self.new}
        if version not in {want[a] for a in allowed}:
            raise Failure(f"powercut: {point}: the boot after the cut runs {version} (slot "
                          f"{slot}); expected {' or '.join(want[a] for a in allowed)}")
        pin = probe.fingerprint(vm, 9070, deadline=BOOT_TIMEOUT)
        got = probe.rest(vm, "GET", f"{CONFIG}/pools/{POOL}", user="admin",
                         password=self.password, pin=pin, deadline=300)
        if got.status != 200 or "192.0.2.7:8080" not in got.text():
            raise Failure(f"powercut: {point}: the pool made before the cut is not there on "
                          f"{version}: {got.status} {got.text()[:200]}")
        outcome = Outcome(point, version, slot, True, time.monotonic() - started,
                          ", ".join(notes))
        self.outcomes.append(outcome)
        self.say(f"powercut: {point}: next boot runs {version} (slot {slot}), REST answers, "
                 f"pool intact ({outcome.boot_s:.0f} s){' - ' + outcome.note if notes else ''}")
        return outcome

    def upgrade_until(self, vm: Vm, command: str, marker: Callable[[str], bool], what: str,
                      point: str) -> None:
        """Run ``command`` over SSH and cut the power at its first output line ``marker``
        accepts (``what`` names it)."""
        ssh = proc.spawn(self.ssh_argv(vm, command))
        assert ssh.stdin is not None and ssh.stdout is not None
        ssh.stdin.close()
        out = ssh.stdout
        lines: list[str] = []
        seen = threading.Event()

        def read() -> None:
            for raw in out:
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                if marker(line):
                    seen.set()
                    return
            seen.set()  # EOF: the command ended without the marker

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        seen.wait(UPGRADE_TIMEOUT)
        hit = bool(lines) and marker(lines[-1])
        if hit:
            self.cut_power(vm)
        ssh.kill()
        err = ssh.stderr.read().decode(errors="replace") if ssh.stderr else ""
        ssh.wait(timeout=30)
        reader.join(timeout=10)
        if not hit:
            raise Failure(f"powercut: {point}: {what} never showed in the upgrade's "
                          f"output:\n" + "\n".join(lines[-15:]) + f"\n{err.strip()[-500:]}")

    def cut(self, vm: Vm, point: CutPoint, bundle: str) -> None:
        """Cut the power at ``point`` during an upgrade from the old version."""
        self.say(f"powercut: {point.name}: upgrading, the power goes at that point")
        env = "env PYTHONUNBUFFERED=1"
        if point.kind == "write":
            self.upgrade_until(vm, f"sudo -n {env} upgrade {bundle} --no-restart",
                               reached_percent(int(point.at)),
                               f"a progress line at {point.at}% or more", point.name)
        elif point.kind == "pause":
            line = f"powercut-pause: {point.at}"
            self.upgrade_until(
                vm, f"sudo -n {env} {GUEST_PYTHON} {WRAPPER} {shlex.quote(point.at)} {bundle} "
                    "--no-restart", lambda said: said == line, repr(line), point.name)
        else:
            mark = len(vm.console_text)
            done = proc.run(self.ssh_argv(vm, f"sudo -n upgrade {bundle}"), check=False,
                            capture=True, timeout=UPGRADE_TIMEOUT)
            said = done.stdout.decode(errors="replace")
            if done.returncode not in (0, 255) or "ready in" not in said:
                raise Failure(f"powercut: {point.name}: upgrade failed (exit {done.returncode}):"
                              f" {said[-500:]} {done.stderr.decode(errors='replace')[-500:]}")
            grub = self.wait_console(vm, TRIAL_GRUB.format(v=re.escape(self.new)), mark,
                                     f"{point.name}: GRUB loading the trial")
            self.wait_console(vm, point.at.format(v=re.escape(self.new)), grub.start(),
                              f"{point.name}: the trial boot's marker")
            self.cut_power(vm)

    def back_to_old(self, vm: Vm, point: str) -> None:
        """The boot after the cut runs the new version: ``rollback --yes`` to the old one."""
        mark = len(vm.console_text)
        done = proc.run(self.ssh_argv(vm, "sudo -n rollback --yes"), check=False, capture=True,
                        timeout=300)
        if done.returncode not in (0, 255):
            raise Failure(f"powercut: {point}: rollback failed: "
                          f"{done.stderr.decode(errors='replace')[-300:]}")
        self.wait_console(vm, rf"lockgate-boot: running lockgate {re.escape(self.old)} "
                              r"\(slot [ab]\)", mark, f"{point}: back on {self.old}")

    def boots(self) -> int:
        """Kernel starts over every QEMU run so far."""
        total = 0
        for log in self.log_files:
            with contextlib.suppress(OSError):
                total += len(KERNEL_START.findall(log.read_text(errors="replace")))
        return total


@dataclass
class PowercutReport:
    runs: int = 0
    good_boots: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    qemu_starts: int = 0
    kernel_boots: int = 0


def run_cuts(app: Appliance, points: tuple[CutPoint, ...], bundle: Path, *,
             extra: dict[str, Path] | None = None, report: PowercutReport | None = None,
             then: Callable[[Vm], None] | None = None) -> PowercutReport:
    """Every point in turn on one disk: cut, boot again, check. ``extra`` bundles (remote
    path -> local file) are copied in at the first boot too; ``then`` runs in the last
    boot. ``report`` fills as it goes (a caller keeps what was measured before a failure)."""
    started = time.monotonic()
    report = report or PowercutReport()
    pending = list(points)
    previous: CutPoint | None = None
    try:
        while True:
            with app.boot() as vm:
                boot_started = time.monotonic()
                if previous is None:
                    app.setup(vm, {BUNDLE: bundle, **(extra or {})})
                else:
                    report.runs += 1
                    outcome = app.check_boot(vm, 0, previous.lands, previous.name, boot_started,
                                             expect_rollback=previous.kind == "trial",
                                             entry_written=previous.entry_written)
                    report.good_boots += outcome.good
                    report.outcomes.append(outcome)
                    if outcome.version == app.new and (pending or then):
                        app.back_to_old(vm, previous.name)
                if not pending:
                    if then:
                        then(vm)
                    break
                previous = pending.pop(0)
                app.cut(vm, previous, BUNDLE)
    finally:
        report.seconds = time.monotonic() - started
        report.qemu_starts = app.qemu_starts
        report.kernel_boots = app.boots()
    return report


def upgrade_and_commit(app: Appliance, vm: Vm, bundle: str, version: str) -> None:
    """A whole ``upgrade`` with its reboot; wait until the trial is the default."""
    mark = len(vm.console_text)
    done = proc.run(app.ssh_argv(vm, f"sudo -n upgrade {bundle}"), check=False, capture=True,
                    timeout=UPGRADE_TIMEOUT)
    if done.returncode not in (0, 255):
        raise Failure(f"upgrade to {version} failed (exit {done.returncode}): "
                      f"{done.stderr.decode(errors='replace')[-500:]}")
    app.wait_console(vm, rf"lockgate-boot: lockgate {re.escape(version)} is healthy after "
                         r"\d+ s; it is now the default", mark, f"{version} committed")


def broken_trial(app: Appliance, vm: Vm, bundle: str, broken: str, good: str) -> tuple[int, int]:
    """``upgrade`` to the broken version in the running VM; wait until ``good`` runs again by
    itself. Returns the kernel boots from the upgrade's reboot to ``good`` running again, and
    the console offset where that boot began."""
    mark = len(vm.console_text)
    done = proc.run(app.ssh_argv(vm, f"sudo -n upgrade {bundle}"), check=False, capture=True,
                    timeout=UPGRADE_TIMEOUT)
    said = done.stdout.decode(errors="replace")
    if done.returncode not in (0, 255) or f"upgrade to {broken} ready in" not in said:
        raise Failure(f"broken trial: upgrade to {broken} failed (exit {done.returncode}): "
                      f"{said[-500:]} {done.stderr.decode(errors='replace')[-500:]}")
    app.wait_console(vm, rf"Loading lockgate {re.escape(broken)} from root slot [ab]", mark,
                     f"GRUB loading the {broken} trial")
    failed = app.wait_console(vm, rf"lockgate-boot: trial of lockgate {re.escape(broken)} FAILED",
                              mark, f"the boot check giving {broken} up")
    app.say(f"broken trial: {failed[0]}")
    grub = app.wait_console(vm, rf"Loading lockgate {re.escape(good)} from root slot [ab]",
                            failed.end(), f"GRUB loading {good} again")
    back = app.wait_console(vm, rf"lockgate-boot: running lockgate {re.escape(good)} "
                                r"\(slot [ab]\)", grub.end(), f"{good} running again")
    return len(KERNEL_START.findall(vm.console_text, mark, back.end())), grub.start()
