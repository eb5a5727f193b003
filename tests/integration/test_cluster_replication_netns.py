"""Three members in three network namespaces on a bridge, a client in a fourth (all made
and deleted by the test): join with the right fingerprint, a wrong one refused showing
both, ``unsafe`` accepted with a warning, a change on one member reaches the others
(measured), a member that was down catches up."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lockgate.benchmarks.cluster import NsMember, Topology, client_call, cluster_of_three
from lockgate.runtime.cluster.state import load_cluster

pytestmark = pytest.mark.root
PASSWORD = "netns-cluster-pw-1"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Topology, list[NsMember]]]:
    with tempfile.TemporaryDirectory(prefix="lockgate-test-cluster-") as tmp, \
            cluster_of_three(Path(tmp), PASSWORD) as running:
        yield running


def joined(members: list[NsMember]) -> None:
    first = members[0]
    for member in members[1:]:
        if load_cluster(member.state_dir) is None:
            code, _, err = member.join(first, first.fingerprint)
            assert code == 0, err


def get_nodes(topo: Topology, member: NsMember, pool: str) -> list[str] | None:
    nodes: list[str] | None = client_call(topo, PASSWORD, "get", "--address", member.address,
                                          "--pool", pool)["nodes"]
    return nodes


def test_join_pinned_refused_and_unsafe(cluster: tuple[Topology, list[NsMember]]) -> None:
    topo, (tm1, tm2, tm3) = cluster
    wrong = "12:" * 19 + "34"
    code, _, err = tm2.join(tm1, wrong)
    assert code != 0 and wrong in err and tm1.fingerprint in err, err
    assert load_cluster(tm2.state_dir) is None

    code, out, err = tm2.join(tm1, tm1.fingerprint)
    assert code == 0, err
    assert "members tm1, tm2" in out

    code, out, err = tm3.join(tm1, "unsafe")
    assert code == 0, err
    assert "WARNING" in err and "unsafe" in err
    seen = client_call(topo, PASSWORD, "cluster", "--address", tm1.address)["cluster"]
    assert sorted(m["name"] for m in seen["members"]) == ["tm1", "tm2", "tm3"]
    assert {m["name"]: m["address"] for m in seen["members"]}["tm3"] == tm3.address
    on_tm2 = load_cluster(tm2.state_dir)
    assert on_tm2 is not None
    deadline = time.monotonic() + 10  # tm2 learns of tm3 from tm1 over the control port
    while len(on_tm2.members) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        on_tm2 = load_cluster(tm2.state_dir)
        assert on_tm2 is not None
    assert sorted(m.name for m in on_tm2.members) == ["tm1", "tm2", "tm3"]


def test_a_change_reaches_every_member_within_a_second(
        cluster: tuple[Topology, list[NsMember]]) -> None:
    topo, members = cluster
    joined(members)
    tm1, tm2, tm3 = members
    # One warm-up round, not counted: right after the joins the links may still be
    # forming (a new member is refused until every other member has heard of it).
    times = client_call(topo, PASSWORD, "probe", "--source", tm1.address, "--targets",
                        f"{tm2.address},{tm3.address}", "--rounds", "6")["ms"][1:]
    times += client_call(topo, PASSWORD, "probe", "--source", tm3.address, "--targets",
                         f"{tm1.address},{tm2.address}", "--rounds", "5")["ms"]
    print(f"replication_ms median {statistics.median(times):.1f} max {max(times):.1f}")
    assert max(times) < 1000, times


def test_a_member_that_was_down_catches_up(cluster: tuple[Topology, list[NsMember]]) -> None:
    topo, members = cluster
    joined(members)
    tm1, tm2, tm3 = members
    tm3.stop()
    assert client_call(topo, PASSWORD, "put", "--address", tm1.address, "--pool", "while-down",
                       "--node", "192.0.2.7:80")["status"] == 201
    assert _eventually(lambda: get_nodes(topo, tm2, "while-down") is not None)
    tm3.start()
    assert _eventually(lambda: get_nodes(topo, tm3, "while-down") == ["192.0.2.7:80"])

    topo.link(2, False)  # the cable, not the process
    assert client_call(topo, PASSWORD, "put", "--address", tm1.address, "--pool", "cut-off",
                       "--node", "192.0.2.8:80")["status"] == 201
    topo.link(2, True)
    assert _eventually(lambda: get_nodes(topo, tm2, "cut-off") == ["192.0.2.8:80"], 20)


def _eventually(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False
