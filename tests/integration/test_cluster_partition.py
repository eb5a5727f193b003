"""A partition of the heartbeats: UDP 9090 dropped between m1 and {m2, m3} (nftables in
m1's own namespace, made by the test), the data path left as it is.

What happens (docs/cluster.md, "Partitions"): after ``monitor_timeout`` of silence each
side takes the other side's IPs, so m1 holds all three and m2/m3 raise m1's as well --
those IPs are up on two members while the partition lasts. After it heals, the first
beats say who holds what and every member computes the same single holder: no IP stays
up on two members for longer than one ``monitor_timeout``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from netns_support import skip_unless_root

from lockgate.benchmarks.failover import FtCluster

MONITOR_TIMEOUT = 1.5  # the default
SLACK = 0.5  # the test's own polling of three namespaces on a loaded machine
TABLE = "lockgate_partition"


def nft(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True,
                   check=True, capture_output=True, timeout=30)


def status(state_dir: Path) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "lockgate", "runtime", "cluster", "status",
                             "--json", "--state-dir", str(state_dir)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def settled(state_dir: Path, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The status once ``check`` holds, or after 5 s (the runtime rewrites its file at
    once on a change, in a thread, so a read can be a moment behind)."""
    deadline = time.monotonic() + 5
    while True:
        doc = status(state_dir)
        if check(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.2)


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["state"] for m in doc["members"]}


def ips(doc: dict[str, Any]) -> dict[str, str | None]:
    return {ip["ip"]: ip["held_by"] for g in doc["traffic_ip_groups"] for ip in g["ips"]}


def test_partition_doubles_ips_and_healing_leaves_each_on_one_member(tmp_path: Path) -> None:
    skip_unless_root()
    if shutil.which("nft") is None:
        pytest.skip("nft (nftables) is not installed: the partition needs it")
    with FtCluster(tmp_path) as cluster:
        first = cluster.wait_assigned()
        m1, m2, m3 = cluster.members
        others = f"{{ {cluster.topo.address(m2.index)}, {cluster.topo.address(m3.index)} }}"
        # Only the heartbeats: UDP 9090 both ways between m1 and the other half.
        nft(m1.ns, f"""
table inet {TABLE} {{
  chain input {{ type filter hook input priority 0; ip saddr {others} udp dport 9090 drop; }}
  chain output {{ type filter hook output priority 0; ip daddr {others} udp dport 9090 drop; }}
}}
""")
        vip1 = next(ip for ip, m in first.items() if m == "m1")
        deadline = time.monotonic() + 15
        while True:
            held = cluster.holders()
            split = (all("m1" in h for h in held.values())
                     and any(m in held[vip1] for m in ("m2", "m3")))
            if split or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print(f"during the partition: {held}")
        assert split, f"each side did not take the other's IPs: {held}"
        assert len(held[vip1]) == 2  # m1's own IP: on m1 and on one of the other half
        # What `lockgate runtime cluster status` shows on each side: the other side dead,
        # every IP it can see held by its own side.
        seen = settled(m1.state_dir, lambda d: states(d) == {
            "m1": "self", "m2": "dead", "m3": "dead"} and set(ips(d).values()) == {"m1"})
        assert states(seen) == {"m1": "self", "m2": "dead", "m3": "dead"}
        assert set(ips(seen).values()) == {"m1"}
        other = settled(m2.state_dir, lambda d: states(d)["m1"] == "dead")
        assert states(other) == {"m1": "dead", "m2": "self", "m3": "alive"}

        nft(m1.ns, f"delete table inet {TABLE}\n")
        healed = time.monotonic()
        after = cluster.wait_assigned(timeout=10)
        took = time.monotonic() - healed
        print(f"healed: every IP on one member after {took * 1000:.0f} ms: {after}")
        assert took <= MONITOR_TIMEOUT + SLACK
        assert after[vip1] == "m1"  # the home of a doubled IP keeps it
        assert ips(settled(m1.state_dir, lambda d: ips(d) == after)) == after
        # And it stays that way (no flapping once the beats agree).
        time.sleep(2 * MONITOR_TIMEOUT)
        assert cluster.wait_assigned(timeout=1) == after
