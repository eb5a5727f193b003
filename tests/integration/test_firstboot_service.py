"""``lockgate firstboot run`` end to end: the installed script as a real subprocess.

Sources: ``file:PATH``, and ``ec2`` against the EC2 metadata emulator
(``LOCKGATE_EC2_URL``); Azure's report-ready against the Azure emulator.
The generated password must reach the console file and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.service import DONE_MARKER, firstboot
from lockgate.image.cloudemu import AzureEmulator, Ec2Imds
from lockgate.passwords import verify_password
from lockgate.paths import StatePaths

LOCKGATE = str(Path(sys.executable).with_name("lockgate"))
STATUS_KEYS = ["state", "instance_id", "source", "applied_this_boot", "started", "finished",
               "duration_s", "steps", "warnings"]


def lockgate(*args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([LOCKGATE, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, check=False)


def firstboot_run(tmp: Path, source: str, env: dict[str, str] | None = None,
                  timeout: float = 10) -> tuple[subprocess.CompletedProcess[str],
                                                dict[str, Any], str]:
    proc = lockgate("firstboot", "run", "--source", source, "--root", str(tmp / "root"),
                    "--console", str(tmp / "console"), "--timeout", str(timeout), env=env)
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp / "root/run/lockgate/firstboot.json").read_text())
    console = (tmp / "console").read_text()
    return proc, status, console


def report(label: str, seconds: float, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n[firstboot timing] {label}: {seconds * 1000:.0f} ms")


def parse_apply_seconds(stdout: str) -> float:
    match = re.search(r"parse\+apply took ([0-9.]+) s", stdout)
    assert match, stdout
    return float(match.group(1))


def test_file_source_full_run_status_and_console(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text("password=Integration-Pw-9 accept_license=Yes "
                         "timezone=Europe/London cluster_host=10.0.0.9 "
                         "cluster_fingerprint=unsafe colour=blue\n")
    started = time.monotonic()
    proc, status, console = firstboot_run(tmp_path, f"file:{user_data}")
    wall = time.monotonic() - started

    assert list(status) == STATUS_KEYS
    assert (status["state"], status["source"], status["applied_this_boot"]) == (
        "configured", "file", True)
    steps = {s["name"]: s["result"] for s in status["steps"]}
    assert steps == {"admin": "ok", "licence": "ok", "timezone": "ok", "certificate": "ok",
                     "cluster": "ok", "cfn": "skipped", "register": "skipped"}
    assert any("colour" in w for w in status["warnings"])
    marker = f"{DONE_MARKER} state=configured instance={status['instance_id']} source=file"
    assert console.splitlines()[-1] == marker
    assert marker in proc.stdout.splitlines()
    run_file = tmp_path / "root/run/lockgate/firstboot.json"
    assert stat.S_IMODE(run_file.stat().st_mode) == 0o644
    for where in (proc.stdout, proc.stderr, run_file.read_text()):
        assert "Integration-Pw-9" not in where
    report("file source, subprocess wall time", wall, capsys)
    report("file source, parse+apply", parse_apply_seconds(proc.stdout), capsys)

    shown = lockgate("firstboot", "status", "--root", str(tmp_path / "root"))
    assert shown.returncode == 0
    assert "state:     configured" in shown.stdout and "timezone" in shown.stdout
    # The join goes on after first boot (the runtime retries it): status shows its record.
    assert "cluster join of 10.0.0.9:9090: pending" in shown.stdout
    assert "fingerprint 'unsafe'" in shown.stdout
    as_json = lockgate("firstboot", "status", "--root", str(tmp_path / "root"), "--json")
    shown_json = json.loads(as_json.stdout)
    join = shown_json.pop("cluster_join")
    assert (join["host"], join["status"], join["fingerprint"]) == ("10.0.0.9", "pending", "unsafe")
    assert shown_json == status

    again, status2, _ = firstboot_run(tmp_path, f"file:{user_data}")
    assert (status2["applied_this_boot"], status2["steps"]) == (False, [])
    assert "parse+apply" not in again.stdout


def test_generated_password_only_on_the_console(tmp_path: Path) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text("accept_license=y\n")
    proc, status, console = firstboot_run(tmp_path, f"file:{user_data}")
    assert status["state"] == "needs-initial-configuration"
    [line] = [x for x in console.splitlines() if "generated password" in x]
    password = line.rsplit(": ", 1)[1]
    users = json.loads(StatePaths.under_root(tmp_path / "root").users.read_text())
    assert verify_password(password, users["users"]["admin"]["hash"])
    assert password not in proc.stdout and password not in proc.stderr
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()
             and p.name != "console" and password.encode() in p.read_bytes()]
    assert leaks == []
    assert "z-initial-config" in console and "https://" in console
    assert console.splitlines()[-1].startswith(f"{DONE_MARKER} state=needs-initial-configuration")


def test_invalid_user_data_still_exits_0_with_the_reason(tmp_path: Path) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text("password=x accept_license=perhaps\n")
    _, status, console = firstboot_run(tmp_path, f"file:{user_data}")
    assert status["state"] == "failed" and status["applied_this_boot"] is False
    assert "accept_license:" in console
    assert console.splitlines()[-1].startswith(f"{DONE_MARKER} state=failed")
    assert not (tmp_path / "root/var/lib/lockgate/config").exists()


def test_unknown_source_is_a_usage_error(tmp_path: Path) -> None:
    proc = lockgate("firstboot", "run", "--source", "openstack", "--root", str(tmp_path),
                    "--console", str(tmp_path / "console"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --source openstack")


@pytest.mark.parametrize("target", ["fd:abc", "fd:", "fd:-1"])
def test_malformed_console_fd_is_a_usage_error(tmp_path: Path, target: str) -> None:
    proc = lockgate("firstboot", "run", "--source", "file:/dev/null", "--root", str(tmp_path),
                    "--console", target)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: --console {target}: expected a path or fd:N with N a descriptor number"]
    assert "Traceback" not in proc.stdout


def test_broken_users_file_is_no_crash_and_z_reset_password_recovers(tmp_path: Path) -> None:
    users_file = StatePaths.under_root(tmp_path / "root").users
    users_file.parent.mkdir(parents=True)
    users_file.write_text('{"users": ')  # truncated, e.g. by a disk problem
    proc, status, console = firstboot_run(tmp_path, "file:/dev/null")
    assert status["state"] == "failed" and "z-reset-password" in status["steps"][0]["message"]
    proc, status, console = firstboot_run(tmp_path, "file:/dev/null")  # the next boot
    assert "Traceback" not in proc.stderr
    assert status["state"] == "needs-initial-configuration", status
    assert console.splitlines()[-1].startswith(f"{DONE_MARKER} state=needs-initial-configuration")
    reset = subprocess.run([str(Path(LOCKGATE).with_name("z-reset-password")), "--root",
                            str(tmp_path / "root"), "--password-stdin"], input="again-pw1\n",
                           capture_output=True, text=True, timeout=60, check=False)
    assert reset.returncode == 0, reset.stderr
    assert verify_password("again-pw1", json.loads(users_file.read_text())["users"]["admin"]["hash"])


@pytest.mark.parametrize("damage", ["not-a-folder", "not-utf8"])
def test_status_unreadable_is_one_error_line(tmp_path: Path, damage: str) -> None:
    if damage == "not-a-folder":
        (tmp_path / "run").write_text("")
    else:
        status = tmp_path / "run/lockgate/firstboot.json"
        status.parent.mkdir(parents=True)
        status.write_bytes(b"\xff\xfe{")
    proc = lockgate("firstboot", "status", "--root", str(tmp_path))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_status_without_a_run_says_so(tmp_path: Path) -> None:
    proc = lockgate("firstboot", "status", "--root", str(tmp_path))
    assert proc.returncode == 1 and "no first-boot status" in proc.stderr


def test_ec2_emulator_once_per_instance_and_outage(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    user_data = b"password=Ec2-Pw-5 accept_license=Yes timezone=Europe/Berlin"
    with Ec2Imds(user_data=user_data, instance_id="i-0aaaaaaaaaaaaaaa1", imdsv1=False) as imds:
        env = {"LOCKGATE_EC2_URL": imds.url}
        proc, status, console = firstboot_run(tmp_path, "ec2", env)
        assert (status["state"], status["instance_id"], status["source"]) == (
            "configured", "i-0aaaaaaaaaaaaaaa1", "ec2")
        assert console.splitlines()[-1] == (
            f"{DONE_MARKER} state=configured instance=i-0aaaaaaaaaaaaaaa1 source=ec2")
        report("ec2 emulator, parse+apply", parse_apply_seconds(proc.stdout), capsys)
        report("ec2 emulator, whole run (status duration_s)", float(status["duration_s"]),
               capsys)

        _, status, _ = firstboot_run(tmp_path, "ec2", env)  # reboot
        assert status["applied_this_boot"] is False

        imds.set_faults(fail_first=10_000)  # metadata service down
        began = time.monotonic()
        _, status, console = firstboot_run(tmp_path, "ec2", env, timeout=2)
        assert time.monotonic() - began < 30  # the --timeout bounds the wait for metadata
        assert (status["state"], status["instance_id"], status["applied_this_boot"]) == (
            "configured", "i-0aaaaaaaaaaaaaaa1", False)
        assert any("metadata unavailable" in w for w in status["warnings"])
        assert console.splitlines()[-1].startswith(f"{DONE_MARKER} state=configured")
        imds.set_faults(fail_first=0)

        imds.instance_id = "i-0bbbbbbbbbbbbbbb2"  # the image launched again as a new VM
        imds.user_data = b"password=Second-Pw-6 accept_license=Yes"
        _, status, _ = firstboot_run(tmp_path, "ec2", env)
        assert (status["instance_id"], status["applied_this_boot"]) == ("i-0bbbbbbbbbbbbbbb2",
                                                                        True)
    users = json.loads(StatePaths.under_root(tmp_path / "root").users.read_text())
    assert verify_password("Second-Pw-6", users["users"]["admin"]["hash"])


def test_ssh_keys_and_host_name_every_boot_for_the_current_instance(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVjMmtleWVjMmtleWVjMmtleWVjMmtleWVjMmtleQ e@x"
    keys_file = tmp_path / "root/var/lib/lockgate/ssh-keys/admin"
    with Ec2Imds(user_data=b"password=Keys-Pw-1 accept_license=y", imdsv1=False,
                 ssh_keys=[key], hostname="ip-10-1-2-3.ec2.internal") as imds:
        env = {"LOCKGATE_EC2_URL": imds.url}
        proc, status, _ = firstboot_run(tmp_path, "ec2", env)
        assert keys_file.read_text().splitlines()[1:] == [key]
        assert "1 public key(s) for admin" in proc.stdout
        hostname_file = tmp_path / "root/var/lib/lockgate/firstboot/hostname"
        assert hostname_file.read_text() == "ip-10-1-2-3.ec2.internal\n"

        imds.set_faults(fail_first=10_000)  # an outage keeps the keys
        firstboot_run(tmp_path, "ec2", env, timeout=1)
        assert keys_file.read_text().splitlines()[1:] == [key]
        imds.set_faults(fail_first=0)

        imds.ssh_keys = []  # a reboot (same instance) after the key pair was dropped
        _, status, _ = firstboot_run(tmp_path, "ec2", env)
        assert status["applied_this_boot"] is False
        assert keys_file.read_text().splitlines()[1:] == []


def test_azure_reports_ready(tmp_path: Path) -> None:
    from lockgate.firstboot.datasources.azure import AzureSource

    with AzureEmulator(user_data=b"password=Az-Pw-7 accept_license=yes") as azure:
        source = AzureSource(imds_url=azure.url, wireserver_url=azure.url,
                             ovf_path=tmp_path / "no-ovf-env.xml")
        console = Console(str(tmp_path / "console"))
        try:
            status = firstboot(tmp_path / "root", source, console, 10.0)
        finally:
            console.close()
        assert (status.state, status.source) == ("configured", "azure")
        assert status.warnings == []
        assert [r.state for r in azure.health_reports][-1:] == ["Ready"]


def _azure_boot(tmp_path: Path, azure: AzureEmulator) -> Any:
    from lockgate.firstboot.datasources.azure import AzureSource

    source = AzureSource(imds_url=azure.url, wireserver_url=azure.url,
                         ovf_path=tmp_path / "no-ovf-env.xml")
    console = Console(str(tmp_path / "console"))
    try:
        return firstboot(tmp_path / "root", source, console, 10.0)
    finally:
        console.close()


def test_azure_reports_invalid_user_data_as_a_provisioning_failure(tmp_path: Path) -> None:
    with AzureEmulator(user_data=b"password=x accept_license=perhaps") as azure:
        status = _azure_boot(tmp_path, azure)
        assert status.state == "failed"
        assert status.warnings == []
        (report,) = azure.health_reports
    assert (report.state, report.substatus) == ("NotReady", "ProvisioningFailed")
    assert report.description is not None
    assert "invalid user-data" in report.description and "accept_license" in report.description
    assert "password=x" not in report.raw.decode()  # user-data never goes to the platform


def test_azure_reports_a_failed_step_and_never_ready(tmp_path: Path) -> None:
    users = StatePaths.under_root(tmp_path / "root").users
    users.parent.mkdir(parents=True)
    users.write_text("{not json")  # the admin step cannot store the password: fails
    with AzureEmulator(user_data=b"password=Az-Pw-8 accept_license=yes") as azure:
        status = _azure_boot(tmp_path, azure)
        assert status.state == "failed"
        assert [r.state for r in azure.health_reports] == ["NotReady"]
        description = azure.health_reports[0].description or ""
    assert description.startswith("lockgate first boot failed: admin:")
    assert "Az-Pw-8" not in description


def test_azure_report_failure_is_a_warning_not_a_failed_boot(tmp_path: Path) -> None:
    with AzureEmulator(user_data=b"password=Az-Pw-9 accept_license=yes") as azure:
        azure.container_id = "changed-after-the-goal-state"  # the report is refused (400)
        original = azure.goal_state_xml
        azure.goal_state_xml = lambda: original().replace(  # type: ignore[method-assign]
            "changed-after-the-goal-state", "another-container")
        status = _azure_boot(tmp_path, azure)
    assert status.state == "configured"
    assert len(status.warnings) == 1 and "azure: reporting ready" in status.warnings[0]


def test_unit_file_contract(tmp_path: Path) -> None:
    import configparser
    import shutil

    unit_file = Path(__file__).resolve().parents[2] / "firstboot/units/lockgate-firstboot.service"
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(unit_file)
    service = unit["Service"]
    assert (service["Type"], service["RemainAfterExit"]) == ("oneshot", "yes")
    assert service["ExecStart"] == "/opt/lockgate/bin/lockgate firstboot run"
    assert service["StandardOutput"] == "journal"
    assert "infinity" not in service["TimeoutStartSec"]
    # The runtime starts beside first boot and waits for its record (serve --wait-for,
    # docs/firstboot.md); the boot check commits a trial only after first boot.
    assert unit["Unit"]["Before"] == "lockgate-boot-commit.service"
    runtime = configparser.ConfigParser(strict=False, interpolation=None)
    runtime.read(unit_file.parents[2] / "runtime/units/lockgate.service")
    assert "lockgate-firstboot.service" in runtime["Unit"]["Wants"].split()
    assert "--wait-for" in runtime["Service"]["ExecStart"]
    assert set(unit["Unit"]["After"].split()) == {"network-online.target", "local-fs.target"}
    assert unit["Unit"]["Wants"] == "network-online.target"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed: unit syntax not verified")
    copy = tmp_path / unit_file.name
    copy.write_text(unit_file.read_text().replace("/opt/lockgate/bin/lockgate", LOCKGATE))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
