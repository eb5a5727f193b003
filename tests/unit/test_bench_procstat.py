"""/proc parsing for the benchmark harness: stat lines, process trees, machine CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lockgate.benchmarks import procstat
from lockgate.benchmarks.procstat import CpuTimes, ProcStat, parse_cpu_line, parse_stat


def stat_line(pid: int, comm: str, ppid: int, utime: int = 0, stime: int = 0,
              cutime: int = 0, cstime: int = 0, threads: int = 1, rss: int = 10,
              session: int = 1) -> str:
    fields = ["S", str(ppid), str(session), str(session), "0", "-1", "4194560", "100", "0", "0", "0",
              str(utime), str(stime), str(cutime), str(cstime), "20", "0", str(threads), "0",
              "12345", "1000000", str(rss), "18446744073709551615"]
    return f"{pid} ({comm}) " + " ".join(fields) + " 0 0 0\n"


def test_comm_with_spaces_and_parentheses() -> None:
    stat = parse_stat(stat_line(42, "lockgate: wo) (rker 1", 7, utime=5, stime=3, cutime=2,
                                cstime=1, threads=4, rss=99, session=7))
    assert stat == ProcStat(42, "lockgate: wo) (rker 1", "S", 7, 5, 3, 2, 1, 4, 99, session=7)
    assert stat.cpu_ticks == 11


@pytest.mark.parametrize("text", ["", "42 nonsense", "42 (short) S 1 2 3\n"])
def test_malformed_stat_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_stat(text)


def test_own_stat_agrees_with_os_times() -> None:
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn a little CPU so there is something to read
        pass
    stat = procstat.read_stat(os.getpid())
    times = os.times()
    assert stat is not None and stat.pid == os.getpid() and stat.ppid == os.getppid()
    tick = 1 / procstat.CLK_TCK
    assert abs(stat.utime * tick - times.user) <= 3 * tick + 0.02
    assert abs(stat.stime * tick - times.system) <= 3 * tick + 0.02
    assert stat.rss_pages * procstat.PAGE_SIZE > 1_000_000  # a Python process is > 1 MB


def test_descendants_follow_ppid_links_only() -> None:
    stats = [parse_stat(stat_line(pid, f"p{pid}", ppid)) for pid, ppid in
             [(1, 0), (10, 1), (11, 10), (12, 10), (13, 12), (20, 1), (21, 20)]]
    assert [s.pid for s in procstat.descendants(10, stats)] == [10, 11, 12, 13]
    assert procstat.descendants(99, stats) == []


def test_tree_cpu_includes_a_busy_child() -> None:
    burn = ("import sys, time\n"
            "end = time.process_time() + 0.3\n"
            "while time.process_time() < end: pass\n"
            "print('done', flush=True)\n"
            "sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        pids = [s.pid for s in procstat.tree(os.getpid())]
        assert pids[0] == os.getpid() and child.pid in pids
        own = procstat.read_stat(os.getpid())
        assert own is not None
        child_s = procstat.tree_cpu_seconds(os.getpid()) - own.cpu_ticks / procstat.CLK_TCK
        assert 0.25 <= child_s <= 5
        assert procstat.tree_fd_count(child.pid) >= 3
    finally:
        child.communicate(timeout=30)


def test_cpu_line_and_busy_cores() -> None:
    text = "cpu  100 5 50 800 20 3 2 1 7 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n"
    assert parse_cpu_line(text) == CpuTimes(busy=100 + 5 + 50 + 3 + 2 + 1, idle=820)
    before, after = CpuTimes(busy=0, idle=0), CpuTimes(busy=50, idle=150)
    assert procstat.busy_cores(before, after, 2) == 0.5
    assert procstat.busy_cores(after, after, 2) == 0.0
    with pytest.raises(ValueError):
        parse_cpu_line("intr 1 2 3\n")


def test_wait_idle_gives_up_after_its_bound() -> None:
    began = time.monotonic()
    result = procstat.wait_idle(max_busy_cores=-1, max_wait_s=0.2, window_s=0.1)
    assert not result.reached and 0.2 <= result.waited_s < 2
    assert time.monotonic() - began < 2
    assert procstat.wait_idle(max_busy_cores=64, max_wait_s=5, window_s=0.1).reached


def test_net_tcp_tells_queued_from_accepted_connections() -> None:
    import socket

    from lockgate.benchmarks.idleconns import accepted_now, parse_net_tcp

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            ports = {c.getsockname()[1] for c in clients}
            assert accepted_now(port, ports) == 0  # queued by the kernel, not accepted
            conn, _ = server.accept()
            with conn:
                assert accepted_now(port, ports) == 1
                assert accepted_now(port, {0}) == 0
        finally:
            for c in clients:
                c.close()
    rows = parse_net_tcp(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0"
        "        0 147206 1 00000000288940c3 100 0 0 10 0\n")
    assert [(r.local_port, r.remote_port, r.state, r.inode) for r in rows] == [
        (8080, 50000, "01", 147206)]


def test_alive_in_sessions_finds_a_started_session_and_nothing_else() -> None:
    import os
    import subprocess

    from lockgate.benchmarks import procstat

    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        found = procstat.alive_in_sessions({child.pid})
        assert [s.pid for s in found] == [child.pid]
        assert procstat.alive_in_sessions({os.getpid() + 10_000_000}) == []
    finally:
        child.kill()
        child.wait(timeout=10)
    assert procstat.alive_in_sessions({child.pid}) == []
