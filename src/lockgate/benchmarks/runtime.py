"""The main benchmark: lockgate's proxy against HAProxy, in one run, on loopback.

Per round: 1 worker vs ``nbthread 1`` pinned (proxy on CPU 0, wrk and nginx on
CPU 1), then 2 vs 2 unpinned; each with HTTP keep-alive and TCP relay
(``wrk -t1 -c50``) and, for the 1-worker pair, the RSS of 2,000 idle
connections. The proxies take turns going first so neither always gets the
quieter minute. Every case waits for an idle machine (bounded), warms up,
then measures: wrk's report plus utime+stime of ALL the proxy's processes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.benchmarks import procstat
from lockgate.benchmarks.idleconns import IdleRss, measure_idle_rss
from lockgate.benchmarks.report import (
    fmt,
    median,
    paired_median_ratio,
    ratio,
    rounded,
    say,
    table,
)
from lockgate.benchmarks.servers import (
    Child,
    ProxyPorts,
    haproxy,
    lockgate_available,
    lockgate_proxy,
    nginx_backend,
)
from lockgate.benchmarks.wrk import WrkResult, run_wrk
from lockgate.errors import Failure

PROXIES = ("haproxy", "lockgate")
MODES = ("http", "tcp")
MAX_ERROR_SHARE = 0.01  # more than 1 % failed requests: the case does not count


@dataclass(frozen=True)
class RuntimeOptions:
    duration_s: float = 10.0
    warmup_s: float = 2.0
    rounds: int = 3  # the headline ratios are medians of at least 3 interleaved rounds
    connections: int = 50
    idle_connections: int = 2000
    max_idle_wait_s: float = 30.0
    max_busy_cores: float = 0.25  # what "idle" allows others to use before a case
    worker_counts: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Case:
    round: int
    proxy: str
    mode: str
    workers: int
    pinned: bool
    wrk: WrkResult
    proxy_cpu_s: float
    backend_cpu_s: float
    wrk_cpu_s: float
    wall_s: float
    machine_busy_cores: float
    idle: procstat.IdleWait
    proxy_user_s: float | None = None  # the proxy's CPU time split (user + sys = proxy_cpu_s)
    proxy_sys_s: float | None = None

    @property
    def valid(self) -> bool:
        return self.wrk.good_requests > 0 and self.wrk.error_share <= MAX_ERROR_SHARE

    @property
    def rps(self) -> float:
        """Successful responses per second (errors do not count as throughput)."""
        return self.wrk.good_requests / self.wrk.duration_s if self.wrk.duration_s else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        good = self.wrk.good_requests
        return self.proxy_cpu_s * 1e6 / good if good else None

    @property
    def user_us_per_request(self) -> float | None:
        good = self.wrk.good_requests
        return self.proxy_user_s * 1e6 / good if good and self.proxy_user_s is not None else None

    @property
    def sys_us_per_request(self) -> float | None:
        good = self.wrk.good_requests
        return self.proxy_sys_s * 1e6 / good if good and self.proxy_sys_s is not None else None

    @property
    def p50_ms(self) -> float | None:
        value = self.wrk.latency_s.get(50)
        return None if value is None else value * 1e3

    @property
    def p99_ms(self) -> float | None:
        value = self.wrk.latency_s.get(99)
        return None if value is None else value * 1e3

    @property
    def other_cores(self) -> float:
        """CPU used by everything except proxy, backend and wrk during the run, in cores."""
        ours = (self.proxy_cpu_s + self.backend_cpu_s + self.wrk_cpu_s) / self.wall_s
        return max(0.0, self.machine_busy_cores - ours)


@dataclass
class RuntimeReport:
    options: RuntimeOptions
    pinned_ok: bool
    lockgate_missing: str | None = None
    cases: list[Case] = field(default_factory=list)
    idle_rss: dict[str, dict[int, IdleRss]] = field(default_factory=dict)  # proxy -> round ->
    notes: list[str] = field(default_factory=list)
    started: dict[str, list[int]] = field(default_factory=dict)  # name -> pids (own sessions)

    def case(self, rnd: int, proxy: str, mode: str, workers: int) -> Case | None:
        for c in self.cases:
            if (c.round, c.proxy, c.mode, c.workers) == (rnd, proxy, mode, workers):
                return c
        return None


# --- running --------------------------------------------------------------------

def measure_case(rnd: int, proxy: str, mode: str, workers: int, pinned: bool, url: str,
                 proxy_pid: int, backend_pid: int, opts: RuntimeOptions) -> Case:
    idle = procstat.wait_idle(opts.max_busy_cores, opts.max_idle_wait_s)
    wrk_cpus = "1" if pinned else None
    run_wrk(url, opts.warmup_s, connections=opts.connections, cpus=wrk_cpus)  # warm-up
    proxy_before = procstat.tree_cpu_seconds(proxy_pid)
    user_before, sys_before = procstat.tree_user_sys_seconds(proxy_pid)
    backend_before = procstat.tree_cpu_seconds(backend_pid)
    machine_before = procstat.cpu_times()
    began = time.monotonic()
    run = run_wrk(url, opts.duration_s, connections=opts.connections, cpus=wrk_cpus)
    wall = time.monotonic() - began
    machine_after = procstat.cpu_times()
    user_after, sys_after = procstat.tree_user_sys_seconds(proxy_pid)
    case = Case(
        round=rnd, proxy=proxy, mode=mode, workers=workers, pinned=pinned, wrk=run.result,
        proxy_cpu_s=procstat.tree_cpu_seconds(proxy_pid) - proxy_before,
        backend_cpu_s=procstat.tree_cpu_seconds(backend_pid) - backend_before,
        wrk_cpu_s=run.cpu_s, wall_s=wall,
        machine_busy_cores=procstat.busy_cores(machine_before, machine_after,
                                               os.cpu_count() or 1),
        idle=idle, proxy_user_s=user_after - user_before, proxy_sys_s=sys_after - sys_before,
    )
    errors = "" if not case.wrk.errors else f", ERRORS: {case.wrk.describe_errors()}"
    say(f"  {proxy:<8} {mode:<4} {case.rps:9.0f} rps  {fmt(case.cpu_us_per_request, '.1f')} "
        f"µs CPU/req (user {fmt(case.user_us_per_request, '.1f')}, sys "
        f"{fmt(case.sys_us_per_request, '.1f')})  p99 {fmt(case.p99_ms)} ms{errors}")
    return case


ProxyStarter = Callable[[Path, int, int], contextlib.AbstractContextManager[tuple[Child, ProxyPorts]]]
STARTERS: dict[str, ProxyStarter] = {"haproxy": haproxy, "lockgate": lockgate_proxy}


def run_runtime(opts: RuntimeOptions) -> RuntimeReport:
    cpus = sorted(os.sched_getaffinity(0))
    pinned_ok = len(cpus) >= 2
    report = RuntimeReport(opts, pinned_ok)
    report.lockgate_missing = lockgate_available()
    proxies = [p for p in PROXIES if p != "lockgate" or report.lockgate_missing is None]
    if report.lockgate_missing:
        say(f"lockgate left out: {report.lockgate_missing}; measuring HAProxy alone")
    all_cpus = set(cpus)
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as tmp, \
            nginx_backend(Path(tmp)) as (nginx, backend_port):
        report.started.setdefault("nginx", []).append(nginx.pid)
        for rnd in range(1, opts.rounds + 1):
            order = proxies if rnd % 2 else list(reversed(proxies))
            for workers in opts.worker_counts:
                pinned = pinned_ok and workers == 1
                procstat.set_tree_affinity(nginx.pid, {cpus[1]} if pinned else all_cpus)
                where = ("pinned: proxy CPU 0, wrk+nginx CPU 1" if pinned else "not pinned")
                say(f"round {rnd}/{opts.rounds}: {workers} worker(s)/thread(s), {where}")
                for proxy in order:
                    with STARTERS[proxy](Path(tmp), workers, backend_port) as (child, ports):
                        report.started.setdefault(proxy, []).append(child.pid)
                        procstat.set_tree_affinity(child.pid,
                                                   {cpus[0]} if pinned else all_cpus)
                        for mode in MODES:
                            port = ports.http if mode == "http" else ports.tcp
                            report.cases.append(measure_case(
                                rnd, proxy, mode, workers, pinned, f"http://127.0.0.1:{port}/",
                                child.pid, nginx.pid, opts))
                        if workers == 1 and opts.idle_connections > 0:
                            idle_rss(report, rnd, proxy, child.pid, ports.http)
    return report


def idle_rss(report: RuntimeReport, rnd: int, proxy: str, pid: int, port: int) -> None:
    """One idle-memory figure; a failure is noted, not fatal to the throughput figures."""
    count = report.options.idle_connections
    try:
        rss = measure_idle_rss(pid, port, count)
    except Failure as exc:
        report.notes.append(f"round {rnd} {proxy} idle connections: {exc.format_message()}")
        say(f"  {proxy:<8} idle connections: FAILED: {exc.format_message()}")
        return
    report.idle_rss.setdefault(proxy, {})[rnd] = rss
    say(f"  {proxy:<8} {count} idle connections: {rss.per_10k_mib:.1f} MiB per 10k")


# --- reporting ------------------------------------------------------------------

def _case_row(c: Case) -> list[str]:
    errors = "0" if not c.wrk.errors else c.wrk.describe_errors() + ("" if c.valid else " !")
    wait = f"{c.idle.waited_s:.0f}s" + ("" if c.idle.reached else " (busy)")
    return [f"{c.mode} {c.proxy}", f"{c.rps:,.0f}", fmt(c.cpu_us_per_request, ".1f"),
            fmt(c.p50_ms, ".3f"), fmt(c.p99_ms, ".3f"), errors,
            f"{c.proxy_cpu_s / c.wall_s:.2f}", f"{c.other_cores:.2f}", wait]


CASE_HEADERS = ["case", "rps", "CPU µs/req", "p50 ms", "p99 ms", "errors", "proxy cores",
                "others' cores", "idle wait"]


def _side(report: RuntimeReport, proxy: str, mode: str, workers: int) -> list[Case]:
    return [c for r in range(1, report.options.rounds + 1)
            if (c := report.case(r, proxy, mode, workers)) is not None]


def _pairs(report: RuntimeReport, mode: str, workers: int,
           metric: Callable[[Case], float | None]) -> list[tuple[float | None, float | None]]:
    pairs = []
    for rnd in range(1, report.options.rounds + 1):
        ours = report.case(rnd, "lockgate", mode, workers)
        peer = report.case(rnd, "haproxy", mode, workers)
        pairs.append((metric(ours) if ours and ours.valid else None,
                      metric(peer) if peer and peer.valid else None))
    return pairs


def _cpu(case: Case) -> float | None:
    return case.cpu_us_per_request


def _idle(report: RuntimeReport, proxy: str, rnd: int) -> float | None:
    rss = report.idle_rss.get(proxy, {}).get(rnd)
    return None if rss is None else rss.per_10k_mib


def summary(report: RuntimeReport) -> dict[str, Any]:
    """The runtime part of the JSON line."""
    out: dict[str, Any] = {}
    for workers in report.options.worker_counts:
        suffix = "" if workers == 1 else f"_{workers}w"
        for mode in MODES:
            out[f"{mode}_ratio{suffix}"] = rounded(paired_median_ratio(
                _pairs(report, mode, workers, lambda c: c.rps)))
            out[f"{mode}_cpu_ratio{suffix}"] = rounded(paired_median_ratio(
                _pairs(report, mode, workers, lambda c: c.cpu_us_per_request)))
        out[f"p99_ratio{suffix}"] = rounded(paired_median_ratio(
            _pairs(report, "http", workers, lambda c: c.p99_ms)))
        out[f"tcp_p99_ratio{suffix}"] = rounded(paired_median_ratio(
            _pairs(report, "tcp", workers, lambda c: c.p99_ms)))
    out["rss_per_10k_idle_mib"] = {
        proxy: rounded(median(r.per_10k_mib for r in runs.values()), 1)
        for proxy, runs in report.idle_rss.items()}
    idle_pairs = [(_idle(report, "lockgate", rnd), _idle(report, "haproxy", rnd))
                  for rnd in range(1, report.options.rounds + 1)]
    out["rss_idle_ratio"] = rounded(paired_median_ratio(idle_pairs))
    # The headline ratios, round by round: how far apart the rounds are says how much
    # a median of them can be trusted.
    for key, pairs in (("http_cpu_ratio", _pairs(report, "http", 1, _cpu)),
                       ("tcp_cpu_ratio", _pairs(report, "tcp", 1, _cpu)),
                       ("rss_idle_ratio", idle_pairs)):
        per_round = [rounded(ratio(a, b)) for a, b in pairs]
        out[f"{key}_rounds"] = per_round
        known = [r for r in per_round if r is not None]
        out[f"{key}_spread"] = rounded(max(known) - min(known)) if known else None
    cases: dict[str, Any] = {}
    for workers in report.options.worker_counts:
        for mode in MODES:
            per_proxy = {}
            for proxy in PROXIES:
                side = _side(report, proxy, mode, workers)
                if side:
                    per_proxy[proxy] = {
                        "rps": rounded(median(c.rps for c in side), 0),
                        "cpu_us_per_req": rounded(median(c.cpu_us_per_request for c in side), 2),
                        "user_us_per_req": rounded(median(c.user_us_per_request for c in side), 2),
                        "sys_us_per_req": rounded(median(c.sys_us_per_request for c in side), 2),
                        "p50_ms": rounded(median(c.p50_ms for c in side)),
                        "p99_ms": rounded(median(c.p99_ms for c in side)),
                        "errors": sum(c.wrk.errors for c in side),
                    }
            cases[f"{mode}_{workers}w"] = per_proxy
    out["runtime_cases"] = cases
    out["invalid_cases"] = [
        f"round {c.round} {c.proxy} {c.mode} {c.workers}w: {c.wrk.describe_errors()}"
        for c in report.cases if not c.valid]
    out["runtime_settings"] = {
        "duration_s": report.options.duration_s, "warmup_s": report.options.warmup_s,
        "rounds": report.options.rounds, "wrk": f"-t1 -c{report.options.connections}",
        "pinned_1w": report.pinned_ok, "pinned_2w": False,
        "idle_connections": report.options.idle_connections,
        "busy_during_runs_cores": rounded(median(c.other_cores for c in report.cases), 2),
    }
    # What this run started (each in a session of its own), so a check for leftovers
    # can look at exactly these and not at whatever else runs on the machine.
    out["runtime_processes"] = {name: list(pids) for name, pids in report.started.items()}
    if report.lockgate_missing:
        out["lockgate_missing"] = report.lockgate_missing
    if report.notes:
        out["runtime_notes"] = list(report.notes)
    return out


def tables(report: RuntimeReport, data: dict[str, Any]) -> Iterator[str]:
    opts = report.options
    yield (f"Runtime: lockgate vs HAProxy on loopback, nginx backend (100-byte body), "
           f"wrk -t1 -c{opts.connections}, {opts.duration_s:g} s per case after "
           f"{opts.warmup_s:g} s warm-up, {opts.rounds} round(s)")
    if report.lockgate_missing:
        yield f"NOTE: {report.lockgate_missing}; HAProxy alone, no ratios."
    for rnd in range(1, opts.rounds + 1):
        for workers in opts.worker_counts:
            cases = [c for c in report.cases if c.round == rnd and c.workers == workers]
            if not cases:
                continue
            where = ("pinned: proxy on CPU 0, wrk+nginx on CPU 1" if cases[0].pinned
                     else "NOT pinned (2 workers need both cores)")
            rows = [_case_row(c) for c in sorted(cases, key=lambda c: (c.mode, c.proxy))]
            yield ""
            yield table(CASE_HEADERS, rows,
                        f"Round {rnd} — {workers} worker(s) vs nbthread {workers}, {where}")
    yield ""
    rows = []
    for workers in opts.worker_counts:
        suffix = "" if workers == 1 else f"_{workers}w"
        for mode in MODES:
            sides = data["runtime_cases"].get(f"{mode}_{workers}w", {})
            ours, peer = sides.get("lockgate", {}), sides.get("haproxy", {})
            p99_key = "p99_ratio" if mode == "http" else "tcp_p99_ratio"
            rows.append([f"{mode} {workers}w", fmt(ours.get("rps"), ",.0f"),
                         fmt(peer.get("rps"), ",.0f"), fmt(data[f"{mode}_ratio{suffix}"]),
                         fmt(ours.get("cpu_us_per_req"), ".1f"),
                         fmt(peer.get("cpu_us_per_req"), ".1f"),
                         fmt(data[f"{mode}_cpu_ratio{suffix}"]),
                         fmt(ours.get("p99_ms"), ".3f"), fmt(peer.get("p99_ms"), ".3f"),
                         fmt(data[f"{p99_key}{suffix}"])])
    yield table(["case", "lockgate rps", "haproxy rps", "rps ratio", "lockgate µs/req",
                 "haproxy µs/req", "CPU ratio", "lockgate p99", "haproxy p99", "p99 ratio"],
                rows, "Median over rounds (ratios: lockgate ÷ HAProxy, median of per-round "
                      "ratios; CPU per request is the fairer measure on 2 shared cores)")
    rows = []
    for workers in opts.worker_counts:
        for mode in MODES:
            for proxy, side in data["runtime_cases"].get(f"{mode}_{workers}w", {}).items():
                rows.append([f"{mode} {workers}w {proxy}", fmt(side.get("user_us_per_req"), ".1f"),
                             fmt(side.get("sys_us_per_req"), ".1f")])
    if rows:
        yield ""
        yield table(["case", "user µs/req", "sys µs/req"], rows,
                    "Where the CPU goes (medians): sys is mostly the kernel's loopback TCP work, "
                    "user the proxy's own")
    if data["rss_per_10k_idle_mib"]:
        yield ""
        rows = [[proxy, fmt(v, ".1f")] for proxy, v in data["rss_per_10k_idle_mib"].items()]
        yield table(["proxy (1 worker)", "RSS MiB per 10k idle conns"], rows,
                    f"Idle connections: {opts.idle_connections} connected, silent, scaled to 10k")
    for note in report.notes:
        yield f"NOTE: {note}"
    if data["invalid_cases"]:
        yield ""
        yield ("Cases with more than 1 % failed requests (their ratios are left out, "
               "shown as —):")
        yield from (f"  {line}" for line in data["invalid_cases"])
