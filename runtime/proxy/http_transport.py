"""asyncio transport layer for HTTP virtual servers around the sans-IO core.

:class:`HttpClient` is the protocol for one client connection; it forwards
one request at a time to a :class:`Backend` (a node connection, reused through
the pool's idle list). Flow control: when either side's write buffer passes
the high-water mark the other side stops reading until it drains, so a client
that never reads holds at most ~one buffer of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from lockgate.runtime.pools import NodeState, PoolRuntime
from lockgate.runtime.proxy.context import (
    BUFFER_LIMIT,
    PAUSE_BACKEND,
    PAUSE_BACKLOG,
    PAUSE_CONNECT,
    PAUSE_THROTTLE,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
    Context,
    VsRuntime,
)
from lockgate.runtime.proxy.http1 import (
    B_ABORT,
    B_RESEND,
    CLOSED,
    CONNECTING,
    IDLE,
    P_FAIL,
    P_FORWARD,
    P_FORWARD_END,
    P_HOLD,
    P_START,
    R_END,
    R_HEAD,
    SENDING,
    T_ACTIVE,
    T_IDLE,
    T_REQUEST,
    TUNNEL,
    WAITING,
    ProtocolError,
    RequestHead,
    RequestReader,
    ResponseReader,
    after_answer,
    deadline_status,
    error_response,
    may_resend,
    node_broke,
    node_reusable,
    pump_action,
    switch_allowed,
)

log = logging.getLogger("lockgate.runtime.proxy")

# The client connection's states (IDLE ... CLOSED) and every decision about moving
# between them are in http1 (sans-IO, tested without sockets); this module moves bytes.
MAX_QUEUED_EVENTS: Final = 64
# Stands in for a client's RequestReader until its first byte: a reader (with its
# parser) is ~1 KiB, and connections that never say anything are common. Never fed.
_NOT_YET = RequestReader(0)


class Backend(asyncio.Protocol):
    """One connection to a node. Belongs to a client while a request is in flight."""

    __slots__ = ("client", "closed", "ctx", "idle_since", "node", "pool", "reader",
                 "reading_paused", "throttled", "transport", "write_paused")

    def __init__(self, ctx: Context, pool: PoolRuntime, node: NodeState) -> None:
        self.ctx = ctx
        self.pool = pool
        self.node = node
        self.client: HttpClient | None = None
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.reader = ResponseReader()
        self.idle_since = 0.0
        self.closed = False
        self.reading_paused = False  # the client's socket is full
        self.throttled = False  # the licence's bandwidth limit; reading needs neither
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            self.close()  # a node talking on an idle connection: unusable
            return
        limiter = self.ctx.limiter
        if limiter is not None:
            wait = limiter.take(len(data))
            if wait > 0.0 and not self.throttled:
                self.throttled = True
                if not self.reading_paused:
                    self.transport.pause_reading()
                self.ctx.loop.call_later(wait, self.unthrottle)
        client.backend_data(data)

    def unthrottle(self) -> None:
        self.throttled = False
        if not self.reading_paused and not self.closed and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return False  # close; connection_lost tells the client

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        client = self.client
        if client is not None:
            client.backend_lost(self)
        else:
            # it may be in the idle list; already taken or cleared is fine too
            with contextlib.suppress(ValueError):
                self.node.idle.remove(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.client is not None:
            self.client.pause_reading(PAUSE_BACKEND)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.client is not None:
            self.client.resume_reading(PAUSE_BACKEND)

    def is_usable(self) -> bool:
        return not self.closed and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        self.client = None
        if self.transport is not None:
            self.ctx.flush()  # what was queued for it goes first
            self.transport.close()


class HttpClient(asyncio.Protocol):
    __slots__ = ("adopted", "backend", "client_eof", "client_ip", "ctx", "deadline", "head", "head_bytes",
                 "paused", "pending", "pending_size", "pool", "reader", "request_done",
                 "retried_reuse", "reused", "state", "stats", "timer", "transport", "tried",
                 "upgrading", "vs", "write_paused")

    def __init__(self, ctx: Context, vs: VsRuntime) -> None:
        self.ctx = ctx
        self.vs = vs
        self.stats = vs.stats
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.reader = _NOT_YET
        self.state = IDLE
        self.deadline = 0.0
        self.timer = T_REQUEST
        self.client_ip: bytes = b""
        self.paused = 0
        self.write_paused = False
        self.head: RequestHead | None = None
        self.head_bytes = b""
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        self.request_done = False
        self.backend: Backend | None = None
        self.pool: PoolRuntime | None = None
        self.tried: tuple[NodeState, ...] = ()
        self.reused = False
        self.retried_reuse = False
        self.upgrading = False
        self.client_eof = False
        self.adopted = False

    def adopt(self, client_ip: bytes, deadline: float) -> None:
        """Accepted, counted and admitted by an :class:`~lockgate.runtime.proxy.acceptor.Acceptor`,
        which also read the client's address; its head deadline runs from the accept."""
        self.adopted = True
        self.client_ip = client_ip
        self.deadline = deadline

    # ---- client side ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stats = self.stats
        if self.adopted:  # counted and admitted at accept; only a stop since then refuses it
            if self.ctx.stopping:
                transport.close()
                self.state = CLOSED
                return
        else:
            stats.connections_total += 1
            stats.connections_current += 1
            limit = self.vs.config.max_connections
            if self.ctx.stopping or (limit and stats.connections_current > limit):
                stats.errors += 1
                transport.close()
                self.state = CLOSED
                return
            peer = transport.get_extra_info("peername")
            self.client_ip = peer[0].encode() if peer else b""
            # The loop's clock, not the sweeper's (up to a sweep old): a new connection's
            # head deadline is the one a slow client meets first, so it is never cut short.
            self.deadline = self.ctx.loop.time() + self.vs.config.request_timeout
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]
        self.timer = T_REQUEST
        self.ctx.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        if self.state == IDLE:
            if self.timer != T_REQUEST:
                self.timer = T_REQUEST
                self.deadline = self.ctx.now + self.vs.config.request_timeout
        else:
            self.deadline = self.ctx.now + self.vs.config.idle_timeout
        reader = self.reader
        if reader is _NOT_YET:
            reader = self.reader = RequestReader(self.vs.config.max_header_bytes)
        reader.feed(data)
        self._pump()
        limiter = self.ctx.limiter
        if limiter is not None:
            wait = limiter.take(len(data))
            if wait > 0.0 and not self.paused & PAUSE_THROTTLE:
                self.pause_reading(PAUSE_THROTTLE)
                self.ctx.loop.call_later(wait, self.resume_reading, PAUSE_THROTTLE)

    def eof_received(self) -> bool | None:
        # A half-closed client may still want its answer (e.g. `printf ... | nc`): keep
        # the connection while a request is in flight, close at once when idle.
        if self.state in (IDLE, CLOSED) and not self.reader.events:
            return False
        self.client_eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        # connection_made counted it; this is the one place it is uncounted
        self.stats.connections_current -= 1
        self.state = CLOSED
        self.ctx.connections.discard(self)
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.node.connections -= 1
            backend.close()

    def pause_writing(self) -> None:
        self.write_paused = True
        backend = self.backend
        if backend is not None and not backend.reading_paused:
            backend.reading_paused = True
            backend.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        backend = self.backend
        if backend is not None and backend.reading_paused:
            backend.reading_paused = False
            if not backend.throttled:
                backend.transport.resume_reading()

    def pause_reading(self, reason: int) -> None:
        if not self.paused and self.state != CLOSED:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.state != CLOSED:
                self.transport.resume_reading()

    def timed_out(self) -> None:
        backend = self.backend
        status = deadline_status(self.timer, self.state, self.reader.in_head,
                                 backend is None or backend.reader.started)
        if status:
            self._fail(status)
        else:
            self._close()

    # ---- request flow ---------------------------------------------------------------------
    def _pump(self) -> None:
        events = self.reader.events
        while events:
            kind, payload = events[0]
            action = pump_action(self.state, kind)
            if action == P_HOLD:
                break  # e.g. a pipelined request: waits for the answer before it
            del events[0]
            if action == P_FORWARD:
                if self.state == TUNNEL:
                    backend = self.backend
                    if backend is not None:
                        self.ctx.send(backend.transport, payload)
                elif payload:
                    self._to_backend(payload)
            elif action == P_FORWARD_END:
                self.request_done = True
                if self.state == SENDING:
                    self.state = WAITING
                if payload:
                    self._to_backend(payload)
            elif action == P_START:
                self._start(payload)
            elif action == P_FAIL:
                self._fail(payload)
                return
            # P_DROP: nothing to do
        if len(events) > MAX_QUEUED_EVENTS or self.reader.held_size > BUFFER_LIMIT:
            self.pause_reading(PAUSE_BACKLOG)
        elif self.paused & PAUSE_BACKLOG:
            self.resume_reading(PAUSE_BACKLOG)

    def _to_backend(self, data: bytes) -> None:
        backend = self.backend
        if backend is not None:
            self.ctx.send(backend.transport, data)
            return
        pending = self.pending
        assert pending is not None
        pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > BUFFER_LIMIT:
            self.pause_reading(PAUSE_CONNECT)

    def _start(self, head: RequestHead) -> None:
        vs = self.vs
        config = vs.config
        self.stats.requests += 1
        self.head = head
        self.timer = T_ACTIVE
        self.deadline = self.ctx.now + config.idle_timeout
        self.head_bytes = head.encode(
            self.client_ip if config.add_x_forwarded_for else None,
            vs.proto if config.add_x_forwarded_proto else None)
        self.upgrading = head.upgrade is not None
        self.pending = []
        self.pending_size = 0
        self.request_done = False
        self.tried = ()
        self.retried_reuse = False
        self.pool = self.ctx.pools.get(config.pool)
        self.state = CONNECTING
        self._connect()

    def _connect(self) -> None:
        pool = self.pool
        node = pool.pick(self.client_ip, self.tried) if pool is not None else None
        if pool is None or node is None:
            self._fail(502 if self.tried else 503)
            return
        conn = pool.take_idle(node)
        if conn is not None:
            node.connections += 1
            self._attach(conn, reused=True)
            return
        node.connections += 1
        self.ctx.spawn(self._open(pool, node))

    async def _open(self, pool: PoolRuntime, node: NodeState) -> None:
        loop = self.ctx.loop
        timeout = self.vs.config.connect_timeout
        try:
            _, backend = await asyncio.wait_for(
                loop.create_connection(lambda: Backend(self.ctx, pool, node), node.host, node.port),
                timeout)
        except (OSError, TimeoutError) as exc:
            node.connections -= 1
            pool.record_failure(node)
            if self.state == CLOSED:
                return
            self.tried += (node,)
            if len(self.tried) < pool.config.node_connection_attempts:
                self._connect()
            else:
                log.info("%s: no node answered (%s)", self.vs.config.name, exc or "timeout")
                self._fail(504 if isinstance(exc, TimeoutError) else 502)
            return
        if self.state != CONNECTING:
            node.connections -= 1
            backend.close()
            return
        self._attach(backend, reused=False)

    def _attach(self, backend: Backend, reused: bool) -> None:
        head = self.head
        assert head is not None
        self.backend = backend
        self.reused = reused
        backend.client = self
        backend.node.requests += 1
        # An Upgrade request's client is told to close unless the node says 101: the bytes
        # it sent after the request were never read as requests (see RequestReader).
        backend.reader.expect(head.method == b"HEAD", head.http10,
                              head.keep_alive and not self.upgrading, self.upgrading)
        pending = self.pending
        self.pending = None
        transport = backend.transport
        if pending:
            self.ctx.send(transport, self.head_bytes + b"".join(pending))
        else:
            self.ctx.send(transport, self.head_bytes)
        if self.paused & PAUSE_CONNECT:
            self.resume_reading(PAUSE_CONNECT)
        if backend.write_paused:
            self.pause_reading(PAUSE_BACKEND)
        if self.write_paused:
            backend.reading_paused = True
            transport.pause_reading()
        self.state = WAITING if self.request_done else SENDING
        if self.state == SENDING:
            self._pump()

    # ---- response flow --------------------------------------------------------------------
    def backend_data(self, data: bytes) -> None:
        backend = self.backend
        if backend is None:
            return
        if self.state == TUNNEL:
            self.stats.bytes_out += len(data)
            self.ctx.send(self.transport, data)
            return
        self.deadline = self.ctx.now + self.vs.config.idle_timeout
        reader = backend.reader
        try:
            reader.feed(data)
        except ProtocolError:
            self._backend_broke(backend)
            return
        self._drain_response(backend)

    def _drain_response(self, backend: Backend) -> None:
        reader = backend.reader
        events = reader.events
        # One write per read from the node: a head and body written separately would
        # cost two send() calls, the largest cost per request (see docs, performance).
        out: list[bytes] = []
        for kind, payload in events:
            if kind == R_END:
                if payload:
                    out.append(payload)
                events.clear()  # anything after the end is not for this client
                self._write_out(out)
                self._response_done(backend)
                return
            if kind == R_HEAD and reader.status == 101:  # (asked for: the reader checked)
                if not switch_allowed(self.request_done):
                    events.clear()
                    self._write_out(out)
                    self._backend_broke(backend)  # switching before the request ended
                    return
                out.append(payload)
                self._write_out(out)
                out = []
                self._start_tunnel()
                continue
            out.append(payload)
        events.clear()
        self._write_out(out)

    def _write_out(self, out: list[bytes]) -> None:
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        self.stats.bytes_out += len(data)
        self.ctx.send(self.transport, data)

    def _start_tunnel(self) -> None:
        self.state = TUNNEL
        self.reader.start_tunnel()  # releases what the client sent after its Upgrade request
        self._pump()

    def _response_done(self, backend: Backend) -> None:
        reader = backend.reader
        pool = backend.pool
        node = backend.node
        self.backend = None
        node.connections -= 1
        pool.record_success(node)
        if reader.status >= 500:
            self.stats.errors += 1
        if backend.reading_paused:
            backend.reading_paused = False
            if not backend.throttled:
                backend.transport.resume_reading()
        if backend.write_paused:
            self.resume_reading(PAUSE_BACKEND)
        ctx = self.ctx
        if (node_reusable(reader.reusable, self.request_done, self.upgrading, ctx.stopping)
                and pool.give_idle(node, backend)):
            backend.client = None
            backend.idle_since = ctx.now
        else:
            backend.close()
        self.head = None
        if after_answer(reader.client_keep_alive, ctx.stopping, self.upgrading, self.client_eof,
                        bool(self.reader.events)) == CLOSED:
            self._close()
            return
        self.state = IDLE
        self.timer = T_IDLE
        self.deadline = ctx.now + self.vs.config.idle_timeout
        # Needed only to send the request again (B_RESEND), which cannot happen now; a
        # kept-alive connection would hold it (~150-250 B) until its next request.
        self.head_bytes = b""
        if self.reader.events:
            self._pump()

    def backend_lost(self, backend: Backend) -> None:
        if backend is not self.backend:
            return
        reader = backend.reader
        if self.state == TUNNEL:
            self.backend = None
            backend.node.connections -= 1
            self._close()
            return
        if reader.node_closed():
            self._drain_response(backend)  # sends the final chunk and finishes
            return
        self._backend_broke(backend)

    def _backend_broke(self, backend: Backend) -> None:
        """The node closed or spoke nonsense before finishing the response."""
        node = backend.node
        pool = backend.pool
        started = backend.reader.started
        received = backend.reader.received
        self.backend = None
        node.connections -= 1
        backend.close()
        head = self.head
        outcome = node_broke(started, head is not None and self.state != CLOSED and may_resend(
            head.method, head.has_body, self.reused, received, self.retried_reuse))
        if outcome == B_RESEND:
            self.retried_reuse = True
            self.state = CONNECTING
            self.pending = []
            self.request_done = True
            node.connections += 1
            self.ctx.spawn(self._open(pool, node))
            return
        pool.record_failure(node)
        if outcome == B_ABORT:
            self.stats.errors += 1
            self.transport.abort()  # the client sees the cut, not a truncated "success"
            self.state = CLOSED
        else:
            self._fail(502)

    # ---- endings --------------------------------------------------------------------------
    def _fail(self, status: int) -> None:
        if self.state == CLOSED:
            return
        self.stats.errors += 1
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.node.connections -= 1
            backend.close()
        response = error_response(status)
        self.stats.bytes_out += len(response)
        self.ctx.send(self.transport, response)
        self._close()

    def _close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.ctx.connections.discard(self)
        self.ctx.flush()
        self.transport.close()  # after what is buffered has been written

    def close_if_idle(self) -> bool:
        """Graceful stop: drop a keep-alive connection that has nothing in flight."""
        if self.state == IDLE and not self.reader.in_head and not self.reader.events:
            self._close()
            return True
        return False

    def abort(self) -> None:
        if self.state != CLOSED:
            self._close()
            self.transport.abort()

