"""Upgrade: applying a signed bundle in the appliance VM, against a plain decompress-and-write.

Two builds beside ``build_dir`` (``.bench-upgrade-v1`` / ``-v2``, the cached
package layers reused; a key pair made for the run): v1 as a raw disk that
trusts the key, v2 as the signed bundle and a qcow2 (for the size goal:
``bundle_mib`` against ``qcow2_mib``, goal bundle <= 1.3x qcow2). v1 boots
under QEMU (a throw-away overlay); the bundle goes onto its data partition over
SSH. Then, in the same VM and the same run, timed inside the guest:

* ``upgrade_apply_s``: ``lockgate system upgrade FILE --no-restart``, start to
  exit (checks, verified write of the inactive slot, configuration copy, GRUB
  entry, trial scheduled; Python start-up included);
* the baseline: ``dd`` of the same compressed payload out of the bundle ``|
  zstd -dc | dd of=<the same slot> conv=fsync`` — no checks at all.

``upgrade_apply_ratio`` is the first over the second (goal <= 1.5). The
upgrade runs first (it reads the bundle cold); the baseline finds it in the page
cache, which only favours the baseline.

Then, on a fresh raw copy of v1's disk (``lockgate.benchmarks.powercut``):

* ``powercut_runs`` / ``powercut_good_boots``: QEMU killed at each of the
  :data:`~lockgate.benchmarks.powercut.FULL_POINTS` (slot write at 0-100 %,
  every step of the GRUB entry/environment and record update, the trial boot
  before its commit), each followed by a boot that must run a good version with
  the REST API answering and the pool made before the cuts (goal: equal);
* ``rollback_boots``: in the last boot v2 is installed and committed, then a
  deliberately broken 3 (v1's root filesystem with a BENCH-ONLY drop-in that
  keeps the runtime from starting, signed with the run's key) goes in through
  ``upgrade``; the kernel boots until v2 runs again by itself (goal <= 2).
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

from lockgate import proc
from lockgate.benchmarks.report import rounded, say
from lockgate.benchmarks.servers import lockgate_argv
from lockgate.errors import Failure

MIB = 1024 * 1024
V1, V2, V3 = "1.0.0-bench", "2.0.0-bench", "3.0.0-bench-broken"
BUILD_TIMEOUT = 45 * 60
BOOT_TIMEOUT = 900.0  # TCG on a busy host
ON_DISK = "/var/lib/lockgate/bench.upgrade"
SSH_OPTIONS = ("-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o",
               "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
               "-o", "ConnectTimeout=30", "-o", "IdentitiesOnly=yes")
# The guest prints the seconds a command took (its own clock: no SSH overhead).
_TOOK = re.compile(r"^bench-took ([0-9.]+)$", re.M)


def _build(version: str, formats: str, out: Path, key: Path) -> None:
    say(f"upgrade: building {version} ({formats}) into {out}")
    proc.run([*lockgate_argv(), "image", "build", "--version", version, "--formats", formats,
              "--out", str(out), "--signing-key", str(key)], capture=True, timeout=BUILD_TIMEOUT)


def _timed(command: str, output: str = "/dev/null") -> str:
    """A guest shell line running ``command`` as root (its output to ``output``) and
    printing how long it took."""
    return (f"s=$(date +%s.%N); sudo -n sh -c '{command}' >{output} 2>&1 "
            f"|| {{ tail -3 {output} >&2; exit 1; }}; "
            "e=$(date +%s.%N); python3 -c \"print('bench-took', $e - $s)\"")


class _Guest:
    def __init__(self, port: int, key: Path) -> None:
        self.port, self.key = port, key

    def argv(self, command: str) -> list[str]:
        return ["ssh", *SSH_OPTIONS, "-i", str(self.key), "-p", str(self.port),
                "admin@127.0.0.1", command]

    def run(self, command: str, *, input: bytes | None = None, timeout: float = 900,
            wait: float = 0) -> str:
        """``command``'s stdout; retried (bounded by ``wait``) while sshd comes up."""
        deadline = time.monotonic() + wait
        while True:
            done = proc.run(self.argv(command), check=False, capture=True, input=input,
                            timeout=timeout)
            if done.returncode == 0:
                return done.stdout.decode(errors="replace")
            if time.monotonic() >= deadline:
                err = done.stderr.decode(errors="replace").strip()
                raise Failure(f"upgrade bench: {command[:60]!r} in the VM failed "
                              f"(exit {done.returncode}): {err[-300:]}")
            time.sleep(5)

    def took(self, command: str) -> float:
        match = _TOOK.search(self.run(_timed(command)))
        if not match:
            raise Failure(f"upgrade bench: no timing from {command[:60]!r}")
        return float(match.group(1))


