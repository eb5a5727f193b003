"""The whole upgrade cycle on one persistent disk, with the product's and Debian's commands.

Two builds signed by one key made for the run (``lockgate image keygen``): v1 as a
raw disk (the key baked in, so v1 trusts it) and v2 as an upgrade bundle, in
``build/upgrade-e2e-v1`` / ``-v2`` (the package layers are cached; only the
key-dependent steps run again). One QEMU process, four boots:

1. v1 with password user-data and an SSH key: a pool (a backend on the host's
   loopback) and a virtual server over REST; the bundle goes in over SSH. A copy
   with one flipped byte is refused by ``sudo upgrade`` with one error line and
   slot B's bytes stay as they were; the good bundle: ``sudo upgrade`` (reboots).
2. v2, trial: becomes the default by itself; ``rollback-helper --json`` says v2
   runs from slot b; the pool made on v1 is there and proxies. ``rollback --yes``.
3. v1 runs again. ``grub-set-default lockgate-<v2>`` + reboot.
4. v2 runs again, the default.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ssh_login import OPTIONS, SSH_PORT, login, make_key, ssh

from lockgate.http import read_url
from lockgate.image.boot import probe
from lockgate.image.boot.overlay import make_overlay
from lockgate.image.boot.vm import Vm, booted
from lockgate.runtime.system import bundle as bundles

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 45 * 60
V1, V2 = "1.0.0-e2e", "2.0.0-e2e"
CONFIG = "config/active"
VS_PORT = 18080
# Under TCG with other VMs on the same 2 cores a boot (and the runtime's start, when
# the console says nothing) can take minutes; a trial waits up to 300 s for health.
BOOT_TIMEOUT = 600.0
QUIET_TIMEOUT = 600.0
ON_DISK = "/var/lib/lockgate/e2e.upgrade"
SLOT_B_SUM = "sudo -n sha256sum /dev/disk/by-partlabel/root-b | cut -d' ' -f1"


def _lockgate(*args: str | Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lockgate", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        pytest.fail(f"lockgate {' '.join(map(str, args[:3]))} failed "
                    f"(exit {proc.returncode}):\n{tail}")


@pytest.fixture(scope="module")
def upgrade_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(v1's raw disk, v2's signed bundle)."""
    if os.geteuid() != 0:
        pytest.skip("building the appliance image needs root (mmdebstrap, chroot)")
    keys = tmp_path_factory.mktemp("upgrade-key") / "e2e"
    _lockgate("image", "keygen", keys)
    out1, out2 = REPO / "build" / "upgrade-e2e-v1", REPO / "build" / "upgrade-e2e-v2"
    # One at a time: the machine has 2 cores and the builds share the package cache.
    _lockgate("image", "build", "--version", V1, "--formats", "raw", "--out", out1,
              "--signing-key", f"{keys}.key")
    _lockgate("image", "build", "--version", V2, "--formats", "upgrade", "--out", out2,
              "--signing-key", f"{keys}.key")
    return out1 / f"lockgate-{V1}.raw", out2 / f"lockgate-{V2}.upgrade"


@pytest.fixture
def backend() -> Iterator[int]:
    """An HTTP server on the host's loopback (the guest reaches it as the host address)."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the e2e backend\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _copy_in(vm: Vm, private: Path, local: Path, remote: str) -> None:
    """The file to ``remote`` (root-owned) through SSH's stdin."""
    with local.open("rb") as src:
        done = subprocess.run(
            ["ssh", *OPTIONS, "-o", "IdentitiesOnly=yes", "-i", str(private), "-p",
             str(vm.ports[SSH_PORT]), "admin@127.0.0.1", f"sudo -n tee {remote} >/dev/null"],
            stdin=src, capture_output=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]


def _flip(offset: int) -> str:
    """A command that flips one bit of the byte at ``offset`` of the bundle on the guest
    (running it again restores it)."""
    return ("sudo -n python3 -c 'import sys; f = open(sys.argv[1], \"r+b\"); "
            f"f.seek({offset}); b = f.read(1); f.seek({offset}); f.write(bytes([b[0] ^ 1]))' "
            f"{ON_DISK}")


def _login(vm: Vm, private: Path, command: str, wait: float = BOOT_TIMEOUT) -> str:
    """``login`` with a longer wait: right after GRUB, sshd is minutes away under TCG."""
    deadline = time.monotonic() + wait
    while True:
        done = ssh(vm, private, command)
        if done.returncode == 0 or time.monotonic() > deadline:
            return login(vm, private, command)
        time.sleep(5)


def _versions(vm: Vm, private: Path) -> list[dict[str, object]]:
    return json.loads(_login(vm, private, "sudo -n rollback-helper --json"))


def _running(vm: Vm, private: Path) -> dict[str, object]:
    running = [v for v in _versions(vm, private) if v["running"]]
    assert len(running) == 1, running
    return running[0]


def _proxies(vm: Vm) -> bytes:
    page = read_url(f"http://127.0.0.1:{vm.ports[VS_PORT]}/", timeout=10, deadline=120)
    assert page.status == 200, page.status
    return page.body


class Steps:
    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self.marks: list[tuple[float, str]] = []

    def mark(self, what: str) -> None:
        self.marks.append((round(self.vm.elapsed, 1), what))

    def boot(self, version: str, slot: str, start: int, what: str) -> None:
        self.vm.wait_for(f"Loading lockgate {re.escape(version)} from root slot {slot}",
                         BOOT_TIMEOUT, start=start, what=f"{what}: GRUB loads {version}")
        self.mark(f"{what}: GRUB loads {version} from slot {slot}")


