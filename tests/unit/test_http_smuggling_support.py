"""An in-process HTTP proxy and a logging node, both on real loopback sockets.

:class:`ProxyUnderTest` runs the real :class:`HttpClient` protocol on its own
event loop in a thread (the worker's listener, without the worker process),
so a test costs milliseconds. :class:`LoggingNode` is a backend that writes
down every byte each of its connections received and splits them into
requests with h11 (a strict, independent parser): a request smuggled past the
proxy shows up in ``node.requests``. Its answers are scripted per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import h11

from lockgate.runtime.config.model import normalise_tree, parse_config
from lockgate.runtime.pools import PoolRuntime
from lockgate.runtime.proxy.context import Context, VsRuntime, VsStats
from lockgate.runtime.proxy.http_transport import HttpClient

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Seen:
    conn: int  # which node connection it came on (0, 1, ...)
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name.lower()]


Script = Callable[[Seen], bytes]


def answer_ok(_: Seen) -> bytes:
    return OK


@dataclass
class LoggingNode:
    """A node that logs what reaches it. ``script(request)`` gives the raw answer bytes;
    after an answer starting with ``HTTP/1.1 101`` the connection echoes as a tunnel."""

    script: Script = answer_ok
    requests: list[Seen] = field(default_factory=list)
    raw: dict[int, bytearray] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    close_after: set[int] = field(default_factory=set)  # request numbers after which to close

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                number = len(self.raw)
                self.raw[number] = bytearray()
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        parser = h11.Connection(h11.SERVER)
        current: Seen | None = None
        tunnel = False
        conn.settimeout(10)
        try:
            while True:
                data = conn.recv(65536)
                with self.lock:
                    self.raw[number] += data
                if tunnel:
                    if not data:
                        return
                    conn.sendall(b"echo:" + data)
                    continue
                parser.receive_data(data)
                while True:
                    try:
                        event = parser.next_event()
                    except h11.RemoteProtocolError as exc:
                        with self.lock:
                            self.errors.append(f"conn {number}: {exc}")
                        return
                    if event is h11.NEED_DATA or event is h11.PAUSED:
                        break
                    if isinstance(event, h11.ConnectionClosed):
                        return
                    if isinstance(event, h11.Request):
                        current = Seen(number, event.method, event.target,
                                       [(n, v) for n, v in event.headers])
                    elif isinstance(event, h11.Data) and current is not None:
                        current.body += event.data
                    elif isinstance(event, h11.EndOfMessage) and current is not None:
                        with self.lock:
                            self.requests.append(current)
                            count = len(self.requests)
                        answer = self.script(current)
                        conn.sendall(answer)
                        current = None
                        if answer.startswith(b"HTTP/1.1 101"):
                            tunnel = True
                            rest, _closed = parser.trailing_data
                            if rest:
                                conn.sendall(b"echo:" + rest)
                            break
                        if count in self.close_after:
                            return
                        # the raw answer bypassed h11: tell it one was sent, then go on
                        parser.send(h11.Response(status_code=200,
                                                 headers=[("Content-Length", "0")]))
                        parser.send(h11.EndOfMessage())
                        if parser.our_state is not h11.DONE or parser.their_state is not h11.DONE:
                            return
                        parser.start_next_cycle()
                if parser.their_state is h11.MUST_CLOSE or not data:
                    return
        except OSError:
            return
        finally:
            conn.close()

    def wait_requests(self, count: int, timeout: float = 5.0) -> list[Seen]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.01)
        return list(self.requests)

    def close(self) -> None:
        self.sock.close()
        with self.lock:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()


def tree(node_port: int, **connection: Any) -> dict[str, Any]:
    return {"virtual_servers": {"web": {"properties": {
                "basic": {"protocol": "http", "port": 8080, "pool": "p"},
                "connection": connection}}},
            "pools": {"p": {"properties": {"basic": {
                "nodes_table": [{"node": f"127.0.0.1:{node_port}"}]}}}}}


class ProxyUnderTest:
    """The HTTP virtual server's protocol, served on a free loopback port."""

    def __init__(self, node_port: int, **connection: Any) -> None:
        config = parse_config(normalise_tree(tree(node_port, **connection)), 1)
        self.loop = asyncio.new_event_loop()
        self.ctx = Context(self.loop)
        self.ctx.pools = {name: PoolRuntime(cfg) for name, cfg in config.pools.items()}
        self.vs = VsRuntime(config.virtual_servers["web"], VsStats())
        ctx, vs = self.ctx, self.vs
        self.server = self.loop.run_until_complete(self.loop.create_server(
            lambda: HttpClient(ctx, vs), "127.0.0.1", 0))
        self.port: int = self.server.sockets[0].getsockname()[1]
        self.errors: list[Any] = []
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        def sweep() -> None:
            self.ctx.sweep()
            self.loop.call_later(0.05, sweep)

        self.loop.call_soon(sweep)
        self.loop.run_forever()

    def __enter__(self) -> ProxyUnderTest:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        def stop() -> None:
            self.server.close()
            for conn in list(self.ctx.connections):
                conn.abort()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)
        self.loop.close()

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), 5)
        s.settimeout(5)
        return s


def read_until_closed(s: socket.socket, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            piece = s.recv(65536)
        except ConnectionResetError:
            return data
        if not piece:
            return data
        data += piece


def read_response(s: socket.socket, timeout: float = 5.0) -> bytes:
    """One whole response (h11 frames it); what follows stays unread in the socket."""
    s.settimeout(timeout)
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    parser.send(h11.EndOfMessage())
    out = b""
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            piece = s.recv(1)  # one byte at a time: nothing after this response is consumed
            out += piece
            parser.receive_data(piece)
            continue
        if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return out
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            return out
