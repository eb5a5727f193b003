"""Once per instance: the record, and the service's decisions built on it.

The service runs here in-process against the real ``file:`` datasource, with
a NoCloud-style ``meta-data`` beside the user-data to set the instance id.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from lockgate.firstboot.apply.base import Outcome, StepResult
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.datasources.file import FileSource
from lockgate.firstboot.service import Status, firstboot, status_path
from lockgate.firstboot.state import InstanceRecord, InstanceState, record_name
from lockgate.passwords import verify_password
from lockgate.paths import StatePaths

GOOD = "password=Pw-for-tests-1 accept_license=Yes timezone=Europe/Paris"


class Machine:
    """A tmp tree for one appliance plus the user-data 'cloud' it boots from."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.seed = tmp / "seed"
        self.seed.mkdir()
        self.console_file = tmp / "console"

    def launch(self, instance_id: str, user_data: str) -> None:
        (self.seed / "meta-data").write_text(f"instance-id: {instance_id}\n")
        (self.seed / "user-data").write_text(user_data)

    def boot(self) -> Status:
        console = Console(str(self.console_file))
        try:
            return firstboot(self.root, FileSource(self.seed / "user-data"), console, 5.0)
        finally:
            console.close()

    def console(self) -> str:
        return self.console_file.read_text() if self.console_file.exists() else ""

    def users(self) -> dict[str, dict[str, object]]:
        data: dict[str, dict[str, dict[str, object]]] = json.loads(
            StatePaths.under_root(self.root).users.read_text())
        return data["users"]

    def status_file(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(status_path(self.root).read_text())
        return data


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def test_record_round_trip_modes_and_current(tmp_path: Path) -> None:
    state = InstanceState(tmp_path)
    assert state.current() is None and state.get("i-1") is None
    record = InstanceRecord("i-1", "ec2", applied=True, state="configured",
                            first_boot="2026-01-01T00:00:00+00:00", applied_at="x",
                            steps=[StepResult("admin", Outcome.OK, "set")])
    state.save(record)
    assert state.current() == "i-1"
    assert state.get("i-1") == record
    assert state.is_applied("i-1")
    files = sorted(p.relative_to(state.dir).as_posix() for p in state.dir.rglob("*"))
    assert files == ["current", "instances", "instances/i-1.json"]  # no temp files left
    assert stat.S_IMODE((state.instances / "i-1.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.dir.stat().st_mode) == 0o700


@pytest.mark.parametrize("odd", ["../../etc/passwd", "a/b", ".", "x" * 300, "id with spaces"])
def test_odd_instance_ids_cannot_escape_the_folder(tmp_path: Path, odd: str) -> None:
    name = record_name(odd)
    assert "/" not in name and name.startswith("sha256-")
    state = InstanceState(tmp_path)
    state.save(InstanceRecord(odd, "file", True, "configured", "t"))
    assert state.get(odd) is not None and state.current() == odd


def test_same_instance_twice_applies_nothing_the_second_time(machine: Machine) -> None:
    machine.launch("i-aaa", GOOD)
    first = machine.boot()
    assert (first.state, first.applied_this_boot) == ("configured", True)
    assert [s.name for s in first.steps] == ["admin", "licence", "timezone", "certificate",
                                             "cluster", "cfn", "register"]
    hash_before = machine.users()["admin"]["hash"]

    machine.launch("i-aaa", "password=Another-Pw-2 accept_license=Yes timezone=Asia/Tokyo")
    second = machine.boot()
    assert (second.state, second.applied_this_boot, second.steps) == ("configured", False, [])
    assert second.instance_id == "i-aaa"
    assert machine.users()["admin"]["hash"] == hash_before
    assert (machine.root / "etc/timezone").read_text() == "Europe/Paris\n"
    assert machine.status_file()["applied_this_boot"] is False


def test_new_instance_id_applies_again(machine: Machine) -> None:
    machine.launch("i-aaa", GOOD)
    machine.boot()
    machine.launch("i-bbb", "password=Clone-Pw-3 accept_license=Yes timezone=Asia/Tokyo")
    clone = machine.boot()
    assert (clone.applied_this_boot, clone.instance_id) == (True, "i-bbb")
    assert verify_password("Clone-Pw-3", str(machine.users()["admin"]["hash"]))
    assert (machine.root / "etc/timezone").read_text() == "Asia/Tokyo\n"
    assert InstanceState(machine.root).current() == "i-bbb"


def test_metadata_outage_is_not_a_new_instance(machine: Machine) -> None:
    machine.launch("i-aaa", GOOD)
    machine.boot()
    users_before = StatePaths.under_root(machine.root).users.read_bytes()
    (machine.seed / "user-data").unlink()  # the datasource now fails

    outage = machine.boot()
    assert outage.state == "configured"
    assert (outage.instance_id, outage.source, outage.applied_this_boot) == ("i-aaa", "file",
                                                                             False)
    assert any(w.startswith("metadata unavailable") for w in outage.warnings)
    assert StatePaths.under_root(machine.root).users.read_bytes() == users_before
    assert "metadata unavailable" in machine.console()
    assert machine.status_file()["warnings"] == outage.warnings


def test_outage_before_any_configuration_locks_the_appliance(machine: Machine) -> None:
    status = machine.boot()  # no user-data file at all
    assert (status.state, status.instance_id, status.applied_this_boot) == (
        "needs-initial-configuration", None, False)
    assert machine.users()["admin"]["generated"] is True
    assert "generated password" in machine.console()
    assert "z-initial-config" in machine.console()
    assert InstanceState(machine.root).current() is None  # applied when metadata is back
    machine.launch("i-late", GOOD)
    assert machine.boot().applied_this_boot is True
    assert "generated" not in machine.users()["admin"]


def test_invalid_user_data_applies_nothing_and_is_retried(machine: Machine) -> None:
    machine.launch("i-bad", "password=Pw-1 accept_license=maybe")
    bad = machine.boot()
    assert (bad.state, bad.applied_this_boot, bad.steps) == ("failed", False, [])
    assert "accept_license:" in machine.console()
    assert "invalid user-data" in machine.console()
    assert not StatePaths.under_root(machine.root).config.exists()
    machine.launch("i-bad", GOOD)  # fixed while the instance was stopped
    fixed = machine.boot()
    assert (fixed.state, fixed.applied_this_boot) == ("configured", True)


def test_missing_password_needs_initial_configuration(machine: Machine) -> None:
    machine.launch("i-half", "accept_license=yes")
    status = machine.boot()
    assert status.state == "needs-initial-configuration"
    console = machine.console()
    assert "missing: password" in console
    assert "z-initial-config" in console and ":9090/" in console
    # once someone chooses a password (the wizard), a reboot reports configured
    from lockgate.firstboot.apply.admin import set_admin_password

    set_admin_password(machine.root, "admin", "Chosen-Later-4")
    assert machine.boot().state == "configured"


def test_one_failing_step_does_not_lose_the_others(machine: Machine) -> None:
    machine.launch("i-partial", GOOD + " cluster_host=peer cluster_fingerprint=unsafe")
    join = StatePaths.under_root(machine.root).cluster_join
    join.mkdir(parents=True)  # a directory where the join record goes: that step fails
    status = machine.boot()
    results = {s.name: s.result for s in status.steps}
    assert results["cluster"] is Outcome.FAILED
    assert results["admin"] is results["licence"] is results["timezone"] is Outcome.OK
    assert status.state == "configured"
    assert "cluster: failed" in machine.console()
    assert "Pw-for-tests-1" not in json.dumps(machine.status_file())


def test_damaged_instance_record_keeps_the_configuration_and_boots(machine: Machine) -> None:
    """A record damaged by a disk problem used to crash every later boot (state failed,
    a traceback, forever). It now counts as applied -- re-applying old user-data would
    undo a password changed since -- and the status says what happened."""
    machine.launch("i-aaa", GOOD)
    machine.boot()
    hash_before = machine.users()["admin"]["hash"]
    state = InstanceState(machine.root)
    record = state.instances / record_name("i-aaa")
    record.write_bytes(record.read_bytes()[:20])

    machine.launch("i-aaa", "password=Another-Pw-2 accept_license=Yes")
    again = machine.boot()
    assert (again.state, again.applied_this_boot, again.instance_id) == ("configured", False,
                                                                         "i-aaa")
    assert machine.users()["admin"]["hash"] == hash_before
    assert any("i-aaa" in w and "damaged" in w for w in again.warnings), again.warnings
    repaired = state.get("i-aaa")
    assert repaired is not None and repaired.applied and not repaired.damaged
    assert machine.boot().warnings == []

    (machine.seed / "user-data").unlink()  # and an outage with a damaged "current" file
    state.current_file.write_bytes(b"\xff\xfe")
    outage = machine.boot()
    assert outage.state == "configured" and outage.instance_id is None
    assert machine.users()["admin"]["hash"] == hash_before
