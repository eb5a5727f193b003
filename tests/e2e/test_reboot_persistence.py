"""One disk booted four times (TCG): what a configured appliance keeps across reboots.

Boot 1 applies password user-data and is configured over REST (a pool and a
virtual server). Boot 2 is a clean reboot inside the same QEMU (``systemctl
reboot`` over SSH), boot 3 a cold start of a new QEMU on the same disk, both
with the same instance id: the password, the configuration, the REST
certificate, the SSH host keys and the instance record are unchanged, and
first boot applied nothing. Boot 4 gives the same disk a new instance id:
first boot runs again. Every boot: no unit failed (lockgate's own included).

The disk is a qcow2 overlay in ``tmp_path`` over the built image, booted with
``persist=True`` so every boot writes to (and reads back) that same overlay.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from ssh_login import SSH_PORT, login, make_key, ssh

from lockgate.image.boot import probe
from lockgate.image.boot.console import FIRSTBOOT_RE, RUNTIME_RE, parse_firstboot
from lockgate.image.boot.overlay import make_overlay, resolve_image
from lockgate.image.boot.vm import Vm, booted

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(3600)]

READY_TIMEOUT = 420.0  # QEMU start (or reboot) -> runtime serving under TCG on a busy host
# The console may stay silent this long while the runtime starts (imports, certificate)
# with another VM on the same 2 cores.
QUIET_TIMEOUT = 300.0
FIRST_ID, SECOND_ID = "i-0persist00000001", "i-0persist00000002"
CONFIG = "config/active"
POOL = {"properties": {"basic": {"nodes_table": [{"node": "10.0.2.2:8080", "weight": 2}]}}}
VSERVER = {"properties": {"basic": {"port": 18080, "pool": "persist-pool"}}}
RECORDS = "/var/lib/lockgate/firstboot/instances"
HOST_KEYS = "/var/lib/lockgate/ssh/etc/ssh"  # on the data partition, made at first boot
# What a boot is made of, read over SSH: first boot's status, the instance records, and
# every failed unit, now or earlier in this boot. No unit of the image is known to fail on a healthy boot, so there
# is no exception list; lockgate's own units (lockgate*.service: first boot, runtime,
# data-partition grow, SSH host keys, boot commit) must never be in it.
FACTS = ("cat /run/lockgate/firstboot.json; echo '#records'; "
         f"sudo -n sh -c 'for f in {RECORDS}/*.json; do echo \"#file $f\"; cat \"$f\"; done'; "
         "echo '#failed'; systemctl list-units --all --state=failed --plain --no-legend; "
         # A crash-looping service (Restart=) is never "failed" for long: systemd's own
         # journal lines count too.
         "sudo -n journalctl -b --no-pager -o cat _PID=1 "
         "| grep -E 'Failed with result|Failed to start|Dependency failed' || true")


def _ready(vm: Vm, start: int) -> tuple[str, str]:
    """(instance id, state) of first boot's console marker after ``start``, runtime up."""
    match = vm.wait_for(FIRSTBOOT_RE, READY_TIMEOUT, start=start,
                        what="the first-boot marker (lockgate-firstboot: done)")
    done = parse_firstboot(match.group(0))
    assert done is not None
    vm.wait_for(RUNTIME_RE, READY_TIMEOUT, start=start, what="the runtime marker")
    return done.instance, done.state


def _facts(vm: Vm, private: Path) -> tuple[dict[str, object], dict[str, str], list[str]]:
    """(first boot's status, instance record texts by path, failed units)."""
    out = login(vm, private, FACTS)
    status_text, rest = out.split("#records\n", 1)
    records_text, failed_text = rest.split("#failed\n", 1)
    records: dict[str, str] = {}
    for chunk in records_text.split("#file ")[1:]:
        path, _, body = chunk.partition("\n")
        records[path] = body
    return json.loads(status_text), records, failed_text.strip().splitlines()


def _host_keys(vm: Vm, private: Path) -> set[str]:
    """The SSH host key fingerprints: the guest's public key files and the ED25519 key
    its sshd presents to a client (ssh-keyscan, retried: one scan under TCG may time out
    on some key types)."""
    listed = login(vm, private, f"sudo -n sh -c 'for k in {HOST_KEYS}/ssh_host_*_key.pub; do "
                   "ssh-keygen -lf $k; done'")
    found = {" ".join(line.split()[1:2] + line.split()[-1:]) for line in listed.splitlines()}
    assert {f.rsplit(" ", 1)[-1] for f in found} >= {"(ED25519)", "(RSA)", "(ECDSA)"}, listed
    for _ in range(3):
        scan = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-T", "60", "-p",
                               str(vm.ports[SSH_PORT]), "127.0.0.1"], capture_output=True,
                              text=True, timeout=120, check=False)
        if scan.stdout.strip():
            break
    served = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan.stdout, capture_output=True,
                            text=True, timeout=30, check=True).stdout.split()
    assert served and f"{served[1]} (ED25519)" in found, (served, found)
    return found


