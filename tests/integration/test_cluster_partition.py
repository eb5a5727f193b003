"""A partition of the heartbeats: UDP 9090 dropped between m1 and {m2, m3} (nftables in
m1's own namespace, made by the test), the data path left as it is.

What happens (docs/cluster.md, "Partitions"): after ``monitor_timeout`` of silence each
side takes the other side's IPs, so m1 holds all three and m2/m3 raise m1's as well --
those IPs are up on two members while the partition lasts. After it heals, the first
beats say who holds what and every member computes the same single holder: no IP stays
up on two members for longer than one ``monitor_timeout``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from netns_support import skip_unless_root

from lockgate.benchmarks.failover import FtCluster

MONITOR_TIMEOUT = 1.5  # the default
SLACK = 0.5  # the test's own polling of three namespaces on a loaded machine
TABLE = "lockgate_partition"


def nft(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True,
                   check=True, capture_output=True, timeout=30)


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

        nft(m1.ns, f"delete table inet {TABLE}\n")
        healed = time.monotonic()
        after = cluster.wait_assigned(timeout=10)
        took = time.monotonic() - healed
        print(f"healed: every IP on one member after {took * 1000:.0f} ms: {after}")
        assert took <= MONITOR_TIMEOUT + SLACK
        assert after[vip1] == "m1"  # the home of a doubled IP keeps it
        # And it stays that way (no flapping once the beats agree).
        time.sleep(2 * MONITOR_TIMEOUT)
        assert cluster.wait_assigned(timeout=1) == after
