"""Boot the built appliance in QEMU the way each cloud runs it (TCG here; ~1 min a boot).

One test per "Done when" line of the image issue; boots are shared where one
boot proves two things (BIOS+EC2, UEFI+GCE), and run one after another.
"""

from __future__ import annotations

import re
import secrets
import tempfile
from pathlib import Path

import pytest
from ssh_login import SSH_PORT, assert_admin_login, have_ssh, make_key

from lockgate.image.boot import probe
from lockgate.image.boot.vm import Vm, booted

# The first test also builds the image (session fixture), so allow for a cold build.
pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(3600)]

READY_TIMEOUT = 420.0  # QEMU start -> runtime serving under TCG on a busy 2-core host
CONFIG_PATH = "config/active/pools"


def _password() -> str:
    return "e2e-" + secrets.token_urlsafe(12)


def _assert_ready(vm: Vm, source: str, state: str = "configured") -> str:
    """Both markers on the console; returns the pinned REST certificate fingerprint."""
    done, serving = vm.wait_ready(READY_TIMEOUT)
    assert done.state == state, vm.console_text[-3000:]
    assert done.source == source
    fingerprint = probe.fingerprint(vm, 9070)
    if serving.fingerprint:  # the console's fingerprint is the certificate actually served
        assert serving.fingerprint.upper() == probe.fingerprint(vm, 9090)
    return fingerprint


def _assert_password(vm: Vm, password: str, pin: str) -> None:
    good = probe.rest(vm, "GET", CONFIG_PATH, user="admin", password=password, pin=pin)
    assert good.status == 200, good.text()[:300]
    bad = probe.rest(vm, "GET", CONFIG_PATH, user="admin", password=password + "x", pin=pin)
    assert bad.status == 401


def _boot_with_password(image: Path, log: Path, cloud: str, firmware: str) -> None:
    """... and, on the same boot, admin logs in over SSH with the key the cloud served
    (tests/e2e/ssh_login.py; skipped only where the host has no OpenSSH client)."""
    password = _password()
    with tempfile.TemporaryDirectory(prefix="lockgate-e2e-ssh-") as keys:
        private, public = make_key(Path(keys)) if have_ssh() else (None, None)
        with booted(image, cloud=cloud, firmware=firmware, console_log=log,
                    powerdown_timeout=20, user_data=f"password={password} accept_license=y",
                    ssh_key=public, forwards=[(0, SSH_PORT)]) as vm:
            pin = _assert_ready(vm, source=cloud)
            _assert_password(vm, password, pin)
            assert password not in vm.console_text  # user-data secrets never reach the console
            if private is not None:
                assert_admin_login(vm, private, password)


def test_bios_boot_reaches_runtime_and_ec2_user_data_sets_the_password(
        appliance_image: Path, console_log: Path) -> None:
    _boot_with_password(appliance_image, console_log, "ec2", "bios")


def test_uefi_boot_reaches_runtime_and_gce_user_data_sets_the_password(
        appliance_image: Path, console_log: Path) -> None:
    _boot_with_password(appliance_image, console_log, "gce", "uefi")


def test_azure_user_data_sets_the_password(appliance_image: Path, console_log: Path) -> None:
    _boot_with_password(appliance_image, console_log, "azure", "bios")


def test_nocloud_user_data_sets_the_password(appliance_image: Path, console_log: Path) -> None:
    _boot_with_password(appliance_image, console_log, "nocloud", "uefi")


def test_without_user_data_the_console_alone_shows_how_to_finish_and_a_random_password(
        appliance_image: Path, console_log: Path) -> None:
    with booted(appliance_image, cloud="ec2", firmware="bios", console_log=console_log,
                powerdown_timeout=20) as vm:
        pin = _assert_ready(vm, source="ec2", state="needs-initial-configuration")
        text = vm.console_text
        match = re.search(r"generated password for '?admin'?: (\S+)\n", text)
        assert match, text[-3000:]
        password = match[1]
        assert "z-initial-config" in text and ":9090" in text  # how to finish
        # ... and the web wizard's one-time URL, which claims the wizard (a cookie and a
        # redirect to its first step); the token is then spent.
        from lockgate.image.boot.console import WIZARD_RE

        wizard = WIZARD_RE.search(text)
        assert wizard, text[-3000:]
        from lockgate.http import read_url as _read_url

        page = _read_url(f"{vm.url(9090)}/wizard?token={wizard['token']}", timeout=10,
                         deadline=30, pin_sha1=probe.fingerprint(vm, 9090))
        assert page.status in (302, 303), page.status
        assert "lockgate_wizard=" in (page.headers.get("set-cookie") or "")
        _assert_password(vm, password, pin)  # the console's password is the admin's
        # ... and it is shown nowhere else: not in the REST API or the Admin UI.
        seen = []
        for path in ("config/active", CONFIG_PATH, "status/local_tm/statistics",
                     "openapi.json", "/metrics"):
            resp = probe.rest(vm, "GET", path, user="admin", password=password, pin=pin)
            seen.append(resp.body)
        ui_pin = probe.fingerprint(vm, 9090)
        from lockgate.http import read_url

        ui = read_url(vm.url(9090) + "/", timeout=10, deadline=30, pin_sha1=ui_pin)
        seen.append(ui.body)
        for body in seen:
            assert password.encode() not in body
        _assert_console_login(vm, password)
    assert password.encode() in console_log.read_bytes()  # the console log has it


def _assert_console_login(vm: Vm, password: str) -> None:
    """admin logs in on the serial console with the console's password, finds the
    reference product's commands on its PATH and runs sudo without a password."""
    mark = len(vm.console_text)
    vm.type("\r")
    vm.wait_for(r"[\w.-]+ login: ", 90, start=mark, what="the console's login prompt")
    mark = len(vm.console_text)
    vm.type("admin\r")
    vm.wait_for(r"Password: ", 30, start=mark, what="the console's password prompt")
    mark = len(vm.console_text)
    vm.type(password + "\r")
    # login drops what was typed ahead: wait for the shell's prompt first
    vm.wait_for(r"admin@[\w.-]+:~\$ ", 90, start=mark, what="the admin shell's prompt")
    mark = len(vm.console_text)
    # $((6*7)) is echoed as typed; only a shell that ran the line prints 42.
    vm.type("echo in-as-$(id -un)-$((6*7)); command -v z-initial-config grub-set-default"
            " rollback upgrade; sudo -n id -u\r")
    said = vm.wait_for(r"in-as-(\S+)-42\n", 90, start=mark, what="the console shell's answer")
    # The lines that follow, up to sudo's uid; kernel messages may come in between.
    uid = vm.wait_for(r"\n(\d+)\n", 30, start=said.end() - 1, what="sudo's answer")
    lines = vm.console_text[said.end():uid.start() + 1].splitlines()
    found = [line.strip() for line in lines if line.strip().startswith("/")]
    assert said[1] == "admin", vm.console_text[-2000:]
    assert [Path(p).name for p in found] == [
        "z-initial-config", "grub-set-default", "rollback", "upgrade"], found
    assert uid[1] == "0", vm.console_text[-2000:]  # sudo, no password asked
    vm.type("exit\r")
