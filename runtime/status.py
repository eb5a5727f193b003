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
# A virtual server's state: "ok" (every listener open), "warning" (open, but a
# newer certificate could not be loaded), "error" (a listener is not open; "error"
# says why), "disabled". Worst view over the workers wins, as for nodes.
VS_STATES = ("ok", "disabled", "warning", "error")


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
    connections_total, errors, state, error, listeners, listeners_failed}}, "pools":
    {name: {"nodes": {"host:port": {state, connections, requests, failures}}}}} summed
    over workers. Each worker opens every listener, so a virtual server's ``listeners``
    counts those open in every worker, ``listeners_failed`` those not open in some
    worker, and its state is the worst a worker reports."""
    vservers: dict[str, dict[str, Any]] = {}
    pools: dict[str, dict[str, Any]] = {}
    folder = run_folder(state_dir)
    files = sorted(folder.glob("worker-*.json")) if folder.is_dir() else []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            continue  # replaced or half-written between glob and read: next snapshot has it
        for name, counters in data.get("virtual_servers", {}).items():
            total = vservers.get(name)
            if total is None:
                total = vservers[name] = {**dict.fromkeys(VS_COUNTERS, 0), "state": "ok",
                                          "error": None,
                                          "listeners": int(counters.get("listeners", 0)),
                                          "listeners_failed": 0}
            for key in VS_COUNTERS:
                total[key] += int(counters.get(key, 0))
            _merge_state(total, counters)
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


def management_snapshot(state_dir: Path) -> dict[str, Any]:
    """:func:`snapshot` plus ``"licence"`` (runtime/licence.py), as the files say now
    (the workers pick a change up within ~1 s): ``accepted`` false means nothing is
    proxied, and ``message`` says why. What the REST API, /metrics and the Admin UI show."""
    from lockgate.runtime.licence import licence_state

    return {**snapshot(state_dir), "licence": licence_state(state_dir).as_dict()}


def _merge_state(total: dict[str, Any], worker: dict[str, Any]) -> None:
    state = worker.get("state", "ok")  # status files from before states were kept
    if state not in VS_STATES:
        return
    if VS_STATES.index(state) > VS_STATES.index(total["state"]):
        total["state"] = state
        total["error"] = worker.get("error")
    elif total["error"] is None:
        total["error"] = worker.get("error")
    # open in every worker / not open in some worker
    total["listeners"] = min(total["listeners"], int(worker.get("listeners", 0)))
    total["listeners_failed"] = max(total["listeners_failed"],
                                    int(worker.get("listeners_failed", 0)))
