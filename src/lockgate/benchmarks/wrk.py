"""Run wrk and read its report: throughput, latency percentiles and every kind of error.

Errors matter as much as speed: a proxy that answers 502 fast must not look
good, so non-2xx/3xx responses and socket errors are parsed and carried along.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass, field

from lockgate import proc

TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"
_REQUESTS = re.compile(r"^\s*(\d+) requests in " + _TIME + r",", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+" + _TIME + r"\s*$", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class WrkOutputError(ValueError):
    """wrk's report did not have the lines every run prints."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    latency_s: dict[int, float] = field(default_factory=dict)  # percentile -> seconds
    non_2xx: int = 0
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def good_requests(self) -> int:
        """Completed requests that got a 2xx/3xx answer."""
        return max(0, self.requests - self.non_2xx)

    @property
    def error_share(self) -> float:
        """Errors per completed request (socket errors have no request, so they are added)."""
        attempts = self.requests + self.connect_errors + self.timeouts
        return self.errors / attempts if attempts else 1.0

    def describe_errors(self) -> str:
        parts = [f"{n} {what}" for n, what in (
            (self.non_2xx, "non-2xx/3xx"), (self.connect_errors, "connect"),
            (self.read_errors, "read"), (self.write_errors, "write"),
            (self.timeouts, "timeout")) if n]
        return ", ".join(parts) or "none"


def seconds(value: str, unit: str) -> float:
    return float(value) * TIME_UNITS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk 4.x's report (``--latency`` adds the percentile table)."""
    requests = _REQUESTS.search(text)
    rps = _RPS.search(text)
    if requests is None or rps is None:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise WrkOutputError(f"wrk printed no request count/Requests/sec: {tail!r}")
    latency = {int(p): seconds(v, u) for p, v, u in _PERCENTILE.findall(text)}
    socket = _SOCKET.search(text)
    connect, read, write, timeout = (int(g) for g in socket.groups()) if socket else (0, 0, 0, 0)
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests=int(requests.group(1)),
        duration_s=seconds(requests.group(2), requests.group(3)),
        rps=float(rps.group(1)),
        latency_s=latency,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        connect_errors=connect, read_errors=read, write_errors=write, timeouts=timeout,
    )


def wrk_argv(url: str, duration_s: float, *, connections: int = 50, threads: int = 1,
             cpus: str | None = None, timeout_s: float = 2.0) -> list[str]:
    """``wrk -tT -cC -dD --latency URL``, behind ``taskset -c CPUS`` when pinned."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
            f"--timeout={timeout_s:g}s", "--latency", url]
    return (["taskset", "-c", cpus] if cpus is not None else []) + argv


@dataclass(frozen=True)
class WrkRun:
    result: WrkResult
    cpu_s: float  # wrk's own user+system time
    output: str


def run_wrk(url: str, duration_s: float, *, connections: int = 50,
            cpus: str | None = None) -> WrkRun:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = proc.output(wrk_argv(url, duration_s, connections=connections, cpus=cpus),
                      timeout=duration_s + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkRun(parse_wrk(out), cpu, out)