def _config(vm: Vm, password: str, pin: str) -> tuple[object, object]:
    pool = probe.rest(vm, "GET", f"{CONFIG}/pools/persist-pool", user="admin",
                      password=password, pin=pin)
    vs = probe.rest(vm, "GET", f"{CONFIG}/virtual_servers/persist-vs", user="admin",
                    password=password, pin=pin)
    assert (pool.status, vs.status) == (200, 200), pool.text()[:300] + vs.text()[:300]
    return json.loads(pool.body), json.loads(vs.body)


def _assert_password(vm: Vm, password: str, pin: str) -> None:
    good = probe.rest(vm, "GET", f"{CONFIG}/pools", user="admin", password=password, pin=pin)
    assert good.status == 200, good.text()[:300]
    bad = probe.rest(vm, "GET", f"{CONFIG}/pools", user="admin", password=password + "x",
                     pin=pin)
    assert bad.status == 401


def test_reboots_keep_configuration_and_identity_and_a_new_instance_reruns_first_boot(
        appliance_image: Path, tmp_path: Path, console_log: Path) -> None:
    disk = make_overlay(resolve_image(appliance_image), tmp_path)
    private, public = make_key(tmp_path)
    password = "e2e-" + secrets.token_urlsafe(12)
    user_data = f"password={password} accept_license=y"
    common = dict(cloud="ec2", firmware="bios", persist=True, user_data=user_data,
                  ssh_key=public, forwards=[(0, SSH_PORT)], powerdown_timeout=60,
                  quiet_timeout=QUIET_TIMEOUT)
    times: list[float] = []

    # Boot 1: first boot applies the user-data; then configure over REST.
    with booted(disk, instance_id=FIRST_ID, console_log=console_log, **common) as vm:
        assert _ready(vm, 0) == (FIRST_ID, "configured"), vm.console_text[-3000:]
        times.append(vm.elapsed)
        pin = probe.fingerprint(vm, 9070)
        _assert_password(vm, password, pin)
        for path, body in ((f"{CONFIG}/pools/persist-pool", POOL),
                           (f"{CONFIG}/virtual_servers/persist-vs", VSERVER)):
            made = probe.rest(vm, "PUT", path, user="admin", password=password, pin=pin,
                              body=body)
            assert made.status in (200, 201), made.text()[:300]
        config = _config(vm, password, pin)
        status, records, failed = _facts(vm, private)
        assert status["applied_this_boot"] is True and status["instance_id"] == FIRST_ID
        assert failed == [], failed
        host_keys = _host_keys(vm, private)

        # Boot 2: a clean reboot in the same QEMU (same disk, same metadata, same id).
        mark = len(vm.console_text)
        ssh(vm, private, "sudo -n systemctl --no-block reboot", timeout=60)
        began = time.monotonic()
        vm.wait_for(r"reboot: Restarting system", 180, start=mark, what="the guest's reboot")
        mark = len(vm.console_text)
        assert _ready(vm, mark) == (FIRST_ID, "configured"), vm.console_text[-3000:]
        times.append(time.monotonic() - began)
        assert probe.fingerprint(vm, 9070) == pin
        _assert_password(vm, password, pin)
        assert _config(vm, password, pin) == config
        status2, records2, failed2 = _facts(vm, private)
        assert status2["applied_this_boot"] is False, status2  # first boot did not run again
        assert status2["instance_id"] == FIRST_ID and status2["state"] == "configured"
        assert records2 == records  # the instance record is untouched
        assert failed2 == [], failed2
        assert _host_keys(vm, private) == host_keys
        assert password not in vm.console_text

    # Boot 3: a cold start of a new QEMU on the same disk, same instance id.
    with booted(disk, instance_id=FIRST_ID, console_log=tmp_path / "boot3.log", **common) as vm:
        assert _ready(vm, 0) == (FIRST_ID, "configured"), vm.console_text[-3000:]
        times.append(vm.elapsed)
        assert probe.fingerprint(vm, 9070) == pin
        _assert_password(vm, password, pin)
        assert _config(vm, password, pin) == config
        status3, records3, failed3 = _facts(vm, private)
        assert status3["applied_this_boot"] is False, status3
        assert records3 == records
        assert failed3 == [], failed3
        assert _host_keys(vm, private) == host_keys

    # Boot 4: the same disk as a new instance (an image cloned into a new VM): first
    # boot runs again and records the new instance beside the old one.
    with booted(disk, instance_id=SECOND_ID, console_log=tmp_path / "boot4.log",
                **common) as vm:
        assert _ready(vm, 0) == (SECOND_ID, "configured"), vm.console_text[-3000:]
        times.append(vm.elapsed)
        status4, records4, failed4 = _facts(vm, private)
        assert status4["applied_this_boot"] is True, status4
        assert status4["instance_id"] == SECOND_ID
        assert {Path(p).name for p in records4} == {f"{FIRST_ID}.json", f"{SECOND_ID}.json"}
        assert records4[f"{RECORDS}/{FIRST_ID}.json"] == records[f"{RECORDS}/{FIRST_ID}.json"]
        assert failed4 == [], failed4
        _assert_password(vm, password, probe.fingerprint(vm, 9070))
    print("boot seconds to ready (boot, reboot, cold restart, new instance):",
          " ".join(f"{t:.1f}" for t in times))
