"""status.snapshot sums worker files; the worst node state wins; notify_reload finds serve."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lockgate.runtime import status
from lockgate.runtime.proxy.context import VsStats
from lockgate.runtime.workers import notify_reload, pid_file


def worker(requests: int, node_state: str, current: int = 1, **vs_state: object) -> dict:
    return {"pid": 1, "virtual_servers": {"web": {
        "requests": requests, "bytes_in": 10, "bytes_out": 20, "connections_current": current,
        "connections_total": 3, "errors": 1, **vs_state}},
        "pools": {"web": {"nodes": {"127.0.0.1:80": {
            "state": node_state, "connections": 2, "requests": requests, "failures": 0}}}}}


def test_snapshot_sums_workers_and_worst_state_wins(tmp_path: Path) -> None:
    assert status.snapshot(tmp_path) == {"virtual_servers": {}, "pools": {}}
    status.run_folder(tmp_path).mkdir(parents=True)
    status.write_worker_status(tmp_path, 0, worker(5, "alive"))
    status.write_worker_status(tmp_path, 1, worker(7, "dead", current=0))
    (status.run_folder(tmp_path) / "worker-2.json").write_text('{"half": ')  # being replaced
    snap = status.snapshot(tmp_path)
    assert snap["virtual_servers"]["web"] == {
        "requests": 12, "bytes_in": 20, "bytes_out": 40, "connections_current": 1,
        "connections_total": 6, "errors": 2, "state": "ok", "error": None, "listeners": 0,
        "listeners_failed": 0}
    assert snap["pools"]["web"]["nodes"]["127.0.0.1:80"] == {
        "state": "dead", "connections": 4, "requests": 12, "failures": 0}
    saved = status.read_worker_status(tmp_path, 1)
    assert saved is not None
    assert saved["virtual_servers"]["web"]["requests"] == 7


def test_snapshot_virtual_server_state_is_the_worst_a_worker_reports(tmp_path: Path) -> None:
    status.run_folder(tmp_path).mkdir(parents=True)
    status.write_worker_status(tmp_path, 0, worker(1, "alive", state="ok", error=None,
                                                   listeners=2, listeners_failed=0))
    status.write_worker_status(tmp_path, 1, worker(1, "alive", state="error",
                                                   error="cannot listen on 192.0.2.1:80",
                                                   listeners=1, listeners_failed=1))
    status.write_worker_status(tmp_path, 2, worker(1, "alive", state="warning",
                                                   error="cannot load certificate",
                                                   listeners=2, listeners_failed=0))
    web = status.snapshot(tmp_path)["virtual_servers"]["web"]
    assert (web["state"], web["error"]) == ("error", "cannot listen on 192.0.2.1:80")
    assert (web["listeners"], web["listeners_failed"]) == (1, 1)


def test_notify_reload_signals_the_supervisor_named_in_the_pid_file(tmp_path: Path) -> None:
    assert notify_reload(tmp_path) is False  # nothing serving
    status.run_folder(tmp_path).mkdir(parents=True)
    received: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: received.append(signum))
    try:
        pid_file(tmp_path).write_text(f"{os.getpid()}\n")
        assert notify_reload(tmp_path) is True
        assert received == [signal.SIGHUP]
    finally:
        signal.signal(signal.SIGHUP, previous)
    pid_file(tmp_path).write_text("999999999\n")  # a stale file from a crashed serve
    assert notify_reload(tmp_path) is False


def test_counters_round_trip_through_the_status_file_shape() -> None:
    stats = VsStats()
    stats.requests, stats.bytes_in, stats.bytes_out, stats.errors = 12, 20, 40, 2
    stats.connections_total, stats.connections_current = 6, 1
    saved = stats.as_dict()
    assert saved == {"requests": 12, "bytes_in": 20, "bytes_out": 40, "errors": 2,
                     "connections_total": 6, "connections_current": 1}
    again = VsStats()
    again.restore(saved)
    # totals continue in the next worker; open connections belong to the old one
    assert again.as_dict() == {**saved, "connections_current": 0}