def run_upgrade(build_dir: Path) -> dict[str, Any]:
    """The JSON fields: upgrade_apply_s, upgrade_apply_baseline_s, upgrade_apply_ratio,
    bundle_mib, qcow2_mib (and the apply's own "ready in" figure); powercut_runs,
    powercut_good_boots, rollback_boots."""
    from lockgate.image.boot.overlay import make_overlay
    from lockgate.image.boot.vm import booted
    from lockgate.runtime.system import bundle as bundles

    for tool in ("ssh", "ssh-keygen"):
        if proc.which(tool) is None:
            raise Failure(f"upgrade bench: {tool} not found (openssh-client)")
    out1, out2 = build_dir / ".bench-upgrade-v1", build_dir / ".bench-upgrade-v2"
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-upgrade-") as tmp_name:
        tmp = Path(tmp_name)
        proc.run([*lockgate_argv(), "image", "keygen", str(tmp / "sign")], capture=True,
                 timeout=60)
        _build(V1, "raw", out1, tmp / "sign.key")
        _build(V2, "upgrade,qcow2", out2, tmp / "sign.key")
        raw, bundle = out1 / f"lockgate-{V1}.raw", out2 / f"lockgate-{V2}.upgrade"
        qcow2 = out2 / f"lockgate-{V2}.qcow2"
        rootfs = bundles.read_header(bundle).rootfs
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lockgate-bench",
                  "-f", str(tmp / "id")], capture=True, timeout=60)
        public = (tmp / "id.pub").read_text().strip()
        disk = make_overlay(raw, tmp)
        result: dict[str, Any] = {
            "bundle_mib": rounded(bundle.stat().st_size / MIB, 1),
            "qcow2_mib": rounded(qcow2.stat().st_size / MIB, 1),
        }
        say("upgrade: booting v1")
        with booted(disk, cloud="ec2", firmware="bios", persist=True, ssh_key=public,
                    user_data=b"password=Bench-Upgrade-7 accept_license=y",
                    forwards=[(0, 22)], console_log=tmp / "console.log",
                    quiet_timeout=BOOT_TIMEOUT, powerdown_timeout=30) as vm:
            vm.wait_ready(BOOT_TIMEOUT)
            guest = _Guest(vm.ports[22], tmp / "id")
            guest.run("true", wait=300)
            guest.run(f"sudo -n tee {ON_DISK} >/dev/null", input=bundle.read_bytes())
            say("upgrade: applying the bundle in the VM")
            out = guest.run(_timed(f"lockgate system upgrade {ON_DISK} --no-restart",
                                   "/tmp/bench-upgrade.out"))
            match = _TOOK.search(out)
            if not match:
                raise Failure("upgrade bench: no timing from the upgrade")
            apply_s = float(match.group(1))
            report = guest.run("cat /tmp/bench-upgrade.out")
            ready = re.search(r"ready in ([0-9.]+) s", report)
            say("upgrade: plain zstd -dc | dd of the same payload into the same slot")
            baseline_s = guest.took(
                f"dd if={ON_DISK} bs=1M iflag=skip_bytes,count_bytes skip={rootfs.offset} "
                f"count={rootfs.size} status=none | zstd -dc | "
                "dd of=/dev/disk/by-partlabel/root-b bs=1M conv=fsync status=none")
        result.update({
            "upgrade_apply_s": rounded(apply_s, 1),
            "upgrade_apply_reported_s": rounded(float(ready[1]), 1) if ready else None,
            "upgrade_apply_baseline_s": rounded(baseline_s, 1),
            "upgrade_apply_ratio": rounded(apply_s / baseline_s, 2) if baseline_s else None,
            "bundle_over_qcow2": rounded(bundle.stat().st_size / qcow2.stat().st_size, 2),
        })
        result.update(_powercuts(raw, bundle, tmp, build_dir / ".bench-upgrade-logs"))
    return result


def _powercuts(raw: Path, bundle: Path, tmp: Path, logs: Path) -> dict[str, Any]:
    """powercut_runs, powercut_good_boots (and the seconds and boots they took),
    rollback_boots; a failure ends the run with what was measured so far and the reason.
    Each QEMU run's console goes to ``logs`` (kept for the reader of a failed run)."""
    from lockgate.benchmarks import powercut
    from lockgate.runtime.system.keys import load_private

    disk = tmp / "powercut.raw"
    proc.run(["cp", "--sparse=always", str(raw), str(disk)], timeout=600)
    say(f"upgrade: making the broken {V3} (v1's root filesystem, the runtime kept from "
        "starting)")
    broken = powercut.derive_bundle(disk, tmp, V3, load_private(tmp / "sign.key"),
                                    files=powercut.broken_runtime_files(V3))
    logs.mkdir(exist_ok=True)
    for old in logs.glob("powercut-*.log"):
        old.unlink()
    app = powercut.Appliance(disk, tmp, logs, V1, V2, say=say)
    report = powercut.PowercutReport()
    rollback: dict[str, Any] = {}
    remote_broken = f"{powercut.DATA}/broken.upgrade"

    def broken_trial(vm: Any) -> None:
        say(f"upgrade: {V2} installed and committed, then the broken {V3}")
        powercut.upgrade_and_commit(app, vm, powercut.BUNDLE, V2)
        # Room on the data partition: v2's bundle out, the broken one in.
        app.guest(vm, f"sudo -n rm -f {powercut.BUNDLE}")
        app.guest(vm, f"sudo -n tee {remote_broken} >/dev/null", input=broken.read_bytes(),
                  timeout=1200)
        started = vm.elapsed
        boots, _ = powercut.broken_trial(app, vm, remote_broken, V3, V2)
        rollback.update(rollback_boots=boots, rollback_s=rounded(vm.elapsed - started, 1))

    say(f"upgrade: {len(powercut.FULL_POINTS)} power cuts during upgrade {V1} -> {V2}")
    error = None
    try:
        powercut.run_cuts(app, powercut.FULL_POINTS, bundle, report=report,
                          then=broken_trial)
    except Failure as exc:
        error = str(exc).splitlines()[0]
        say(f"upgrade: power cuts stopped (consoles: {logs}): {exc}")
    for outcome in report.outcomes:
        say(f"upgrade: cut {outcome.point}: {outcome.version} (slot {outcome.slot}) "
            f"{outcome.boot_s:.0f} s {outcome.note}")
    return {
        "powercut_runs": report.runs,
        "powercut_good_boots": report.good_boots,
        "powercut_s": rounded(report.seconds, 0),
        "powercut_kernel_boots": report.kernel_boots,
        "rollback_boots": rollback.get("rollback_boots"),
        "rollback_s": rollback.get("rollback_s"),
        **({"powercut_error": error} if error else {}),
    }
