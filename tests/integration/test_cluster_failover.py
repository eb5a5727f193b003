"""Traffic-IP failover between real ``lockgate runtime serve`` members in network
namespaces (members on a bridge, a client in another namespace), default settings.

Quick subset for ``make test``: one SIGKILL (measured, client polling every 10 ms),
one link down and heal, autofailback off/on, passive members. Medians and the soak
under load: ``lockgate.benchmarks.failover`` (the same harness).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from netns_support import skip_unless_root

from lockgate.benchmarks.failover import FtCluster

# The goal is 300 ms with default settings; the bench measures it (median of 5,
# 66-83 ms here). On a machine shared by many builds (load 14 on 2 cores seen) one round
# can take longer, so the test asserts what proves the design: the takeover came from
# the guard's "leaving", well before a monitor_timeout of silence could have caused it.
KILL_GOAL = 0.300
KILL_LIMIT = 1.0
DEFAULT_TIMEOUT = 1.5  # monitor_timeout default
SLACK = 0.5  # the test's own polling of three namespaces on a loaded machine


@pytest.fixture(autouse=True)
def _root() -> None:
    skip_unless_root()


def get(cluster: FtCluster, ip: str) -> str:
    """The member that answers ``ip`` for the client (3 tries: a loaded machine)."""
    code = f"import urllib.request; print(urllib.request.urlopen('http://{ip}/', timeout=5).read().decode())"
    errors = []
    for _ in range(3):
        result = subprocess.run(["ip", "netns", "exec", cluster.topo.client, sys.executable,
                                 "-c", code], capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            return result.stdout.strip()
        errors.append(result.stderr.strip().splitlines()[-1:])
        time.sleep(0.5)
    return f"no answer: {errors}"


def status_of(state_dir: Path, want: dict[str, str]) -> dict[str, Any]:
    """``lockgate runtime cluster status --json`` once it shows ``want`` (IP -> holder) or
    after 5 s (the runtime rewrites its file at once on a change, a write may be in flight)."""
    deadline = time.monotonic() + 5
    while True:
        result = subprocess.run([sys.executable, "-m", "lockgate", "runtime", "cluster", "status",
                                 "--json", "--state-dir", str(state_dir)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        doc: dict[str, Any] = json.loads(result.stdout)
        held = {ip["ip"]: ip["held_by"] for g in doc["traffic_ip_groups"] for ip in g["ips"]}
        if held == want or time.monotonic() > deadline:
            return doc
        time.sleep(0.2)


def test_sigkill_and_link_down_move_the_ip_autofailback_off(tmp_path: Path) -> None:
    with FtCluster(tmp_path) as cluster:
        first = cluster.wait_assigned()
        vip = cluster.vips[0]
        victim = cluster.member(first[vip])
        others = {m.name for m in cluster.members} - {victim.name}
        with cluster.poller(vip) as poller:
            killed = time.monotonic()
            victim.kill()  # SIGKILL of the runtime
            took = poller.first_from(others, killed)
        print(f"failover after SIGKILL: {took * 1000:.0f} ms (goal {KILL_GOAL * 1000:.0f})")
        assert took <= KILL_LIMIT, f"failover took {took * 1000:.0f} ms"
        after = cluster.wait_assigned()
        assert after[vip] in others
        assert vip not in victim.addresses()  # its guard dropped it from the dead host
        assert get(cluster, vip) == after[vip]
        # What `lockgate runtime cluster status` shows on the new holder.
        seen = status_of(cluster.member(after[vip]).state_dir, after)
        assert seen["running"] is True
        members = {m["name"]: m for m in seen["members"]}
        assert members[victim.name]["state"] in ("leaving", "dead")
        assert members[victim.name]["alive"] is False
        held = {ip["ip"]: ip["held_by"] for g in seen["traffic_ip_groups"] for ip in g["ips"]}
        assert held == after, seen

        # Back again with autofailback off: it does not take its IP back.
        victim.start()
        time.sleep(2 * DEFAULT_TIMEOUT)
        assert cluster.wait_assigned() == after

        # Cable cut on another holder: noticed after monitor_timeout of silence.
        vip2 = next(ip for ip, m in after.items() if m != victim.name and ip != vip)
        holder2 = cluster.member(after[vip2])
        with cluster.poller(vip2) as poller:
            cut = time.monotonic()
            cluster.topo.link(holder2.index, up=False)
            took2 = poller.first_from({m.name for m in cluster.members} - {holder2.name}, cut)
        print(f"failover after link down: {took2 * 1000:.0f} ms")
        assert took2 <= DEFAULT_TIMEOUT + 1.0
        # Cable back: the cut-off member held every IP meanwhile; within one
        # monitor_timeout each IP is up on exactly one member again.
        cluster.topo.link(holder2.index, up=True)
        healed = time.monotonic()
        cluster.wait_assigned(timeout=10)
        assert time.monotonic() - healed <= DEFAULT_TIMEOUT + SLACK


def test_passive_member_and_autofailback_on(tmp_path: Path) -> None:
    with FtCluster(tmp_path, members=3, passives=1, vips=(100, 101),
                   autofailback=True) as cluster:
        m1, m2, _ = cluster.members
        first = cluster.wait_assigned()
        assert set(first.values()) == {"m1", "m2"}  # the passive m3 holds nothing
        m1.kill()
        cluster.wait_assigned(want=dict.fromkeys(cluster.vips, "m2"))  # not the passive
        m2.stop()  # SIGTERM: an orderly stop hands its IPs over as well
        cluster.wait_assigned(want=dict.fromkeys(cluster.vips, "m3"))  # every active down
        # An active member back: the passive member gives everything up.
        m1.start()
        cluster.wait_assigned(want=dict.fromkeys(cluster.vips, "m1"))
        assert get(cluster, cluster.vips[0]) == "m1"
        # autofailback on: m2 back takes its home IP from m1.
        m2.start()
        final = cluster.wait_assigned(want=first)
        assert final == first
