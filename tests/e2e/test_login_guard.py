"""The admin login's neighbours on a booted appliance: the NTP server really reaches
systemd-timesyncd, and sshguard blocks an address after repeated failed SSH logins.

One NoCloud boot (TCG, ~3 min): admin logs in with the key the seed served
(tests/e2e/ssh_login.py), sets an NTP server the way the wizard does
(lockgate.firstboot.apply.services) and asks timesyncd which servers it uses;
then an "intruder" fails to log in until sshguard drops the host's packets.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from ssh_login import SSH_PORT, login, make_key, ssh

from lockgate.image.boot.vm import Vm, booted

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(3600)]

READY_TIMEOUT = 420.0
NTP_SERVER = "192.0.2.123"  # TEST-NET-1: timesyncd only has to list it, not reach it
SET_NTP = ("sudo -n /opt/lockgate/bin/python -c 'from pathlib import Path; "
           "from lockgate.firstboot.apply.services import set_ntp_server; "
           f"set_ntp_server(Path(\"/\"), \"{NTP_SERVER}\")'")
BLOCK_WAIT = 120.0


def _intrude(vm: Vm) -> None:
    """One failed login as a user that does not exist ("Invalid user" for sshguard)."""
    done = ssh(vm, None, "true", "-o", "PubkeyAuthentication=no", "-o",
               "PreferredAuthentications=password", "-o", "ConnectTimeout=10",
               user="intruder", timeout=60)
    assert done.returncode == 255


def test_ntp_server_reaches_timesyncd_and_sshguard_blocks_repeated_failures(
        appliance_image: Path, console_log: Path, tmp_path: Path) -> None:
    private, public = make_key(tmp_path)
    password = "e2e-" + secrets.token_urlsafe(12)
    with booted(appliance_image, cloud="nocloud", firmware="bios", console_log=console_log,
                powerdown_timeout=20, user_data=f"password={password} accept_license=y",
                ssh_key=public, forwards=[(0, SSH_PORT)]) as vm:
        vm.wait_ready(READY_TIMEOUT)
        login(vm, private, "true")

        # NTP: the drop-in on the data partition is what timesyncd runs with.
        out = login(vm, private, f"{SET_NTP} && timedatectl show-timesync "
                                 "--property=SystemNTPServers --value")
        assert out.split() == [NTP_SERVER], out

        # sshguard: running with its nftables table, and the host is let in ...
        out = login(vm, private, "systemctl is-active sshguard; sudo -n nft list tables")
        assert out.splitlines()[0] == "active", out
        assert "table ip sshguard" in out, out
        _intrude(vm)  # one failure (score 10-20 of sshguard's threshold 30) is forgiven
        assert login(vm, private, "echo still-in").strip() == "still-in"
        for _ in range(4):  # ... until repeated failures get its address blocked
            _intrude(vm)
        deadline = time.monotonic() + BLOCK_WAIT
        while True:
            probe = ssh(vm, private, "true", "-o", "ConnectTimeout=8", timeout=60)
            if probe.returncode != 0:
                break  # dropped: even the right key no longer gets through
            assert time.monotonic() < deadline, "sshguard never blocked the intruding address"
            time.sleep(2)
        assert probe.returncode == 255, probe.stderr
