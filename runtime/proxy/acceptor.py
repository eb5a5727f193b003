"""Plain-HTTP listeners that hold a new connection as a bare descriptor until it speaks.

A connection taken by ``loop.create_server`` costs ~1.3 KiB of the worker's memory
before its first byte (uvloop's transport, its libuv handle, a weak reference in
the loop, a bound method), ~1.7 KiB with the proxy's protocol object: more than
HAProxy's ~1.05 KiB per idle connection. Many connections never say anything
(idle pre-connects of browsers and load balancers, port scans, floods), so an
:class:`Acceptor` accepts them itself and keeps each in a private epoll set with
its head deadline and client address in two arrays indexed by descriptor: ~30
bytes per silent connection. The first readable event (a byte, or EOF) hands
the descriptor to uvloop (``connect_accepted_socket``) with an
:class:`~lockgate.runtime.proxy.http_transport.HttpClient` that knows it was
already counted and admitted; from there on nothing differs.

What the protocol did at ``connection_made`` is done here at accept: the
connection caps (``max_connections`` counts waiting connections too), the
counters, refusing while the worker stops. A silent connection is closed when
the virtual server's ``request_timeout`` (from the accept) passes, without an
answer, as before; a graceful stop closes the silent ones at once (they have
nothing in flight). TLS listeners (the handshake needs the transport) and TCP
virtual servers (they connect to a node at once) keep ``create_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
from array import array

from lockgate.runtime.proxy.context import Context, VsRuntime
from lockgate.runtime.proxy.http_transport import HttpClient

log = logging.getLogger("lockgate.runtime.proxy")

ACCEPT_BATCH = 64  # accept()s per readable event: other sockets get their turn
MAX_EVENTS = 256  # descriptors handed over per event of the private epoll set
RETRY_ACCEPT_S = 0.25  # out of descriptors (EMFILE...): stop accepting this long
IP_CACHE_MAX = 4096  # client addresses kept as shared bytes objects
# accept(2) on Linux passes on errors of the new connection itself: retry, like EAGAIN.
_PEER_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.ENETDOWN, errno.ENOPROTOOPT,
                        errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP,
                        errno.ENETUNREACH, errno.EPERM})
_WATCH = select.EPOLLIN | select.EPOLLONESHOT


class Acceptor(asyncio.AbstractServer):
    """One listening socket of a plain-HTTP virtual server (what ``create_server`` returned)."""

    def __init__(self, ctx: Context, vs: VsRuntime, sock: socket.socket) -> None:
        self.ctx = ctx
        self.vs = vs
        self.sock = sock
        self.loop = ctx.loop
        self.listening = True
        self.waiting = 0  # silent connections held now
        self._epoll = select.epoll()
        self._deadline = array("d")  # by descriptor: its head deadline, 0.0 when not ours
        self._ip: list[bytes] = []  # by descriptor: the client address (shared objects)
        self._ips: dict[str, bytes] = {}
        # Deadlines in accept order (one request_timeout per virtual server: ascending,
        # unless a reload shortens it, which then takes effect for the queue's tail only
        # once the entries before it are due). Entries of connections that spoke or were
        # closed stay until due and are recognised by their deadline no longer matching.
        self._queue_fd = array("i")
        self._queue_at = array("d")
        self._head = 0
        self.loop.add_reader(sock.fileno(), self._accept)
        self.loop.add_reader(self._epoll.fileno(), self._ready)
        ctx.acceptors.add(self)

    # ---- asyncio.AbstractServer -------------------------------------------------------------
    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self.sock,) if self.listening else ()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def is_serving(self) -> bool:
        return self.listening

    async def wait_closed(self) -> None:
        return None

    async def start_serving(self) -> None:
        return None  # serving from the start, as create_server's default

    async def serve_forever(self) -> None:
        raise NotImplementedError("the worker runs the loop")

    def close(self) -> None:
        """Stop listening. Connections already accepted stay, as with ``create_server``,
        unless the worker is stopping: then the silent ones are closed now."""
        if self.listening:
            self.listening = False
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        if self.ctx.stopping:
            for fd in range(len(self._deadline)):
                if self._deadline[fd]:
                    self._drop(fd)
        self._maybe_done()

    # ---- accepting ------------------------------------------------------------------------
    def _accept(self) -> None:
        stats = self.vs.stats
        for _ in range(ACCEPT_BATCH):
            try:
                fd, addr = self.sock._accept()  # type: ignore[attr-defined]  # (no socket object)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _PEER_GONE:
                    continue  # accept(2): that connection failed; the next may not
                # Out of descriptors or memory (or anything unexpected): the socket stays
                # readable, so stop watching it for a while instead of spinning.
                if self.listening:
                    log.warning("%s: cannot accept (%s); pausing %.2f s", self.vs.config.name,
                                exc.strerror or exc, RETRY_ACCEPT_S)
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(RETRY_ACCEPT_S, self._resume_accepting)
                return
            stats.connections_total += 1
            limit = self.vs.config.max_connections
            if self.ctx.stopping or (limit and stats.connections_current >= limit):
                stats.errors += 1
                os.close(fd)
                continue
            stats.connections_current += 1
            self._hold(fd, addr[0])

    def _resume_accepting(self) -> None:
        if self.listening:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _hold(self, fd: int, host: str) -> None:
        try:
            self._epoll.register(fd, _WATCH)
        except OSError:
            os.close(fd)
            self.vs.stats.connections_current -= 1
            return
        ips = self._ips
        ip = ips.get(host)
        if ip is None:
            if len(ips) >= IP_CACHE_MAX:
                ips.clear()
            ip = ips[host] = host.encode()
        deadlines = self._deadline
        if fd >= len(deadlines):
            grow = fd + 1 - len(deadlines) + 64
            deadlines.extend(array("d", bytes(8 * grow)))
            self._ip.extend([b""] * grow)
        # The loop's clock, as HttpClient.connection_made used: the head deadline a slow
        # client meets first is never cut short by the sweeper's coarser one.
        at = self.loop.time() + self.vs.config.request_timeout
        deadlines[fd] = at
        self._ip[fd] = ip
        self._queue_fd.append(fd)
        self._queue_at.append(at)
        self.waiting += 1

    def _release(self, fd: int) -> None:
        self._deadline[fd] = 0.0
        self._ip[fd] = b""
        self.waiting -= 1
        with contextlib.suppress(OSError):  # closed descriptors leave the set by themselves
            self._epoll.unregister(fd)

    def _drop(self, fd: int) -> None:
        """Close a silent connection (its deadline passed, or the worker stops)."""
        self._release(fd)
        os.close(fd)
        self.vs.stats.connections_current -= 1

    # ---- handing over ---------------------------------------------------------------------
    def _ready(self) -> None:
        try:
            events = self._epoll.poll(0, MAX_EVENTS)
        except InterruptedError:
            return
        deadlines = self._deadline
        for fd, _ in events:
            at = deadlines[fd]
            if not at:
                continue
            ip = self._ip[fd]
            self._release(fd)
            try:
                sock = socket.socket(self.sock.family, socket.SOCK_STREAM, 0, fd)
            except OSError:
                os.close(fd)
                self.vs.stats.connections_current -= 1
                continue
            client = HttpClient(self.ctx, self.vs)
            client.adopt(ip, at)
            self.ctx.spawn(self._hand_over(sock, client))
        self._maybe_done()

    async def _hand_over(self, sock: socket.socket, client: HttpClient) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: client, sock)
        except Exception as exc:  # (OSError from libuv, or a closed loop): never reached the client
            if client.transport is None:
                sock.close()
                self.vs.stats.connections_current -= 1
                log.info("%s: dropped a connection at hand-over (%s)", self.vs.config.name, exc)

    # ---- deadlines ------------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        """Close silent connections whose head deadline passed (Context.sweep calls this)."""
        queue_fd, queue_at = self._queue_fd, self._queue_at
        deadlines = self._deadline
        head, end = self._head, len(queue_at)
        while head < end and queue_at[head] < now:
            fd, at = queue_fd[head], queue_at[head]
            head += 1
            if deadlines[fd] == at:
                self._drop(fd)
        if head > 1024 and head * 2 > end:
            del queue_fd[:head]
            del queue_at[:head]
            head = 0
        self._head = head
        self._maybe_done()

    def _maybe_done(self) -> None:
        if not self.listening and not self.waiting and self in self.ctx.acceptors:
            self.ctx.acceptors.discard(self)
            self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
