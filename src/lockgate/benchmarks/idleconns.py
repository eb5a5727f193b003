"""Memory per idle connection: open N idle TCP connections, read the proxy's RSS delta.

The connections send nothing (a client that connected and went quiet, the
cheapest state a proxy can keep a connection in); the delta is scaled to
10,000 connections. A connect() returns once the kernel has queued the
connection, before the proxy accept()ed it; ``/proc/net/tcp`` tells the two
apart (a queued connection's server-side socket has no inode until accepted),
so the bench waits for that, not for a guessed delay.

A first batch (a quarter as many, held open) is opened and accepted before
the RSS is read: the first connections a process takes also fault in code
and fill freed allocator space left from start-up, a one-off cost that the
×5 scaling would otherwise multiply. Measured on lockgate (26 Nov): the first
2,000 cost 1,114 B each as pure Python and 1,573 B compiled, the next 4,000
1,638 B each in both builds.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from dataclasses import dataclass

from lockgate.benchmarks import procstat
from lockgate.benchmarks.servers import LOOPBACK
from lockgate.errors import Failure

MIB = 1024 * 1024
ESTABLISHED = "01"


@dataclass(frozen=True)
class TcpRow:
    local_port: int
    remote_port: int
    state: str
    inode: int


def parse_net_tcp(text: str) -> list[TcpRow]:
    """Rows of ``/proc/net/tcp``: ``sl local rem st queues tr retr uid timeout inode ...``."""
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        rows.append(TcpRow(int(parts[1].rpartition(":")[2], 16),
                           int(parts[2].rpartition(":")[2], 16), parts[3], int(parts[9])))
    return rows


def accepted(rows: list[TcpRow], server_port: int, client_ports: set[int]) -> int:
    """Server-side sockets of our connections that the proxy has accept()ed."""
    return sum(1 for r in rows if r.local_port == server_port and r.state == ESTABLISHED
               and r.remote_port in client_ports and r.inode != 0)


def accepted_now(server_port: int, client_ports: set[int]) -> int:
    with open("/proc/net/tcp") as f:
        return accepted(parse_net_tcp(f.read()), server_port, client_ports)


@dataclass(frozen=True)
class IdleRss:
    connections: int
    accepted: int  # connections the proxy had accept()ed when RSS was read
    rss_before: int
    rss_after: int

    @property
    def per_10k_mib(self) -> float:
        if not self.connections:
            return 0.0
        return (self.rss_after - self.rss_before) / self.connections * 10_000 / MIB


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def measure_idle_rss(proxy_pid: int, port: int, connections: int,
                     timeout: float = 30.0) -> IdleRss:
    warm = max(1, connections // 4)
    limit = raise_nofile(warm + connections + 256)
    if limit < warm + connections + 64:
        raise Failure(f"RLIMIT_NOFILE is {limit}; {warm} + {connections} idle connections need "
                      "more (raise the hard limit or pass --idle-connections)")
    deadline = time.monotonic() + timeout
    first: list[socket.socket] = []
    sockets: list[socket.socket] = []
    try:
        _open_accepted(first, warm, port, deadline)
        rss_before = procstat.tree_rss_bytes(proxy_pid)
        count = _open_accepted(sockets, connections, port, deadline)
        rss_after = procstat.tree_rss_bytes(proxy_pid)
        return IdleRss(connections, count, rss_before, rss_after)
    finally:
        for sock in first + sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _open_accepted(sockets: list[socket.socket], connections: int, port: int,
                   deadline: float) -> int:
    """Open ``connections`` into the empty ``sockets`` (the caller closes them, also on
    errors); return once the proxy accepted them all."""
    for _ in range(connections):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sockets.append(sock)
        sock.settimeout(max(0.5, deadline - time.monotonic()))
        sock.connect((LOOPBACK, port))
    ports = {int(sock.getsockname()[1]) for sock in sockets}
    while True:
        count = accepted_now(port, ports)
        if count >= connections or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # nothing to wait on: accept() happens in another process
    if count < connections:
        raise Failure(f"only {count} of {connections} idle connections were accepted "
                      f"by the proxy on port {port} in time")
    return count
