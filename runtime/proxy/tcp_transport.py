"""TCP virtual servers: a byte relay between a client and a node, with flow control.

Relayed bytes are written through ``Context.send``, once per loop turn like
HTTP's (with the compiled core that gained ~2 % rps on loopback, see
docs/runtime-config.md); it is flushed before any half-close or close. On
loopback with small messages the kernel's own work dominates and
``os.splice`` measured slower (BENCHMARKING.md), so there is no zero-copy
path. Half-closes are passed on.

Each side's reading is paused for reasons (the other side's socket is full, bytes
held while connecting, the licence's bandwidth limit) and resumes when none is left.
"""

from __future__ import annotations

import asyncio
import logging

from lockgate.runtime.pools import NodeState, PoolRuntime
from lockgate.runtime.proxy.context import (
    BUFFER_LIMIT,
    PAUSE_BACKEND,
    PAUSE_CONNECT,
    PAUSE_THROTTLE,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
    Context,
    VsRuntime,
)

log = logging.getLogger("lockgate.runtime.proxy")


class TcpBackend(asyncio.Protocol):
    def __init__(self, client: TcpClient) -> None:
        self.client: TcpClient | None = client
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.paused = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            client.stats.bytes_out += len(data)
            ctx = client.ctx
            client.deadline = ctx.now + client.vs.config.idle_timeout
            ctx.send(client.transport, data)
            limiter = ctx.limiter
            if limiter is not None:
                wait = limiter.take(len(data))
                if wait > 0.0 and not self.paused & PAUSE_THROTTLE:
                    self.pause_reading(PAUSE_THROTTLE)
                    ctx.loop.call_later(wait, self.resume_reading, PAUSE_THROTTLE)

    def pause_reading(self, reason: int) -> None:
        if not self.paused and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.transport.is_closing():
                self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        client = self.client
        if client is None or client.closed:
            return False
        client.backend_eof = True
        if client.client_eof or not client.transport.can_write_eof():
            client.close()
            return False
        client.ctx.flush()  # the queued bytes go before the half-close
        client.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        if client is not None:
            client.backend_gone()

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading(PAUSE_BACKEND)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading(PAUSE_BACKEND)


class TcpClient(asyncio.Protocol):
    def __init__(self, ctx: Context, vs: VsRuntime) -> None:
        self.ctx = ctx
        self.vs = vs
        self.stats = vs.stats
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.backend: TcpBackend | None = None
        self.node: NodeState | None = None
        self.pool: PoolRuntime | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.paused = 0
        self.deadline = 0.0
        self.closed = False
        self.client_eof = False
        self.backend_eof = False
        self.client_ip = b""
        self.tried: tuple[NodeState, ...] = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stats = self.stats
        stats.connections_total += 1
        stats.connections_current += 1
        stats.requests += 1
        limit = self.vs.config.max_connections
        if self.ctx.stopping or (limit and stats.connections_current > limit):
            stats.errors += 1
            self.closed = True
            transport.close()
            return
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0].encode() if peer else b""
        self.deadline = self.ctx.now + self.vs.config.connect_timeout + 1
        self.ctx.connections.add(self)
        self.pool = self.ctx.pools.get(self.vs.config.pool)
        self._connect()

    def _connect(self) -> None:
        pool = self.pool
        node = pool.pick(self.client_ip, self.tried) if pool is not None else None
        if pool is None or node is None:
            self.stats.errors += 1
            self.close()
            return
        node.connections += 1
        self.ctx.spawn(self._open(pool, node))

    async def _open(self, pool: PoolRuntime, node: NodeState) -> None:
        try:
            _, backend = await asyncio.wait_for(self.ctx.loop.create_connection(
                lambda: TcpBackend(self), node.host, node.port), self.vs.config.connect_timeout)
        except (OSError, TimeoutError):
            node.connections -= 1
            pool.record_failure(node)
            if self.closed:
                return
            self.tried += (node,)
            if len(self.tried) < pool.config.node_connection_attempts:
                self._connect()
            else:
                self.stats.errors += 1
                self.close()
            return
        if self.closed:
            node.connections -= 1
            backend.client = None
            backend.transport.close()
            return
        pool.record_success(node)
        node.requests += 1
        self.node = node
        self.backend = backend
        self.deadline = self.ctx.now + self.vs.config.idle_timeout
        if self.pending:
            if self.pending_size > BUFFER_LIMIT:
                self.resume_reading(PAUSE_CONNECT)  # before the write, which may pause it again
            backend.transport.write(b"".join(self.pending))
            self.pending = []
        if self.client_eof:
            backend.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        ctx = self.ctx
        self.deadline = ctx.now + self.vs.config.idle_timeout
        limiter = ctx.limiter
        if limiter is not None:
            wait = limiter.take(len(data))
            if wait > 0.0 and not self.paused & PAUSE_THROTTLE:
                self.pause_reading(PAUSE_THROTTLE)
                ctx.loop.call_later(wait, self.resume_reading, PAUSE_THROTTLE)
        backend = self.backend
        if backend is not None:
            ctx.send(backend.transport, data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > BUFFER_LIMIT:
            self.pause_reading(PAUSE_CONNECT)

    def pause_reading(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        self.client_eof = True
        if self.backend_eof:
            self.close()
            return False
        backend = self.backend
        if backend is not None:
            self.ctx.flush()  # the queued bytes go before the half-close
            backend.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.backend is not None:
            self.backend.pause_reading(PAUSE_BACKEND)

    def resume_writing(self) -> None:
        if self.backend is not None:
            self.backend.resume_reading(PAUSE_BACKEND)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.connections_current -= 1
        self.close()

    def backend_gone(self) -> None:
        if self.node is not None:
            self.node.connections -= 1
            self.node = None
        self.backend = None
        self.close()

    def timed_out(self) -> None:
        self.close()

    def close_if_idle(self) -> bool:
        return False  # a byte stream has no request boundary: let it finish within the grace

    def abort(self) -> None:
        self.close()
        self.transport.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ctx.connections.discard(self)
        self.ctx.flush()  # what was queued for either side goes first
        self.transport.close()
        backend = self.backend
        if backend is not None:
            backend.client = None
            backend.transport.close()
            self.backend = None
            if self.node is not None:
                self.node.connections -= 1
                self.node = None
