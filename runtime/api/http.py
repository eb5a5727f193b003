"""A small HTTPS/1.1 server on asyncio + httptools, shared by the REST API and Admin UI.

It runs on the proxy's own event loop, so it must never block: a handler is an
``async`` function from :class:`Request` to :class:`Response`, and anything slow
(password hashing, file writes) is pushed to a thread by the handler. Requests
on one connection are answered in order. Bodies over ``max_body`` get 413
before they are read, malformed requests 400, and every answer is logged as one
line on ``lockgate.runtime.access`` -- method, path (without the query),
status, size, time: never headers, cookies or bodies.

Under abuse (see :class:`Limits`, docs/rest-api.md "Limits under abuse"):

- a request head must arrive whole within ``header_timeout`` of its first byte
  (for a new connection: of the TCP accept, so the TLS handshake counts), and a
  body within ``body_timeout`` of its head; the clock is never restarted by a
  byte, so dribbling does not hold a connection;
- connections are capped per client address and in total; at either cap the
  oldest connection that has not authenticated is closed to make room, and
  a connection that has (:func:`mark_authenticated`) is never evicted, so slow
  or idle strangers cannot lock an administrator out;
- a body the handler takes as a stream (:class:`BodyStream`, for the paths the
  server's ``streams`` predicate names -- a bundle upload) is not buffered and has
  no ``max_body``: the handler authenticates the head first and only then starts
  the stream; instead of ``body_timeout`` it must keep arriving at
  ``min_stream_rate`` bytes/s averaged over each ``stream_window`` seconds;
- reading stops while requests are queued or while the transport's write
  buffer is above ``write_buffer_high`` (a client that pipelines and never
  reads), and bytes are parsed a slice at a time, so what one connection costs
  is bounded whatever it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import ipaddress
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

access_log = logging.getLogger("lockgate.runtime.access")
log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # 1 MiB: far above any configuration document
MAX_HEADER_BYTES = 32 * 1024
LINGER = 2.0  # seconds a refused request's remaining bytes are read and dropped
FEED_SLICE = 4096  # bytes handed to the parser at once: bounds the requests one read makes


@dataclass(frozen=True)
class Limits:
    """What one management server allows a client; defaults suit an appliance."""

    header_timeout: float = 10.0  # accept (TLS included) or first byte -> whole request head
    body_timeout: float = 30.0  # end of the head -> whole body
    idle_timeout: float = 60.0  # between requests; also a write that does not drain
    max_connections: int = 256  # per server
    max_connections_per_ip: int = 16  # per client IPv4 address or IPv6 /64
    max_queued: int = 8  # pipelined requests parsed ahead of the answers
    write_buffer_high: int = 64 * 1024  # stop taking requests above this much unsent
    max_body: int = MAX_BODY
    max_header_bytes: int = MAX_HEADER_BYTES
    min_stream_rate: int = 64 * 1024  # bytes/s a streamed body (an upload) must keep up
    stream_window: float = 10.0  # seconds that rate is averaged over

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any]) -> tuple[Limits, list[str]]:
        """Limits from a JSON object; unknown keys and bad values are named and skipped."""
        problems: list[str] = []
        values: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for key, value in given.items():
            default = getattr(cls, key, None) if key in known else None
            if default is None:
                problems.append(f"{key}: unknown limit (known: {', '.join(known)})")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or value <= 0 or (isinstance(default, int) and value != int(value)):
                kind = "a positive integer" if isinstance(default, int) else "a positive number"
                problems.append(f"{key}: expected {kind}, got {value!r}")
            else:
                values[key] = type(default)(value)
        return replace(cls(), **values), problems


@dataclass
class Request:
    method: str
    path: str  # percent-decoded path, without the query
    raw_path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str  # peer IP address
    stream: BodyStream | None = None  # the body, for paths the server streams (body is b"")


class BodyStreamError(Exception):
    """The streamed body will not arrive whole (too slow, connection lost)."""


STREAM_HIGH = 256 * 1024  # bytes a stream holds before reading pauses


class BodyStream:
    """A request body handed to the handler as it arrives, never gathered in memory.

    Nothing after the head is read until the handler calls :meth:`start` (after it
    authenticated the head), so a refused client gets its answer without its body
    being taken; then :meth:`read` returns what has arrived (at most about
    STREAM_HIGH bytes, reading pauses above it), ``b""`` at the end."""

    def __init__(self, conn: _Connection, expect_continue: bool) -> None:
        self._conn = conn
        self._expect_continue = expect_continue
        self._chunks: deque[bytes] = deque()
        self.buffered = 0
        self.received = 0
        self.started = False
        self.done = False  # the whole body arrived
        self.failed: str | None = None
        self.window_start = 0.0
        self.window_bytes = 0
        self._ready = asyncio.Event()

    @property
    def full(self) -> bool:
        return not self.started or self.buffered >= STREAM_HIGH

    def start(self) -> None:
        self.started = True
        self.restart_window()
        conn = self._conn
        if self._expect_continue and not self.done and conn.transport is not None \
                and not conn.closing:
            conn._send(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn._feed()
        self._conn._arm()

    def restart_window(self) -> None:
        self.window_start = time.monotonic()
        self.window_bytes = self.received

    async def read(self) -> bytes:
        assert self.started, "start() the stream first"
        while not self._chunks:
            if self.failed is not None:
                raise BodyStreamError(self.failed)
            if self.done:
                return b""
            self._ready.clear()
            await self._ready.wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        self.buffered = 0
        self._conn._feed()  # room again: read on
        self._conn._arm()
        return data

    def _put(self, data: bytes) -> None:
        self._chunks.append(data)
        self.buffered += len(data)
        self.received += len(data)
        self._ready.set()

    def _end(self) -> None:
        self.done = True
        self._ready.set()

    def _fail(self, why: str) -> None:
        if not self.done and self.failed is None:
            self.failed = why
            self._chunks.clear()
            self.buffered = 0
        self._ready.set()


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

# The connection whose request the running handler serves (set in its worker task).
_serving: contextvars.ContextVar[_Connection | None] = contextvars.ContextVar(
    "lockgate_mgmt_connection", default=None)


def mark_authenticated() -> None:
    """Say that the request being handled proved who it is (a password, a session).

    Its connection then keeps its slot when the server is full: the caps evict
    only connections that never authenticated."""
    conn = _serving.get()
    if conn is not None:
        conn.authenticated = True


def client_key(address: str) -> str:
    """What the per-IP cap counts: the IPv4 address, or the IPv6 /64 (one host's share)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Reject(Exception):
    """Stop parsing and answer with ``response`` (then close)."""

    def __init__(self, response: Response) -> None:
        self.response = response


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client = "-"
        self.key = "-"
        self.accepted = time.monotonic()
        self.authenticated = False
        self.queue: deque[Request | Response] = deque()
        self.pending = bytearray()  # received, not yet parsed (reading is paused meanwhile)
        self.wakeup = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.worker: asyncio.Task[None] | None = None
        self.tls: ssl.SSLObject | None = None
        self.tls_in = ssl.MemoryBIO()
        self.tls_out = ssl.MemoryBIO()
        self.tls_ready = server.ssl_context is None
        self.closing = False
        self.gone = False
        self.linger_until: float | None = None
        self.busy = False  # the handler is working on a request
        self.reading_paused = False
        self.write_paused_since: float | None = None
        self.awaiting_head = True  # from accept until the first head, then per request
        self.in_message = False
        self.head_started = self.accepted
        self.body_started = 0.0
        self.idle_since = self.accepted
        self.timer: asyncio.TimerHandle | None = None
        self.stream: BodyStream | None = None  # the current request's, while it streams
        self._reset_message()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "-"
        self.key = client_key(self.client)
        if not self.server.admit(self):
            self.closing = self.gone = True
            self.transport.abort()
            return
        if self.server.ssl_context is not None:
            # TLS runs here over memory BIOs rather than in the loop's SSL transport: the
            # header deadline and the caps then cover the handshake, the raw transport's
            # write buffer is the only one (flow control sees every byte), and no loop's
            # quirks about reading before the handshake matter.
            self.tls = self.server.ssl_context.wrap_bio(self.tls_in, self.tls_out,
                                                        server_side=True)
        self.transport.set_write_buffer_limits(high=self.limits.write_buffer_high)
        self.worker = asyncio.get_running_loop().create_task(self._serve())
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.gone and self not in self.server.connections:
            return
        self.closing = self.gone = True
        self.server.forget(self)
        if self.stream is not None:
            self.stream._fail("the connection was lost")
        if self.timer:
            self.timer.cancel()
            self.timer = None
        self.drained.set()
        self.wakeup.set()

    def pause_writing(self) -> None:
        # The client does not read its answers: take no more requests until it does.
        self.write_paused_since = time.monotonic()
        self.drained.clear()
        self._pause_reading()
        self._arm()

    def resume_writing(self) -> None:
        self.write_paused_since = None
        self.drained.set()
        self._feed()
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # includes lingering: what a refused client still sends is dropped
        if self.tls is None:
            self.pending += data
        elif not self._decrypt(data):
            return
        self._feed()

    def _decrypt(self, data: bytes) -> bool:
        """TLS records in, plaintext onto ``pending``; False when the connection is done."""
        assert self.tls is not None and self.transport is not None
        self.tls_in.write(data)
        try:
            if not self.tls_ready:
                try:
                    self.tls.do_handshake()
                except ssl.SSLWantReadError:
                    return self._flush_tls()
                self.tls_ready = True
                self._arm()
            while True:
                try:
                    chunk = self.tls.read(65536)
                except ssl.SSLWantReadError:
                    break
                if not chunk:
                    break
                self.pending += chunk
        except ssl.SSLZeroReturnError:
            # The client's close_notify: answer what it sent before it (as far as the
            # queue takes), then close.
            self._flush_tls()
            self._feed()
            self.closing = True
            self.wakeup.set()
        except ssl.SSLError as exc:
            log.debug("%s: TLS with %s failed: %s", self.server.name, self.client, exc)
            self.closing = self.gone = True
            self._flush_tls()  # the alert, if any
            self.transport.abort()
            self.connection_lost(None)
            return False
        return self._flush_tls()

    def _flush_tls(self) -> bool:
        if self.tls_out.pending and self.transport is not None:
            self.transport.write(self.tls_out.read())
        return True

    def _send(self, payload: bytes) -> None:
        assert self.transport is not None
        if self.tls is None:
            self.transport.write(payload)
            return
        self.tls.write(payload)
        self._flush_tls()

    def _close(self, linger: bool = False) -> None:
        """Close after what is written (with a TLS close_notify when TLS is up).

        ``linger``: the client may still be sending (a refused body): half-close
        and drop what it sends for up to LINGER seconds, so it can finish
        sending and read the answer instead of meeting a reset."""
        assert self.transport is not None
        self.closing = True
        if self.transport.is_closing():
            return
        if self.tls is not None and self.tls_ready:
            # The client's close_notify is not awaited: nothing more is decrypted.
            with contextlib.suppress(ssl.SSLError):
                self.tls.unwrap()
            self._flush_tls()
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
            self.pending.clear()
            self.linger_until = time.monotonic() + min(LINGER, self.limits.idle_timeout)
            self.reading_paused = False
            self.transport.resume_reading()
            self._arm()
            return
        self.transport.close()

    # -- parsing, a slice at a time, while there is room for more requests
    def _blocked(self) -> bool:
        return (self.closing or len(self.queue) >= self.limits.max_queued
                or self.write_paused_since is not None
                or (self.stream is not None and self.stream.full))

    def _feed(self) -> None:
        while self.pending and not self._blocked():
            chunk = bytes(self.pending[:FEED_SLICE])
            del self.pending[:FEED_SLICE]
            try:
                self.parser.feed_data(chunk)
            except httptools.HttpParserUpgrade:
                self._stop_reading(Response.error(400, "http.upgrade",
                                                  "protocol upgrades are not supported"))
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                response = cause.response if isinstance(cause, _Reject) else Response.error(
                    400, "http.bad_request", "malformed request")
                self._stop_reading(response)
            except httptools.HttpParserError:
                self._stop_reading(Response.error(400, "http.bad_request",
                                                  "malformed HTTP request"))
        if self.pending or self._blocked():
            self._pause_reading()
        else:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            if self.transport and not self.transport.is_closing():
                self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if self.transport and not self.transport.is_closing():
                self.transport.resume_reading()
            if self.in_message:
                # Time spent waiting on us is not the client's: its deadline starts over.
                now = time.monotonic()
                self.head_started = now if self.awaiting_head else self.head_started
                self.body_started = now
                if self.stream is not None and self.stream.started:
                    self.stream.restart_window()
            self._arm()

    # -- httptools callbacks
    def _reset_message(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body = bytearray()

    def on_message_begin(self) -> None:
        self._reset_message()
        self.in_message = True
        if not self.awaiting_head:  # the first request's clock started at accept
            self.awaiting_head = True
            self.head_started = time.monotonic()
        self._arm()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.awaiting_head = False
        self.body_started = time.monotonic()
        self._arm()
        method = self.parser.get_method().decode("latin-1")
        streams = self.server.streams
        if streams is not None and not self.stream:
            request = self._request(method)
            if streams(request.method, request.path):
                # Handed to the handler now; its body follows through the stream, with
                # the handler's own size limit instead of max_body. 100 Continue is the
                # handler's to send (after it accepted the head): see BodyStream.start.
                expect = self.headers.get("expect", "").lower() == "100-continue"
                self.stream = request.stream = BodyStream(self, expect)
                self.queue.append(request)
                self.wakeup.set()
                return
        length = self.headers.get("content-length", "0")
        if length.isdigit() and int(length) > self.limits.max_body:
            raise _Reject(_too_large(self.limits.max_body))
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport:
            self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.stream is not None:
            self.stream._put(body)
            return
        self.body += body
        if len(self.body) > self.limits.max_body:
            raise _Reject(_too_large(self.limits.max_body))

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.stream is not None:
            self.stream._end()
            self.stream = None
            self._arm()
            return
        self.queue.append(self._request(self.parser.get_method().decode("latin-1")))
        self.wakeup.set()
        self._arm()

    def _request(self, method: str) -> Request:
        try:
            parsed = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError as exc:
            raise _Reject(Response.error(400, "http.bad_url", "malformed request URL")) from exc
        raw_path = (parsed.path or b"/").decode("latin-1")
        try:
            path = unquote(raw_path, errors="strict")
        except UnicodeDecodeError as exc:
            raise _Reject(Response.error(400, "http.bad_url", "path is not UTF-8")) from exc
        request = Request(method, path, raw_path, (parsed.query or b"").decode("latin-1"),
                          self.headers, bytes(self.body), self.client)
        if not self.parser.should_keep_alive():
            request.headers["connection"] = "close"
        return request

    # -- internals
    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > self.limits.max_header_bytes:
            raise _Reject(Response.error(431, "http.headers_too_large", "request headers too large"))

    def _deadline(self) -> tuple[float, str] | None:
        """When this connection is next due to be cut, and why; None while we owe it."""
        if self.linger_until is not None:
            return self.linger_until, "linger"
        if self.closing:
            return None
        lim = self.limits
        if not self.tls_ready:
            return self.accepted + lim.header_timeout, "handshake"
        if self.write_paused_since is not None:
            return self.write_paused_since + lim.idle_timeout, "write"
        stream = self.stream
        if stream is not None and stream.started:
            if self.reading_paused:
                return None  # the handler has not taken what arrived: waiting on us
            return stream.window_start + lim.stream_window, "stream"
        if self.busy or self.queue or self.reading_paused:
            return None  # the server is working or waiting on itself
        if self.awaiting_head:
            return self.head_started + lim.header_timeout, "head"
        if self.in_message:
            return self.body_started + lim.body_timeout, "body"
        return self.idle_since + lim.idle_timeout, "idle"

    def _arm(self) -> None:
        due = self._deadline()
        if due is None:
            if self.timer:
                self.timer.cancel()
                self.timer = None
            return
        when = due[0]
        if self.timer and abs(self.timer.when() - when) < 0.01:
            return
        if self.timer:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_at(loop.time() + max(0.0, when - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        due = self._deadline()
        if due is None or self.transport is None:
            return
        when, why = due
        if time.monotonic() + 0.001 < when:
            self._arm()
            return
        if why == "linger":
            self.linger_until = None
            self.transport.close()
            return
        stream = self.stream
        if why == "stream" and stream is not None:
            if stream.received - stream.window_bytes >= self.limits.min_stream_rate * \
                    self.limits.stream_window:
                stream.restart_window()
                self._arm()
                return
            self.server.count_timeout(why)
            log.info("%s: %s sent its body slower than %d bytes/s; 408", self.server.name,
                     self.client, self.limits.min_stream_rate)
            # The handler answers (408, from the BodyStreamError) and the connection closes.
            self.closing = True
            self.pending.clear()
            self._pause_reading()
            stream._fail("the body arrived slower than "
                         f"{self.limits.min_stream_rate // 1024} KiB/s")
            return
        self.server.count_timeout(why)
        if why in ("head", "body") and self.in_message:
            log.info("%s: %s sent no whole request %s in time; 408", self.server.name,
                     self.client, "head" if why == "head" else "body")
            self.pending.clear()
            self._stop_reading(Response.error(408, "http.request_timeout",
                                              "request not received in time"))
            return
        self.closing = True
        if why in ("handshake", "write"):
            self.transport.abort()  # nothing can be said to this client
        else:
            self._close()

    def _stop_reading(self, response: Response) -> None:
        self.closing = True
        self._pause_reading()
        self.queue.append(response)
        self.wakeup.set()

    def evict(self) -> None:
        """Close at once to make room for another client (never an authenticated one)."""
        self.closing = True
        if self.transport:
            self.transport.abort()
        self.connection_lost(None)

    async def _serve(self) -> None:
        _serving.set(self)
        while True:
            while not self.queue:
                if self.gone or self.transport is None:
                    return
                if self.closing:
                    self._close()
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
            while self.write_paused_since is not None and not self.gone:
                await self.drained.wait()
            item = self.queue.popleft()
            if self.gone or self.transport is None or self.transport.is_closing():
                return
            if isinstance(item, Response):  # a protocol error: answer and close
                self._write(None, item, time.monotonic(), close=True, linger=True)
                return
            started = time.monotonic()
            self.busy = True
            self._arm()
            try:
                response = await self.server.handler(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Logged without the request (it may carry credentials).
                log.exception("%s: %s %s failed", self.server.name, item.method, item.raw_path)
                response = Response.error(500, "internal", "internal error; see the journal")
            finally:
                self.busy = False
            if self.gone or self.transport.is_closing():
                return
            close = item.headers.get("connection", "").lower() == "close"
            if item.stream is not None and not item.stream.done:
                # Refused before its body was read, or cut: the rest of it must not be
                # parsed as requests.
                item.stream._fail("answered")
                self.stream = None
                self.pending.clear()
                self._write(item, response, started, close=True, linger=True)
                return
            self._write(item, response, started, close=close)
            if close:
                return
            self.idle_since = time.monotonic()
            self._feed()
            self._arm()

    def _write(self, request: Request | None, response: Response, started: float,
               close: bool, linger: bool = False) -> None:
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
        self._send(payload)
        if close:
            self._close(linger)


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
                 limits: Limits | None = None,
                 streams: Callable[[str, str], bool] | None = None) -> None:
        self.name = name
        self.handler = handler
        # (method, path) -> True: that request's body goes to the handler as a BodyStream.
        self.streams = streams
        self.ssl_context = ssl_context
        self.limits = limits or Limits()
        # Both in accept order (dicts keep it): eviction looks for the oldest first.
        self.connections: dict[_Connection, None] = {}
        self.by_client: dict[str, dict[_Connection, None]] = {}
        self.counters = {"evicted": 0, "refused": 0, "timeout_handshake": 0, "timeout_head": 0,
                         "timeout_body": 0, "timeout_stream": 0, "timeout_idle": 0, "timeout_write": 0}
        self._last_warning = 0.0
        self._server: asyncio.Server | None = None

    def admit(self, conn: _Connection) -> bool:
        """Make room for ``conn`` (evicting strangers) or say no; registers it on yes."""
        limits = self.limits
        same = self.by_client.get(conn.key, {})
        if len(same) >= limits.max_connections_per_ip and not self._evict_from(same, conn):
            return False
        if len(self.connections) >= limits.max_connections \
                and not self._evict_from(self.connections, conn):
            return False
        self.connections[conn] = None
        self.by_client.setdefault(conn.key, {})[conn] = None
        return True

    def _evict_from(self, group: Mapping[_Connection, None], newcomer: _Connection) -> bool:
        for victim in group:  # oldest first
            if not victim.authenticated:
                self.counters["evicted"] += 1
                self._warn(f"{len(self.connections)} connections open ({len(group)} in the "
                           f"group that is full); closed the oldest unauthenticated one, "
                           f"from {victim.client}, for {newcomer.client}")
                victim.evict()
                return True
        self.counters["refused"] += 1
        self._warn(f"{len(group)} authenticated connections fill the cap; refused "
                   f"{newcomer.client}")
        return False

    def _warn(self, text: str) -> None:
        # Under a flood this would be a line per connection: one every 10 s says enough.
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            log.warning("%s: %s (evicted %d, refused %d so far)", self.name, text,
                        self.counters["evicted"], self.counters["refused"])

    def forget(self, conn: _Connection) -> None:
        self.connections.pop(conn, None)
        same = self.by_client.get(conn.key)
        if same is not None:
            same.pop(conn, None)
            if not same:
                del self.by_client[conn.key]

    def count_timeout(self, why: str) -> None:
        self.counters[f"timeout_{why}"] += 1

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        # Plain TCP here: each connection starts TLS itself (see _Connection.connection_made).
        self._server = await loop.create_server(
            lambda: _Connection(self), host or None, port, reuse_address=True, backlog=256)

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
