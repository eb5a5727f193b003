"""One short real run of the runtime benchmark: nginx, HAProxy, lockgate and wrk on loopback.

Tiny durations, one round, one worker: it proves the harness starts, measures
and stops everything, not how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lockgate.benchmarks import procstat
from lockgate.benchmarks.servers import missing_tools

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_runtime_bench_smoke() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip("runtime bench needs " + "; ".join(missing))
    before = {s.pid for s in procstat.all_stats()}
    proc = subprocess.run(
        [sys.executable, "-m", "lockgate.bench", "--only", "runtime", "--duration", "1",
         "--warmup", "1", "--rounds", "1", "--workers", "1", "--idle-connections", "200",
         "--max-idle-wait", "0"],
        capture_output=True, text=True, timeout=240, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.rstrip("\n").splitlines()[-1])
    assert data["invalid_cases"] == [], data["invalid_cases"]
    cases = data["runtime_cases"]
    for mode in ("http", "tcp"):
        assert cases[f"{mode}_1w"]["haproxy"]["rps"] > 100
        assert cases[f"{mode}_1w"]["haproxy"]["errors"] == 0
    if "lockgate_missing" not in data:
        for key in ("http_ratio", "tcp_ratio", "p99_ratio", "http_cpu_ratio", "tcp_cpu_ratio"):
            assert isinstance(data[key], float) and data[key] > 0, key
        assert set(data["rss_per_10k_idle_mib"]) == {"haproxy", "lockgate"}
    assert "Round 1 — 1 worker(s) vs nbthread 1" in proc.stdout
    # Nothing the bench started is left running.
    leftovers = [s for s in procstat.all_stats() if s.pid not in before
                 and s.comm in ("nginx", "haproxy", "wrk", "lockgate")]
    assert leftovers == []
