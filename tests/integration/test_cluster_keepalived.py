"""The bench's keepalived reference (lockgate.benchmarks.keepalived), one quick round:
VRRP between the test's namespaces, the master's keepalived SIGKILLed, another member
answers the VIP, and the VIP is left up on the dead master (which ours never does:
test_cluster_failover.py). Skipped where keepalived is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from netns_support import skip_unless_root

from lockgate.benchmarks import keepalived
from lockgate.benchmarks.cluster import topology


def test_keepalived_fails_over_after_sigkill_and_leaves_the_vip_behind(tmp_path: Path) -> None:
    skip_unless_root()
    why = keepalived.unavailable()
    if why is not None:
        pytest.skip(why)
    with topology(3) as topo:
        vip = topo.address(100)
        found = keepalived.measure(topo, topo.client, vip, tmp_path, 0.1, rounds=1)
    print(f"keepalived (VRRPv3, advert_int 0.1): {found}")
    (ms,) = found["ms"]
    # master_down_interval = 3 x 0.1 s + skew: well under a second, far over our guard's.
    assert 200 <= ms <= 3000, found
    assert found["vip_left"] == [True]
