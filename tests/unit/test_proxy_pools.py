"""Load-balancing algorithms, passive failure detection and state carried over reload."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lockgate.runtime.config.model import empty_tree, parse_config
from lockgate.runtime.config.schema import fill_document
from lockgate.runtime.pools import NodeState, PoolRuntime


def pool(nodes: list[dict[str, Any]], **sections: dict[str, Any]) -> PoolRuntime:
    tree = empty_tree()
    props: dict[str, Any] = {"basic": {"nodes_table": nodes, **sections.pop("basic", {})}}
    props.update(sections)
    tree["pools"]["p"] = fill_document("pools", "p", {"properties": props})
    return PoolRuntime(parse_config(tree, 1).pools["p"])


def picks(rt: PoolRuntime, n: int, ip: bytes = b"1.1.1.1") -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        node = rt.pick(ip)
        assert node is not None
        out[node.address] += 1
    return out


def pick(rt: PoolRuntime, ip: bytes = b"x") -> NodeState:
    node = rt.pick(ip)
    assert node is not None, "no node eligible"
    return node


NODES = [{"node": "10.0.0.1:80"}, {"node": "10.0.0.2:80"}, {"node": "10.0.0.3:80"}]


def test_round_robin_is_even() -> None:
    assert set(picks(pool(NODES), 300).values()) == {100}


def test_weighted_round_robin_is_smooth_and_proportional() -> None:
    rt = pool([{"node": "a:1", "weight": 5}, {"node": "b:1", "weight": 1}, {"node": "c:1", "weight": 1}],
              load_balancing={"algorithm": "weighted_round_robin"})
    order = [pick(rt).address for _ in range(7)]
    assert Counter(order) == {"a:1": 5, "b:1": 1, "c:1": 1}
    assert order != sorted(order)  # interleaved, not a burst of a's
    assert "a:1a:1a:1" not in "".join(order)


def test_random_respects_weights() -> None:
    rt = pool([{"node": "a:1", "weight": 9}, {"node": "b:1", "weight": 1}],
              load_balancing={"algorithm": "random"})
    counts = picks(rt, 2000)
    assert 1600 < counts["a:1"] < 1950


def test_least_connections_prefers_the_idle_node_per_weight() -> None:
    rt = pool([{"node": "a:1", "weight": 2}, {"node": "b:1"}],
              load_balancing={"algorithm": "least_connections"})
    a, b = rt.nodes
    a.connections, b.connections = 3, 1
    assert rt.pick(b"x") is b  # 3/2 > 1/1
    a.connections = 1
    assert rt.pick(b"x") is a


def test_ip_hash_is_sticky_and_removing_a_node_moves_only_its_clients() -> None:
    rt = pool([*NODES, {"node": "10.0.0.4:80"}], load_balancing={"algorithm": "ip_hash"})
    ips = [f"192.168.{i // 250}.{i % 250}".encode() for i in range(1000)]
    before = {ip: pick(rt, ip).address for ip in ips}
    assert all(pick(rt, ip).address == before[ip] for ip in ips)
    spread = Counter(before.values())
    assert min(spread.values()) > 150  # roughly even over 4 nodes
    gone = rt.nodes[1]
    gone.failed_until = float("inf")
    after = {ip: pick(rt, ip).address for ip in ips}
    moved = [ip for ip in ips if after[ip] != before[ip]]
    assert moved and all(before[ip] == gone.address for ip in moved)


def test_draining_disabled_dead_and_full_nodes_get_no_new_requests() -> None:
    rt = pool([{"node": "a:1", "state": "draining"}, {"node": "b:1", "state": "disabled"},
               {"node": "c:1"}, {"node": "d:1"}], basic={"max_connections_per_node": 2})
    c, d = rt.nodes[2], rt.nodes[3]
    assert set(picks(rt, 10)) == {"c:1", "d:1"}
    d.monitor_ok = False
    assert set(picks(rt, 5)) == {"c:1"}
    c.connections = 2
    assert rt.pick(b"x") is None
    assert rt.status()["nodes"]["a:1"]["state"] == "draining"
    assert rt.status()["nodes"]["d:1"]["state"] == "dead"


def test_passive_failures_mark_a_node_dead_after_the_threshold_then_it_returns() -> None:
    rt = pool(NODES, basic={"node_fail_threshold": 2, "node_fail_time": 0.1})
    node = rt.nodes[0]
    rt.record_failure(node)
    assert node.alive(0) and rt.status()["nodes"][node.address]["state"] == "alive"
    rt.record_failure(node)
    assert rt.status()["nodes"][node.address]["state"] == "dead"
    assert node.address not in picks(rt, 10)
    node.failed_until = 0.0  # the rest period over
    rt.record_success(node)
    assert node.consecutive_failures == 0 and node.address in picks(rt, 10)


def test_reload_keeps_node_state_for_nodes_that_stay() -> None:
    old = pool(NODES)
    old.nodes[0].monitor_ok = False
    old.nodes[0].requests = 7
    tree = empty_tree()
    tree["pools"]["p"] = fill_document("pools", "p", {"properties": {"basic": {"nodes_table": [
        {"node": "10.0.0.1:80", "weight": 4}, {"node": "10.0.0.9:80"}]}}})
    new = PoolRuntime(parse_config(tree, 2).pools["p"], old)
    assert new.nodes[0] is old.nodes[0] and not new.nodes[0].monitor_ok
    assert new.nodes[0].requests == 7 and new.nodes[0].weight == 4
    assert new.nodes[1].monitor_ok and new.nodes[1].requests == 0
    assert {n.address for n in new.removed} == {"10.0.0.2:80", "10.0.0.3:80"}
