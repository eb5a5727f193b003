"""A small HTTPS/1.1 server on asyncio + httptools, shared by the REST API and Admin UI.

It runs on the proxy's own event loop, so it must never block: a handler is an
``async`` function from :class:`Request` to :class:`Response`, and anything slow
(password hashing, file writes) is pushed to a thread by the handler. Requests
on one connection are answered in order; reading pauses while requests are
queued (flow control instead of unbounded buffers). Bodies over ``max_body``
get 413 before they are read, malformed requests 400, and every answer is
logged as one line on ``lockgate.runtime.access`` -- method, path (without the
query), status, size, time: never headers, cookies or bodies.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

access_log = logging.getLogger("lockgate.runtime.access")
log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # 1 MiB: far above any configuration document
MAX_HEADER_BYTES = 32 * 1024
MAX_QUEUED = 8  # pipelined requests buffered before reading pauses
IDLE_TIMEOUT = 60.0  # seconds a connection may sit idle (or dribble a request)
MAX_CONNECTIONS = 512  # per server: management traffic is a few clients


@dataclass
class Request:
    method: str
    path: str  # percent-decoded path, without the query
    raw_path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str  # peer IP address


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, document: Any, headers: list[tuple[str, str]] | None = None
             ) -> Response:
        body = json.dumps(document, indent=2, sort_keys=False).encode() + b"\n"
        return cls(status, body, "application/json", list(headers or []))

    @classmethod
    def error(cls, status: int, error_id: str, text: str,
              info: dict[str, Any] | None = None,
              headers: list[tuple[str, str]] | None = None) -> Response:
        document: dict[str, Any] = {"error_id": error_id, "error_text": text}
        if info:
            document["error_info"] = info
        return cls.json(status, document, headers)


Handler = Callable[[Request], Awaitable[Response]]


class _Reject(Exception):
    """Stop parsing and answer with ``response`` (then close)."""

    def __init__(self, response: Response) -> None:
        self.response = response


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client = "-"
        self.queue: deque[Request | Response] = deque()
        self.wakeup = asyncio.Event()
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.idle: asyncio.TimerHandle | None = None
        self._reset_message()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "-"
        if len(self.server.connections) >= self.server.max_connections:
            # Full: refuse at once rather than let a flood starve the proxy's loop.
            log.warning("%s: %d connections open; refusing %s", self.server.name,
                        len(self.server.connections), self.client)
            self.closing = True
            self.transport.abort()
            return
        self.server.connections.add(self)
        self.worker = asyncio.get_running_loop().create_task(self._serve())
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.idle:
            self.idle.cancel()
        self.wakeup.set()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._touch()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_reading(Response.error(400, "http.upgrade", "protocol upgrades are not supported"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            response = cause.response if isinstance(cause, _Reject) else Response.error(
                400, "http.bad_request", "malformed request")
            self._stop_reading(response)
        except httptools.HttpParserError:
            self._stop_reading(Response.error(400, "http.bad_request", "malformed HTTP request"))
        if len(self.queue) >= MAX_QUEUED and self.transport:
            self.transport.pause_reading()

    # -- httptools callbacks
    def _reset_message(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body = bytearray()

    def on_message_begin(self) -> None:
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length", "0")
        if length.isdigit() and int(length) > self.server.max_body:
            raise _Reject(_too_large(self.server.max_body))
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > self.server.max_body:
            raise _Reject(_too_large(self.server.max_body))

    def on_message_complete(self) -> None:
        try:
            parsed = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError as exc:
            raise _Reject(Response.error(400, "http.bad_url", "malformed request URL")) from exc
        raw_path = (parsed.path or b"/").decode("latin-1")
        try:
            path = unquote(raw_path, errors="strict")
        except UnicodeDecodeError as exc:
            raise _Reject(Response.error(400, "http.bad_url", "path is not UTF-8")) from exc
        method = self.parser.get_method().decode("latin-1")
        request = Request(method, path, raw_path, (parsed.query or b"").decode("latin-1"),
                          self.headers, bytes(self.body), self.client)
        if not self.parser.should_keep_alive():
            request.headers["connection"] = "close"
        self.queue.append(request)
        self.wakeup.set()

    # -- internals
    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _Reject(Response.error(431, "http.headers_too_large", "request headers too large"))

    def _touch(self) -> None:
        if self.idle:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.server.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        if self.transport and not self.queue:
            self.transport.close()

    def _stop_reading(self, response: Response) -> None:
        self.closing = True
        if self.transport:
            self.transport.pause_reading()
        self.queue.append(response)
        self.wakeup.set()

    async def _serve(self) -> None:
        while True:
            while not self.queue:
                if self.transport is None or self.transport.is_closing():
                    return
                if self.closing and self.transport:
                    self.transport.close()
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
            item = self.queue.popleft()
            if self.transport is None or self.transport.is_closing():
                return
            if isinstance(item, Response):  # a protocol error: answer and close
                self._write(None, item, time.monotonic(), close=True)
                return
            started = time.monotonic()
            try:
                response = await self.server.handler(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Logged without the request (it may carry credentials).
                log.exception("%s: %s %s failed", self.server.name, item.method, item.raw_path)
                response = Response.error(500, "internal", "internal error; see the journal")
            close = item.headers.get("connection", "").lower() == "close"
            self._write(item, response, started, close=close)
            if close:
                return
            self._touch()
            if len(self.queue) < MAX_QUEUED and not self.closing and self.transport:
                self.transport.resume_reading()

    def _write(self, request: Request | None, response: Response, started: float,
               close: bool) -> None:
        assert self.transport is not None
        reason = _reason(response.status)
        head = [f"HTTP/1.1 {response.status} {reason}",
                f"Date: {email.utils.formatdate(usegmt=True)}",
                "Server: lockgate",
                f"Content-Length: {len(response.body)}",
                "X-Content-Type-Options: nosniff",
                "Cache-Control: no-store"]
        if response.body or response.status not in (204, 304):
            head.append(f"Content-Type: {response.content_type}")
        head += [f"{name}: {value}" for name, value in response.headers]
        if close:
            head.append("Connection: close")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if request is None or request.method != "HEAD":
            payload += response.body
        # Logged before sending, so a client that has its answer finds the line there.
        method = request.method if request else "-"
        path = _printable(request.raw_path) if request else "-"
        access_log.info("%s %s %s %s %d %d %.1fms", self.server.name, self.client, method, path,
                        response.status, len(response.body), (time.monotonic() - started) * 1000)
        self.transport.write(payload)
        if close:
            self.transport.close()


def _too_large(limit: int) -> Response:
    return Response.error(413, "http.body_too_large", f"request body is over {limit} bytes")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() and c != " " else f"%{ord(c):02X}" for c in text[:512])


class HttpServer:
    """One listening HTTPS server; ``await start()``, ``await close()``."""

    def __init__(self, name: str, handler: Handler, ssl_context: ssl.SSLContext | None, *,
                 max_body: int = MAX_BODY, idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.name = name
        self.handler = handler
        self.ssl_context = ssl_context
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host or None, port, ssl=self.ssl_context,
            reuse_address=True, backlog=256, ssl_handshake_timeout=10.0)

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self.connections):
            if conn.transport:
                conn.transport.abort()
            if conn.worker:
                conn.worker.cancel()
        await self._server.wait_closed()
        self._server = None
