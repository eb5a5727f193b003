"""One short real run of the runtime benchmark: nginx, HAProxy, lockgate and wrk on loopback.

Tiny durations, one round, one worker: it proves the harness starts, measures
and stops everything, not how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lockgate.benchmarks import procstat, runtime
from lockgate.benchmarks.procstat import IdleWait
from lockgate.benchmarks.servers import missing_tools
from lockgate.benchmarks.wrk import WrkResult

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_runtime_bench_smoke() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip("runtime bench needs " + "; ".join(missing))
    proc = subprocess.run(
        [sys.executable, "-m", "lockgate.bench", "--only", "runtime", "--duration", "1",
         "--warmup", "1", "--rounds", "1", "--workers", "1", "--idle-connections", "2000",
         "--max-idle-wait", "0"],
        capture_output=True, text=True, timeout=240, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.rstrip("\n").splitlines()[-1])
    check_runtime_run(data)
    assert "Round 1 — 1 worker(s) vs nbthread 1" in proc.stdout
    # Nothing the bench started is left running -- judged by the processes it started
    # (each in a session of its own), not by any haproxy or nginx on the machine.
    sessions = {pid for pids in data["runtime_processes"].values() for pid in pids}
    assert procstat.alive_in_sessions(sessions) == []


def check_runtime_run(data: dict[str, Any]) -> None:
    """What a one-round run's JSON must hold for the smoke test to pass."""
    # lockgate itself must have run: HAProxy alone proves nothing about lockgate.
    assert "lockgate_missing" not in data, data["lockgate_missing"]
    assert data["invalid_cases"] == [], data["invalid_cases"]
    cases = data["runtime_cases"]
    for mode in ("http", "tcp"):
        for proxy in ("haproxy", "lockgate"):
            assert proxy in cases[f"{mode}_1w"], (mode, proxy)
            assert cases[f"{mode}_1w"][proxy]["rps"] > 100, (mode, proxy)
            assert cases[f"{mode}_1w"][proxy]["errors"] == 0, (mode, proxy)
    for key in ("http_ratio", "tcp_ratio", "p99_ratio", "http_cpu_ratio", "tcp_cpu_ratio"):
        assert isinstance(data[key], float) and data[key] > 0, key
    # lockgate holds a silent connection in ~50 B (acceptor.py): its RSS may not move at all
    assert isinstance(data["rss_idle_ratio"], float) and data["rss_idle_ratio"] >= 0
    assert data["rss_per_10k_idle_mib"]["haproxy"] > 0
    for key in ("http_cpu_ratio", "tcp_cpu_ratio", "rss_idle_ratio"):
        assert data[f"{key}_rounds"] == [data[key]] and data[f"{key}_spread"] == 0.0, key
    assert set(data["rss_per_10k_idle_mib"]) == {"haproxy", "lockgate"}
    assert set(data["runtime_processes"]) == {"nginx", "haproxy", "lockgate"}


def test_a_run_without_lockgate_fails_the_smoke_check() -> None:
    # What the bench reports when 'lockgate runtime serve' cannot start: HAProxy alone.
    wrk = WrkResult(requests=5000, duration_s=1.0, rps=5000, latency_s={50: 1e-3, 99: 2e-3})
    report = runtime.RuntimeReport(
        runtime.RuntimeOptions(rounds=1, worker_counts=(1,)), pinned_ok=True,
        lockgate_missing="'lockgate runtime serve' is not available (boom)",
        cases=[runtime.Case(1, "haproxy", mode, 1, True, wrk, 0.5, 0.5, 0.5, 1.0, 1.0,
                            IdleWait(0.0, 0.0, True)) for mode in ("http", "tcp")],
        started={"nginx": [1], "haproxy": [2]})
    data = runtime.summary(report)
    with pytest.raises(AssertionError, match="not available"):
        check_runtime_run(data)
    del data["lockgate_missing"]  # even unlabelled, the missing side is noticed
    with pytest.raises(AssertionError, match="lockgate"):
        check_runtime_run(data)
