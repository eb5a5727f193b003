"""Fault-tolerance status of real ``lockgate runtime serve`` members on loopback: the REST
resource ``/api/tm/1.0/status/cluster`` (live, from the runtime's own heartbeat state) and
``lockgate runtime cluster status`` (another process: the file the runtime keeps).

The traffic IP group here is disabled: on loopback nothing may raise an address. Who
holds which IP after a failover is checked in the network-namespace test
(test_cluster_failover.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_support import CONFIG, Member, wait_for
from test_runtime_support import free_port

STATUS = "/api/tm/1.0/status/cluster"


def make(tmp_path: Path, name: str) -> Member:
    return Member(name, tmp_path / name / "state", rest_port=free_port(),
                  admin_port=free_port(), control_port=free_port())


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Member, Member]]:
    a, b = make(tmp_path, "tm1"), make(tmp_path, "tm2")
    try:
        yield a.start(), b.start()
    finally:
        a.stop()
        b.stop()


def status(member: Member) -> dict[str, Any]:
    code, _, doc = member.request("GET", STATUS)
    assert code == 200, doc
    return dict(doc["cluster"])


def cli(member: Member, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lockgate", "runtime", "cluster", "status",
                           "--state-dir", str(member.state_dir), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LOCKGATE_PURE_PYTHON": "1"})


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in doc["members"]}


def test_status_lists_members_liveness_roles_and_groups_rest_and_cli(
        pair: tuple[Member, Member]) -> None:
    a, b = pair
    alone = status(a)
    assert alone["clustered"] is False and alone["members"] == []
    assert "stand-alone" in cli(a).stdout

    assert b.join(a, a.fingerprint).returncode == 0
    group = {"properties": {"basic": {"ipaddresses": ["192.0.2.10", "192.0.2.11"],
                                      "machines": ["tm1"], "passive_machines": ["tm2"],
                                      "enabled": False}}}
    code, _, _ = a.request("PUT", f"{CONFIG}/traffic_ip_groups/web", group)
    assert code == 201

    def both_alive() -> bool:
        doc = status(a)
        return doc["clustered"] and by_name(doc).get("tm2", {}).get("state") == "alive" \
            and bool(doc["traffic_ip_groups"])

    wait_for(both_alive, 15, step=0.1)
    doc = status(a)
    assert doc["member"] == "tm1" and doc["running"] is True and doc["epoch"] == 2
    assert doc["settings"]["monitor_timeout"] == 1.5  # the default
    members = by_name(doc)
    assert members["tm1"]["this"] is True and members["tm1"]["state"] == "self"
    assert members["tm1"]["fingerprint"] == a.fingerprint
    assert members["tm2"]["fingerprint"] == b.fingerprint
    assert members["tm2"]["address"] == "127.0.0.1" and members["tm2"]["alive"] is True
    assert 0 <= members["tm2"]["last_heard_s"] < 1.5
    assert members["tm1"]["role"] == "active" and members["tm2"]["role"] == "passive"
    (web,) = doc["traffic_ip_groups"]
    assert web["name"] == "web" and web["enabled"] is False
    assert web["ips"] == [{"ip": "192.0.2.10", "held_by": None, "holders": []},
                          {"ip": "192.0.2.11", "held_by": None, "holders": []}]
    assert "secret" not in json.dumps(doc)
    # The other member's view: the same members, tm1 heard from (its own heartbeats
    # may come a moment after tm1 heard tm2).
    wait_for(lambda: by_name(status(b)).get("tm1", {}).get("state") == "alive", 15, step=0.1)
    assert by_name(status(b))["tm1"]["state"] == "alive"

    # The CLI, another process: what the runtime last wrote (at most a second old).
    shown = cli(a)
    assert shown.returncode == 0, shown.stderr
    assert "member tm1, epoch 2" in shown.stdout
    assert "tm2" in shown.stdout and "alive (heard" in shown.stdout
    assert b.fingerprint in shown.stdout and "role=passive" in shown.stdout
    assert "192.0.2.10" in shown.stdout and "[disabled]" in shown.stdout
    as_json = json.loads(cli(a, "--json").stdout)
    assert by_name(as_json)["tm2"]["state"] == "alive" and as_json["running"] is True

    # tm2 stops: it says it is leaving, and tm1 shows that at once.
    b.stop()
    wait_for(lambda: by_name(status(a))["tm2"]["state"] == "leaving", 5, step=0.05)
    assert by_name(status(a))["tm2"]["alive"] is False
    wait_for(lambda: "leaving" in cli(a).stdout, 5, step=0.2)

    # tm1 stops too: the CLI says the runtime is not running, liveness unknown.
    a.stop()
    stopped = cli(a)
    assert "not running" in stopped.stdout, stopped.stdout
    assert json.loads(cli(a, "--json").stdout)["running"] is False
