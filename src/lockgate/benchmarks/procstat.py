"""CPU time, RSS and open descriptors of process trees, and machine idleness, from ``/proc``.

CPU per request is the measure this machine can judge fairly (BENCHMARKING.md):
rps is bounded by wrk and the backend sharing a core, CPU time is not.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the benchmarks use (CPU times in clock ticks)."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    num_threads: int
    rss_pages: int
    session: int = 0  # session id: the bench starts each server in a session of its own

    @property
    def cpu_ticks(self) -> int:
        # Waited-for children count too: a worker that crashed and was reaped by the
        # supervisor during a run must not make its CPU time disappear.
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/PID/stat`` line.

    ``comm`` is in parentheses and may itself contain spaces and ``)``, so the
    fields are split after the LAST ``)``.
    """
    head, sep, tail = text.rpartition(")")
    if not sep or " (" not in head:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    pid_text, _, comm = head.partition(" (")
    fields = tail.split()
    if len(fields) < 22:
        raise ValueError(f"/proc/PID/stat line has {len(fields) + 2} fields, expected >= 24")
    # fields[0] is field 3 (state) of proc(5); field n is fields[n - 3].
    return ProcStat(
        pid=int(pid_text), comm=comm, state=fields[0], ppid=int(fields[1]),
        utime=int(fields[11]), stime=int(fields[12]), cutime=int(fields[13]),
        cstime=int(fields[14]), num_threads=int(fields[17]), rss_pages=int(fields[21]),
        session=int(fields[3]),
    )


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat, or None when it has gone."""
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def all_stats() -> list[ProcStat]:
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                found.append(stat)
    return found


def alive_in_sessions(sessions: set[int]) -> list[ProcStat]:
    """Processes still running in one of ``sessions`` (the leaders included): what a
    server started with ``start_new_session`` left behind. Zombies do not count."""
    return [s for s in all_stats()
            if (s.session in sessions or s.pid in sessions) and s.state != "Z"]


def descendants(root: int, stats: list[ProcStat]) -> list[ProcStat]:
    """``root`` and every process below it in ``stats`` (root first, if alive)."""
    children: dict[int, list[ProcStat]] = {}
    by_pid = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
        by_pid[stat.pid] = stat
    out = [by_pid[root]] if root in by_pid else []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), []):
            out.append(child)
            queue.append(child.pid)
    return out


def tree(root: int) -> list[ProcStat]:
    """``root`` and its descendants, read now."""
    return descendants(root, all_stats())


def tree_cpu_seconds(root: int) -> float:
    return sum(s.cpu_ticks for s in tree(root)) / CLK_TCK


def tree_user_sys_seconds(root: int) -> tuple[float, float]:
    """User and system CPU time of the tree (reaped children included), apart: the
    system part is mostly the kernel's TCP work, the same for any proxy on loopback."""
    stats = tree(root)
    return (sum(s.utime + s.cutime for s in stats) / CLK_TCK,
            sum(s.stime + s.cstime for s in stats) / CLK_TCK)


def tree_rss_bytes(root: int) -> int:
    return sum(s.rss_pages for s in tree(root)) * PAGE_SIZE


def tree_fd_count(root: int) -> int:
    total = 0
    for stat in tree(root):
        try:
            total += len(os.listdir(PROC / str(stat.pid) / "fd"))
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between the two reads
    return total


def set_tree_affinity(root: int, cpus: set[int]) -> None:
    """Pin every thread of every process in the tree (threads carry their own mask)."""
    for stat in tree(root):
        try:
            tids = [int(t) for t in os.listdir(PROC / str(stat.pid) / "task")]
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:
                continue  # the thread ended meanwhile


# --- the whole machine ------------------------------------------------------------

@dataclass(frozen=True)
class CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat``, in clock ticks."""

    busy: int
    idle: int

    @property
    def total(self) -> int:
        return self.busy + self.idle


def parse_cpu_line(text: str) -> CpuTimes:
    """Parse ``/proc/stat``'s first line: user nice system idle iowait irq softirq steal ...

    guest/guest_nice are already inside user/nice, so they are not added again.
    """
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:9]] + [0] * max(0, 8 - len(parts[1:9]))
            user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
            return CpuTimes(busy=user + nice + system + irq + softirq + steal,
                            idle=idle + iowait)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def cpu_times() -> CpuTimes:
    return parse_cpu_line((PROC / "stat").read_text())


def busy_cores(before: CpuTimes, after: CpuTimes, cpus: int) -> float:
    """Average number of busy cores between two samples."""
    total = after.total - before.total
    if total <= 0:
        return 0.0
    return (after.busy - before.busy) / total * cpus


@dataclass(frozen=True)
class IdleWait:
    waited_s: float
    busy_cores: float  # in the last sample window
    reached: bool


def wait_idle(max_busy_cores: float, max_wait_s: float, window_s: float = 1.0) -> IdleWait:
    """Wait until the machine's other work uses at most ``max_busy_cores``, bounded.

    Samples ``/proc/stat`` over ``window_s`` windows; returns after the first quiet
    window or after ``max_wait_s`` (then ``reached`` is False and the caller says so).
    """
    cpus = os.cpu_count() or 1
    began = time.monotonic()
    while True:
        before = cpu_times()
        time.sleep(window_s)  # a measurement window, not a readiness wait
        busy = busy_cores(before, cpu_times(), cpus)
        waited = time.monotonic() - began
        if busy <= max_busy_cores:
            return IdleWait(waited, busy, True)
        if waited >= max_wait_s:
            return IdleWait(waited, busy, False)


def loadavg() -> float:
    return float((PROC / "loadavg").read_text().split()[0])
