"""Connections that have not said anything yet (runtime/proxy/acceptor.py): held as bare
descriptors, still counted, capped, timed out and served like any other."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from test_runtime_support import backends, free_port, get, pool_of, rss_kib, runtime, vs


@contextlib.contextmanager
def silent(port: int, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(("127.0.0.1", port), 10))
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_peer(s: socket.socket, timeout: float) -> bytes | None:
    """What the proxy sent before closing, or None if it was still open after ``timeout``."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


def current(snap: dict[str, object]) -> int:
    return int(snap["virtual_servers"]["web"]["connections_current"])  # type: ignore[index]


def test_silent_connections_count_time_out_without_an_answer_and_others_are_served(
        tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port, connection={"request_timeout": 1.5})},
                  "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt, silent(port, 3) as socks:
            start = time.monotonic()
            rt.wait_status(lambda s: current(s) == 3)
            # A connection that speaks is served, its address forwarded as before.
            status, _, body = get(port, "/headers")
            assert status == 200
            assert json.loads(body)["X-Forwarded-For"] == "127.0.0.1"
            for s in socks:  # closed when request_timeout (from the accept) passed, no 408
                assert closed_by_peer(s, 5.0) == b""
            assert 1.3 < time.monotonic() - start < 4.0
            rt.wait_status(lambda s: current(s) == 0)


def test_max_connections_counts_silent_connections(tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port, basic={"max_connections": 2})},
                  "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt:
            with silent(port, 2):
                rt.wait_status(lambda s: current(s) == 2)
                with socket.create_connection(("127.0.0.1", port), 10) as third:
                    with contextlib.suppress(OSError):  # the proxy may close it first
                        third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert closed_by_peer(third, 5.0) == b""  # refused: over the cap
            rt.wait_status(lambda s: current(s) == 0)
            assert get(port)[0] == 200  # the silent ones are gone: room again


def test_a_silent_connection_that_speaks_late_gets_its_answer(tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config), silent(port, 1) as (s,):
            time.sleep(0.6)  # past a couple of sweeps
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(10)
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_silent_connections_cost_the_worker_little_memory(tmp_path: Path) -> None:
    """A transport and protocol per silent connection cost ~1.7 KiB (HAProxy ~1.05 KiB);
    held as descriptors they cost a few dozen bytes."""
    count = 1500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 200:
        count = max(200, hard - 200)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 200)), hard))
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt:
            rt.wait_status(lambda s: "web" in s["virtual_servers"])
            (pid,) = rt.worker_pids()
            with silent(port, 200):  # first connections fault in code and allocator pools
                rt.wait_status(lambda s: current(s) == 200)
                before = rss_kib(pid)
                with silent(port, count):
                    rt.wait_status(lambda s: current(s) == 200 + count, timeout=20)
                    grown = rss_kib(pid) - before
            assert grown * 1024 / count < 400, f"{grown} KiB for {count} silent connections"
