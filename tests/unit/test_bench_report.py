"""Ratio math, tables and the final JSON line of ``make bench``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lockgate.bench import parse_only
from lockgate.benchmarks import runtime
from lockgate.benchmarks.procstat import IdleWait
from lockgate.benchmarks.report import json_line, median, paired_median_ratio, ratio, table
from lockgate.benchmarks.wrk import WrkResult
from lockgate.errors import BadInput

REPO = Path(__file__).resolve().parents[2]


def test_median_and_ratio_handle_unknowns() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, None, 3.0]) == 2.0
    assert median([]) is None and median([None]) is None
    assert ratio(30.0, 15.0) == 2.0
    assert ratio(None, 1.0) is None and ratio(1.0, None) is None and ratio(1.0, 0.0) is None


def test_paired_ratio_is_median_of_round_ratios_and_strict() -> None:
    # Round ratios 2.0 and 1.0 -> 1.5; the ratio of the medians would be 1.5 too here,
    # so use rounds where they differ: 10/5=2, 30/10=3, 4/4=1 -> median 2.
    assert paired_median_ratio([(10, 5), (30, 10), (4, 4)]) == 2.0
    assert paired_median_ratio([(10, 5), (None, 10)]) is None
    assert paired_median_ratio([]) is None


def case(proxy: str, mode: str, rnd: int, *, requests: int, cpu_s: float,
         p99_ms: float, non_2xx: int = 0, workers: int = 1) -> runtime.Case:
    wrk = WrkResult(requests=requests, duration_s=10.0, rps=requests / 10,
                    latency_s={50: p99_ms / 2e3, 99: p99_ms / 1e3}, non_2xx=non_2xx)
    return runtime.Case(rnd, proxy, mode, workers, workers == 1, wrk, cpu_s, 1.0, 1.0, 10.0,
                        1.5, IdleWait(1.0, 0.1, True))


def report_with(*cases: runtime.Case, rounds: int = 2) -> runtime.RuntimeReport:
    opts = runtime.RuntimeOptions(rounds=rounds, worker_counts=(1,))
    return runtime.RuntimeReport(opts, pinned_ok=True, cases=list(cases))


def test_summary_ratios_per_round_then_median() -> None:
    report = report_with(
        case("lockgate", "http", 1, requests=400_000, cpu_s=8.0, p99_ms=2.0),
        case("haproxy", "http", 1, requests=500_000, cpu_s=5.0, p99_ms=1.0),
        case("lockgate", "http", 2, requests=600_000, cpu_s=9.0, p99_ms=3.0),
        case("haproxy", "http", 2, requests=500_000, cpu_s=5.0, p99_ms=1.0),
        case("lockgate", "tcp", 1, requests=500_000, cpu_s=5.0, p99_ms=1.0),
        case("haproxy", "tcp", 1, requests=500_000, cpu_s=5.0, p99_ms=1.0),
        case("lockgate", "tcp", 2, requests=500_000, cpu_s=5.0, p99_ms=1.0),
        case("haproxy", "tcp", 2, requests=500_000, cpu_s=5.0, p99_ms=1.0),
    )
    data = runtime.summary(report)
    assert data["http_ratio"] == pytest.approx((0.8 + 1.2) / 2)
    # CPU µs/request: lockgate 20 and 15, HAProxy 10 and 10 -> ratios 2.0 and 1.5
    assert data["http_cpu_ratio"] == pytest.approx(1.75)
    assert data["p99_ratio"] == pytest.approx(2.5)
    assert data["tcp_ratio"] == data["tcp_cpu_ratio"] == 1.0
    assert data["runtime_cases"]["http_1w"]["lockgate"]["cpu_us_per_req"] == 17.5
    assert data["invalid_cases"] == []
    text = "\n".join(runtime.tables(report, data))
    assert "Round 2 — 1 worker(s) vs nbthread 1, pinned" in text
    assert "http 1w" in text and "1.75" in text


def test_a_proxy_answering_errors_fast_gets_no_ratio() -> None:
    report = report_with(
        # lockgate "serves" twice the rate, but 5 % of it is 502s.
        case("lockgate", "http", 1, requests=1_000_000, cpu_s=5.0, p99_ms=0.5,
             non_2xx=50_000),
        case("haproxy", "http", 1, requests=500_000, cpu_s=5.0, p99_ms=1.0),
        rounds=1,
    )
    data = runtime.summary(report)
    assert data["http_ratio"] is None and data["http_cpu_ratio"] is None
    assert data["p99_ratio"] is None
    assert data["invalid_cases"] == ["round 1 lockgate http 1w: 50000 non-2xx/3xx"]
    assert data["runtime_cases"]["http_1w"]["lockgate"]["errors"] == 50_000
    # Throughput counts only good answers even where errors stay under the 1 % bar.
    few = case("lockgate", "http", 1, requests=1_000_000, cpu_s=5.0, p99_ms=1, non_2xx=5_000)
    assert few.valid and few.rps == 99_500
    assert "1 % failed requests" in "\n".join(runtime.tables(report, data))


def test_table_aligns_columns() -> None:
    text = table(["case", "rps"], [["http haproxy", "1,000"], ["tcp", "25"]], "Title")
    assert text.splitlines() == ["Title", "case            rps", "------------  -----",
                                 "http haproxy  1,000", "tcp              25"]


def test_json_line_is_one_line_and_refuses_nan() -> None:
    line = json_line({"http_ratio": 0.5, "nested": {"text": "a\nb"}})
    assert "\n" not in line and json.loads(line)["nested"]["text"] == "a\nb"
    with pytest.raises(ValueError):
        json_line({"x": float("nan")})


def test_only_parts(tmp_path: Path) -> None:
    assert parse_only(None, tmp_path) == ["runtime", "firstboot", "publish", "cluster"]
    (tmp_path / "manifest.json").write_text("{}")
    assert parse_only(None, tmp_path) == ["runtime", "firstboot", "image", "upgrade", "publish",
                                          "cluster"]
    assert parse_only("image,runtime", tmp_path) == ["runtime", "image"]
    with pytest.raises(BadInput, match="--only speed: choose from runtime, firstboot, image, upgrade, publish, cluster"):
        parse_only("speed", tmp_path)


def test_bench_firstboot_prints_tables_then_a_json_last_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "lockgate.bench", "--only", "firstboot"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip("\n").splitlines()
    data = json.loads(lines[-1])
    assert data["parts"] == ["firstboot"] and data["firstboot_runs"] == 5
    assert 0 < data["firstboot_parse_apply_s"] <= data["firstboot_in_process_s"]
    assert data["firstboot_in_process_s"] < data["firstboot_s"] < 60
    assert data["cloud_init_reference_s"] == [1.4, 3.3]
    assert any(line.startswith("First boot: median of 5 runs") for line in lines)
    assert "Bench-Firstboot" not in proc.stdout + proc.stderr  # the password stays out


def test_bench_refuses_unknown_part_with_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "lockgate.bench", "--only", "speed"],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: --only speed")


def test_image_build_steps_and_demo_times_are_read_from_their_output() -> None:
    from lockgate.benchmarks.image import parse_build_steps, parse_demo_times

    build = ("==> build_rootfs\n    build_rootfs done in 1.5 s\n==> make_disk\n"
             "    raw      build/x.raw  2,048 MiB  (0.4 s)\n    make_disk done in 12.0 s\n"
             "==> built build/x.raw in 13.5 s\n")
    assert parse_build_steps(build) == {"build_rootfs": 1.5, "make_disk": 12.0}
    demo = "  VM start -> ready 41.2 s, -> first proxied 200 44.9 s\n"
    assert parse_demo_times(demo) == (41.2, 44.9)
    assert parse_demo_times("==> appliance ready in 41.2 s") is None
    from lockgate.benchmarks.image import _ACCEL

    line = "==> booting build (bios) - accelerator: TCG (software emulation): this host is a VM"
    match = _ACCEL.search(line)
    assert match is not None and match.group(1) == "TCG (software emulation)"


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "x"], "error: --workers x: expected numbers like 1,2"),
    (["--workers", "0"], "error: --workers 0: each count must be 1..64"),
    (["--image-skip", "foo"], "error: --image-skip foo: choose from rebuild, boot"),
])
def test_bad_options_fail_before_anything_runs(args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "lockgate.bench", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr.strip()) == (2, "", message)


def test_idle_memory_ratio_and_per_round_spread() -> None:
    from lockgate.benchmarks.idleconns import IdleRss

    mib = 1024 * 1024
    cases = [case(proxy, mode, rnd, requests=500_000, cpu_s=cpu, p99_ms=1.0)
             for rnd, (ours, peer) in enumerate([(4.0, 5.0), (5.0, 5.0), (6.0, 5.0)], start=1)
             for mode in ("http", "tcp")
             for proxy, cpu in (("lockgate", ours), ("haproxy", peer))]
    report = report_with(*cases, rounds=3)
    # 1,000 idle connections: lockgate 10, 12, 9 MiB per 10k; HAProxy 10 each round.
    for rnd, ours in ((1, 1.0), (2, 1.2), (3, 0.9)):
        report.idle_rss.setdefault("lockgate", {})[rnd] = IdleRss(1000, 1000, 0, int(ours * mib))
        report.idle_rss.setdefault("haproxy", {})[rnd] = IdleRss(1000, 1000, 0, mib)
    report.started = {"nginx": [11], "haproxy": [12, 14], "lockgate": [13, 15]}
    data = runtime.summary(report)
    assert data["http_cpu_ratio"] == 1.0 and data["tcp_cpu_ratio"] == 1.0
    assert data["http_cpu_ratio_rounds"] == [0.8, 1.0, 1.2]
    assert data["http_cpu_ratio_spread"] == pytest.approx(0.4)
    assert data["rss_idle_ratio"] == 1.0
    assert data["rss_idle_ratio_rounds"] == [1.0, 1.2, 0.9]
    assert data["rss_idle_ratio_spread"] == pytest.approx(0.3)
    assert data["runtime_processes"] == {"nginx": [11], "haproxy": [12, 14],
                                         "lockgate": [13, 15]}
    # A round without an idle figure for one side: no ratio rather than a flattering one.
    del report.idle_rss["lockgate"][2]
    data = runtime.summary(report)
    assert data["rss_idle_ratio"] is None
    assert data["rss_idle_ratio_rounds"] == [1.0, None, 0.9]


def test_default_is_three_interleaved_rounds() -> None:
    assert runtime.RuntimeOptions().rounds >= 3
