"""What a member says it can serve: nothing once every node of its pools in use is dead,
or a worker has been down longer than child_timeout; and what it then wants to hold."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lockgate.runtime.cluster.state import ClusterState, Member, save_cluster
from lockgate.runtime.cluster.tipgroups import FaultToleranceService
from lockgate.runtime.config.store import ConfigStore
from lockgate.runtime.status import run_folder, write_worker_status


class NoMoves:
    """The service must not move anything in these tests; raise if it tries."""

    name = "none"

    def raise_ip(self, ip: str) -> None:
        raise AssertionError(f"raised {ip}")

    def drop_ip(self, ip: str) -> None:
        raise AssertionError(f"dropped {ip}")

    def announce(self, ip: str) -> None:
        pass

    def prepare(self, ips: list[str]) -> None:
        pass


class Proc:
    def __init__(self, pid: int, code: int | None) -> None:
        self.pid, self.code = pid, code

    def poll(self) -> int | None:
        return self.code


class Supervisor:
    def __init__(self) -> None:
        self.procs: dict[int, Any] = {0: Proc(10, None)}
        self.ready = {0: 10}


def service(tmp_path: Path) -> tuple[FaultToleranceService, Supervisor]:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({
        "virtual_servers": {"web": {"properties": {"basic": {"port": 8080, "pool": "web"}}}},
        "pools": {"web": {"properties": {"basic": {"nodes_table": [{"node": "127.0.0.1:1"}]}}}},
        "traffic_ip_groups": {"web": {"properties": {"basic": {
            "ipaddresses": ["10.0.0.1"], "machines": ["a", "b"]}}}},
        "settings": {"child_timeout": 200}}))
    ConfigStore(tmp_path).import_file(config)
    save_cluster(tmp_path, ClusterState("a", b"k" * 32, (Member("a", "127.0.0.1"),
                                                         Member("b", "127.0.0.2")), 1))
    sup = Supervisor()
    svc = FaultToleranceService(tmp_path, supervisor=sup, mover=NoMoves())
    svc._reload(force=True)
    return svc, sup


def test_dead_pools_mean_no_group(tmp_path: Path) -> None:
    svc, _ = service(tmp_path)
    assert svc._serving() == frozenset({"web"})  # no status yet: nothing known dead
    run_folder(tmp_path).mkdir(parents=True, exist_ok=True)
    write_worker_status(tmp_path, 0, {"pools": {"web": {"nodes": {
        "127.0.0.1:1": {"state": "dead"}}}}})
    svc.next_pool_check = 0.0
    assert svc._serving() == frozenset()
    # Alone, but with nothing to send traffic to: it wants no IP.
    assert svc.desired(time.monotonic()) == frozenset()
    write_worker_status(tmp_path, 0, {"pools": {"web": {"nodes": {
        "127.0.0.1:1": {"state": "alive"}}}}})
    svc.next_pool_check = 0.0
    assert svc._serving() == frozenset({"web"})
    assert svc.desired(time.monotonic()) == frozenset({"10.0.0.1"})


def test_worker_down_longer_than_child_timeout(tmp_path: Path) -> None:
    svc, sup = service(tmp_path)
    sup.procs[0] = Proc(11, 1)  # exited; the supervisor restarts it later
    assert svc._serving() == frozenset({"web"})  # down only just now
    time.sleep(0.25)  # child_timeout 200 ms
    assert svc._serving() == frozenset()
    sup.procs[0] = Proc(12, None)
    sup.ready[0] = 12  # restarted and ready again
    assert svc._serving() == frozenset({"web"})