def test_upgrade_then_rollback_then_grub_set_default(
        upgrade_builds: tuple[Path, Path], backend: int, tmp_path: Path,
        console_log: Path) -> None:
    raw, bundle = upgrade_builds
    disk = make_overlay(raw, tmp_path)
    private, public = make_key(tmp_path)
    password = "e2e-" + secrets.token_urlsafe(12)
    rootfs = bundles.read_header(bundle).rootfs
    started = time.monotonic()
    with booted(disk, cloud="ec2", firmware="bios", persist=True, ssh_key=public,
                user_data=f"password={password} accept_license=y",
                forwards=[(0, SSH_PORT), (0, VS_PORT)], console_log=console_log,
                powerdown_timeout=60, quiet_timeout=QUIET_TIMEOUT) as vm:
        t = Steps(vm)
        # 1: v1, configured over REST.
        t.boot(V1, "a", 0, "boot 1")
        vm.wait_ready(BOOT_TIMEOUT)
        t.mark("boot 1: v1 ready")
        assert _running(vm, private)["version"] == V1
        pin = probe.fingerprint(vm, 9070)
        pool = {"properties": {"basic": {"nodes_table": [
            {"node": f"{vm.host_address}:{backend}", "weight": 1}]}}}
        vserver = {"properties": {"basic": {"port": VS_PORT, "pool": "e2e-pool"}}}
        for path, body in ((f"{CONFIG}/pools/e2e-pool", pool),
                           (f"{CONFIG}/virtual_servers/e2e-vs", vserver)):
            made = probe.rest(vm, "PUT", path, user="admin", password=password, pin=pin,
                              body=body)
            assert made.status in (200, 201), made.text()[:300]
        assert b"hello from the e2e backend" in _proxies(vm)
        _copy_in(vm, private, bundle, ON_DISK)
        t.mark("boot 1: bundle copied in")

        # A tampered bundle (one flipped byte in the middle of the compressed rootfs):
        # one error line, slot B untouched.
        before = login(vm, private, SLOT_B_SUM).strip()
        flip = _flip(rootfs.offset + rootfs.size // 2)
        login(vm, private, flip)
        refused = ssh(vm, private, f"sudo -n upgrade {ON_DISK} --no-restart", timeout=900)
        assert refused.returncode != 0, refused.stdout + refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), refused.stderr
        assert "sha256 does not match" in errors[0], errors
        assert login(vm, private, SLOT_B_SUM).strip() == before
        assert [v["version"] for v in _versions(vm, private)] == [V1]
        t.mark("boot 1: tampered bundle refused, slot b unchanged")

        # The good bundle: verify, write slot B, trial boot.
        login(vm, private, flip)
        mark = len(vm.console_text)
        up = ssh(vm, private, f"sudo -n upgrade {ON_DISK}", timeout=1200)
        # The reboot may cut the SSH session (255) after the last line.
        assert up.returncode in (0, 255), up.stdout + up.stderr
        assert f"upgrade to {V2} ready in" in up.stdout, up.stdout + up.stderr
        applied = re.search(r"ready in ([\d.]+) s", up.stdout)
        t.mark(f"boot 1: upgrade applied ({applied[1] if applied else '?'} s)")

        # 2: the trial of v2 proves healthy and becomes the default.
        t.boot(V2, "b", mark, "boot 2 (trial)")
        vm.wait_for(rf"lockgate-boot: lockgate {re.escape(V2)} is healthy after \d+ s; "
                    "it is now the default", BOOT_TIMEOUT, start=mark,
                    what="boot 2: the trial is committed")
        t.mark("boot 2: v2 healthy, now the default")
        running = _running(vm, private)
        assert (running["version"], running["slot"], running["default"]) == (V2, "b", True)
        pin = probe.fingerprint(vm, 9070)
        got = probe.rest(vm, "GET", f"{CONFIG}/pools/e2e-pool", user="admin",
                         password=password, pin=pin)
        assert got.status == 200, got.text()[:300]
        assert f"{vm.host_address}:{backend}" in got.text()
        assert b"hello from the e2e backend" in _proxies(vm)
        t.mark("boot 2: v1's pool proxies on v2")

        # Roll back to v1.
        mark = len(vm.console_text)
        back = ssh(vm, private, "sudo -n rollback --yes", timeout=300)
        assert back.returncode in (0, 255), back.stdout + back.stderr
        assert f"lockgate-{V1} is now the default" in back.stdout, back.stdout + back.stderr

        # 3: v1 again; Debian's grub-set-default picks v2.
        t.boot(V1, "a", mark, "boot 3")
        running = _running(vm, private)
        assert (running["version"], running["slot"], running["default"]) == (V1, "a", True)
        t.mark("boot 3: v1 runs after rollback")
        mark = len(vm.console_text)
        _login(vm, private, f"sudo -n grub-set-default lockgate-{V2}")
        ssh(vm, private, "sudo -n systemctl --no-block reboot", timeout=60)

        # 4: v2 again, the default.
        t.boot(V2, "b", mark, "boot 4")
        running = _running(vm, private)
        assert (running["version"], running["slot"], running["default"]) == (V2, "b", True)
        t.mark("boot 4: v2 runs after grub-set-default")
    total = time.monotonic() - started
    boots = len(re.findall(r"\] Command line: ", vm.console_text))
    print(f"\nupgrade-cycle e2e: {boots} boots in {total:.0f} s")
    for when, what in t.marks:
        print(f"  [{when:7.1f} s] {what}")
    assert boots == 4
