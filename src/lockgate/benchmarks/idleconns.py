"""Memory per idle connection: open N idle TCP connections, read the proxy's RSS delta.

The connections send nothing (a client that connected and went quiet, the
cheapest state a proxy can keep a connection in); the delta is scaled to
10,000 connections. Acceptance is confirmed by the proxy's own descriptor
count, not by a sleep: a connect() returns once the kernel queued it, before
the proxy accepted it.
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


@dataclass(frozen=True)
class IdleRss:
    connections: int
    accepted: int  # descriptors the proxy gained
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
    limit = raise_nofile(connections + 256)
    if limit < connections + 64:
        raise Failure(f"RLIMIT_NOFILE is {limit}; {connections} idle connections need more "
                      "(raise the hard limit or pass --idle-connections)")
    fds_before = procstat.tree_fd_count(proxy_pid)
    rss_before = procstat.tree_rss_bytes(proxy_pid)
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + timeout
        for _ in range(connections):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.settimeout(max(0.5, deadline - time.monotonic()))
            sock.connect((LOOPBACK, port))
        # Every accepted connection is one more descriptor in the proxy (HTTP: no
        # backend connection until a request arrives); wait for all of them.
        accepted = 0
        while True:
            accepted = procstat.tree_fd_count(proxy_pid) - fds_before
            if accepted >= connections or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # nothing to wait on: accept() happens in another process
        if accepted < connections * 0.98:
            raise Failure(f"only {accepted} of {connections} idle connections were accepted "
                          f"by the proxy on port {port} within {timeout:g} s")
        rss_after = procstat.tree_rss_bytes(proxy_pid)
        return IdleRss(connections, accepted, rss_before, rss_after)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
