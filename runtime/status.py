"""Counters and node health, aggregated over the worker processes.

Each worker writes ``<state_dir>/runtime/run/worker-<slot>.json`` about once a
second (and when it stops); :func:`snapshot` sums them. Counters are totals
since the store's run folder was last cleared (``serve`` clears it on start);
a restarted worker continues its slot's totals. Freshness: at most ~1 s old.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lockgate.paths import StatePaths

VS_COUNTERS = ("requests", "bytes_in", "bytes_out", "connections_current",
               "connections_total", "errors")
NODE_COUNTERS = ("connections", "requests", "failures")
# When workers disagree about a node, the worst view wins: one worker seeing
# it dead is worth showing.
_STATE_RANK = {"alive": 0, "draining": 1, "dead": 2}


def run_folder(state_dir: Path) -> Path:
    return StatePaths(Path(state_dir)).runtime / "run"


def worker_file(state_dir: Path, slot: int) -> Path:
    return run_folder(state_dir) / f"worker-{slot}.json"


def write_worker_status(state_dir: Path, slot: int, data: dict[str, Any]) -> None:
    """Replace one worker's status file atomically (no fsync: it is volatile)."""
    folder = run_folder(state_dir)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".worker-{slot}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, worker_file(state_dir, slot))


def read_worker_status(state_dir: Path, slot: int) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(worker_file(state_dir, slot).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data


def snapshot(state_dir: Path) -> dict[str, Any]:
    """{"virtual_servers": {name: {requests, bytes_in, bytes_out, connections_current,
    connections_total, errors}}, "pools": {name: {"nodes": {"host:port": {state,
    connections, requests, failures}}}}} summed over workers."""
    vservers: dict[str, dict[str, int]] = {}
    pools: dict[str, dict[str, Any]] = {}
    folder = run_folder(state_dir)
    files = sorted(folder.glob("worker-*.json")) if folder.is_dir() else []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            continue  # replaced or half-written between glob and read: next snapshot has it
        for name, counters in data.get("virtual_servers", {}).items():
            total = vservers.setdefault(name, dict.fromkeys(VS_COUNTERS, 0))
            for key in VS_COUNTERS:
                total[key] += int(counters.get(key, 0))
        for name, pool in data.get("pools", {}).items():
            nodes = pools.setdefault(name, {"nodes": {}})["nodes"]
            for address, node in pool.get("nodes", {}).items():
                total = nodes.setdefault(address, {"state": "alive", **dict.fromkeys(NODE_COUNTERS, 0)})
                for key in NODE_COUNTERS:
                    total[key] += int(node.get(key, 0))
                state = node.get("state", "alive")
                if _STATE_RANK.get(state, 0) > _STATE_RANK[total["state"]]:
                    total["state"] = state
    return {"virtual_servers": vservers, "pools": pools}
