"""State one worker's connections share: pools, per-virtual-server counters, a coarse clock."""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
import ssl
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

from lockgate.runtime.config.model import VirtualServer
from lockgate.runtime.pools import PoolRuntime

# Read pauses on a client connection have reasons; reading resumes when none is left.
PAUSE_BACKEND: Final = 1  # the node's socket is full
PAUSE_BACKLOG: Final = 2  # pipelined requests queued up
PAUSE_CONNECT: Final = 4  # body bytes buffered while connecting
PAUSE_THROTTLE: Final = 8  # the licence's bandwidth limit: wait for the bucket to refill

WRITE_HIGH_WATER: Final = 256 * 1024
WRITE_LOW_WATER: Final = 64 * 1024
BUFFER_LIMIT: Final = 256 * 1024  # bytes held for a node that is still connecting
# Queued writes past this many bytes go out at once: bulk data needs the transports'
# flow control now (a write past the high-water mark pauses the reading side), not
# after a loop turn in which libuv may read 32 buffers of 256 KiB from one socket.
FLUSH_BYTES: Final = 64 * 1024


# A virtual server's counters, as the status file names them.
COUNTERS: Final = ("bytes_in", "bytes_out", "connections_current", "connections_total", "errors",
                   "requests")


class VsStats:
    __slots__ = COUNTERS

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.connections_current = 0
        self.connections_total = 0
        self.errors = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in COUNTERS}  # (a compiled class has no __slots__)

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue totals a previous worker in this slot left (connections_current restarts)."""
        for key in COUNTERS:
            if key != "connections_current":
                setattr(self, key, int(saved.get(key, 0)))


@dataclass(frozen=True)
class TlsContexts:
    """A virtual server's loaded certificates: the main one and one per SNI name."""

    main: ssl.SSLContext
    by_name: dict[str, ssl.SSLContext]


class VsRuntime:
    """A virtual server as its connections see it; swapped config on reload, same object."""

    def __init__(self, config: VirtualServer, stats: VsStats) -> None:
        self.config = config
        self.stats = stats
        self.tls: TlsContexts | None = None  # swapped on reload; listeners read it per handshake
        self.tls_stamp: tuple[Any, ...] | None = None
        self.proto = b"http"


class Limiter:
    """A token bucket for the licence's bandwidth limit, in one process (the workers
    share one through :class:`SharedLimiter`; see docs/runtime-config.md "Licence").

    Every byte read from a client or a node is taken from the bucket *after* the
    read; a read that leaves the bucket in debt pauses the socket it came from for
    as long as the debt takes to refill. So the rate is kept by pausing reads (the
    kernel's windows push back on the sender), nothing is ever buffered for it, and
    the overshoot is at most one read per connection, paid back by the next pause.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, rate: float, burst: float) -> None:
        self.loop = loop
        self.rate = rate  # bytes per second, > 0
        self.burst = burst
        self.tokens = burst
        self.last = loop.time()

    def take(self, size: int) -> float:
        """Take ``size`` bytes; the seconds the reader must now wait (0.0: none)."""
        now = self.loop.time()
        tokens = self.tokens + (now - self.last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        tokens -= size
        self.tokens = tokens
        self.last = now
        if tokens >= 0.0:
            return 0.0
        return -tokens / self.rate


_BUCKET: Final = struct.Struct("dd")  # tokens, time of the last take (CLOCK_MONOTONIC)


class SharedLimiter(Limiter):
    """One token bucket for every worker of a ``serve``: two doubles in a small file
    in the run folder, mapped by each worker and updated under ``flock``.

    The lock is held for a few microseconds per read from a socket (at 10 Mb/s that
    is tens of reads a second in all), and CLOCK_MONOTONIC is the same clock in every
    process. So the total is kept however the kernel spreads connections over the
    workers, and one connection can use the whole cap."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rate: float, burst: float,
                 path: str) -> None:
        super().__init__(loop, rate, burst)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < _BUCKET.size:
                    os.ftruncate(fd, _BUCKET.size)  # zeros: "fresh", see take()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self.map = mmap.mmap(fd, _BUCKET.size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def take(self, size: int) -> float:
        fd = self.fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            tokens, last = _BUCKET.unpack_from(self.map, 0)
            now = time.monotonic()
            if last <= 0.0 or last > now:  # a new file, or one from before a reboot
                tokens = self.burst
            else:
                tokens += (now - last) * self.rate
                if tokens > self.burst:
                    tokens = self.burst
            tokens -= size
            _BUCKET.pack_into(self.map, 0, tokens, now)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        if tokens >= 0.0:
            return 0.0
        return float(-tokens / self.rate)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


class Context:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # None when no bandwidth limit applies: the transports then pay one attribute
        # test per read and nothing else.
        self.limiter: Limiter | None = None
        self.now = loop.time()  # refreshed by the sweeper; timeouts need no finer grain
        self.pools: dict[str, PoolRuntime] = {}
        self.connections: set[Any] = set()  # client-side connections, for timeouts and stop
        self.acceptors: set[Any] = set()  # acceptor.Acceptor: silent connections, their deadlines
        self.stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outbox: list[tuple[asyncio.Transport, bytes]] = []
        self._queued = 0  # bytes in _outbox

    def send(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write ``data`` once the loop has handled every socket that was ready.

        Writing in one batch per loop turn, as HAProxy does (all reads, then all
        sends), lets the peer at the other end of each socket wake once for
        several messages instead of once for each: on loopback it saved 7 % of
        the proxy's CPU per HTTP request (19.4 -> 18.0 us, docs/benchmarks.md)
        and, compiled, ~2 % more TCP requests per second.
        Writes keep their order; :meth:`flush` sends them at once and must run
        before a transport is closed or half-closed (``abort`` needs nothing).
        Past FLUSH_BYTES queued the batch is sent at once, so bulk transfers
        keep the transports' flow control.
        """
        outbox = self._outbox
        if not outbox:
            self.loop.call_soon(self.flush)
        outbox.append((transport, data))
        self._queued += len(data)
        if self._queued > FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        outbox = self._outbox
        if outbox:
            self._outbox = []
            self._queued = 0
            for transport, data in outbox:
                if not transport.is_closing():  # closed or aborted since: nobody to tell
                    transport.write(data)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the loop cannot lose (asyncio keeps only weak references)."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def sweep(self) -> None:
        """Close connections whose deadline passed (request head, idle, waiting on a node)."""
        self.now = now = self.loop.time()
        for conn in [c for c in self.connections if c.deadline < now]:
            conn.timed_out()
        for acceptor in list(self.acceptors):
            acceptor.sweep(now)
        for pool in self.pools.values():
            for node in pool.nodes:
                idle = node.idle
                if idle and idle[0].idle_since + pool.config.idle_timeout < now:
                    keep = [c for c in idle if c.idle_since + pool.config.idle_timeout >= now]
                    for conn in idle:
                        if conn not in keep:
                            conn.close()
                    node.idle = keep
