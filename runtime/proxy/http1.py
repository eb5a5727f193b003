"""Sans-IO HTTP/1.1 for a reverse proxy: bytes in, events and bytes out.

:class:`RequestReader` parses what a client sends (one httptools parser per
connection, reused for every request on it) into events; :class:`ResponseReader`
parses what a node answers and produces the bytes to send to the client.
Neither touches a socket, so they are tested by feeding bytes.

Framing rules applied here: hop-by-hop headers (RFC 9110 7.6.1 and those
named in ``Connection``) are dropped both ways; request bodies are sent on
with their own Content-Length or re-chunked; responses keep Content-Length,
are re-chunked when the node chunks or reads-until-close (HTTP/1.1 clients) or
end with a close (HTTP/1.0 clients); HEAD, 1xx, 204 and 304 carry no body.

Strictness (request smuggling, docs/runtime-config.md): a request whose end a
strict parser could place elsewhere is refused, never forwarded -- llhttp's
own checks (no obs-fold, no bare LF, one plain Content-Length, Content-Length
with Transfer-Encoding, chunk sizes) plus: Transfer-Encoding other than one
``chunked`` (501) or on HTTP/1.0, not exactly one Host on HTTP/1.1 (none or
several on 1.0), a version other than 1.0/1.1, ``Connection`` naming Host or
Content-Length, an Upgrade request with a body (400), CONNECT (501). After an
Upgrade request nothing the client sends is released until the node says 101
(:meth:`RequestReader.start_tunnel`); any other answer ends the connection.
"""

from __future__ import annotations

import re
from typing import Any, Final

import httptools

# Event kinds from RequestReader, in the order a request produces them.
HEAD: Final = 1  # payload: RequestHead
BODY: Final = 2  # payload: bytes, already framed for the node
END: Final = 3  # payload: bytes to send to the node to finish the body (may be b"")
ERROR: Final = 4  # payload: (status, reason) -> answer and close
RAW: Final = 5  # payload: tunnel data, once the node accepted an Upgrade (start_tunnel)

HOP_BY_HOP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade",
})

REASONS = {
    400: b"Bad Request", 408: b"Request Timeout", 413: b"Payload Too Large",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}
# RFC 9110 9.2.2: only these may be sent again after a connection died under them.
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_ERROR_CACHE: dict[int, bytes] = {}


def error_response(status: int) -> bytes:
    """A complete, closing response for a proxy-made error (cached: errors are hot under attack)."""
    cached = _ERROR_CACHE.get(status)
    if cached is None:
        reason = REASONS.get(status, b"Error")
        body = b"%d %s\n" % (status, reason)
        cached = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        _ERROR_CACHE[status] = cached
    return cached


CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"
TE_CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"


class RequestHead:
    __slots__ = ("chunked", "content_length", "expect_continue", "headers", "http10",
                 "keep_alive", "method", "target", "upgrade", "xff")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.http10 = False
        self.headers: list[tuple[bytes, bytes]] = []  # end-to-end headers only
        self.keep_alive = True
        self.chunked = False
        self.content_length: int | None = None
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.xff: bytes | None = None  # incoming X-Forwarded-For

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def encode(self, client_ip: bytes | None, proto: bytes | None) -> bytes:
        """The head to send to a node (always HTTP/1.1, keep-alive unless upgrading)."""
        parts = [self.method, b" ", self.target, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            parts += (name, b": ", value, b"\r\n")
        if client_ip is not None:
            xff = self.xff + b", " + client_ip if self.xff else client_ip
            parts += (b"X-Forwarded-For: ", xff, b"\r\n")
        elif self.xff:
            parts += (b"X-Forwarded-For: ", self.xff, b"\r\n")
        if proto is not None:
            parts += (b"X-Forwarded-Proto: ", proto, b"\r\n")
        if self.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if self.upgrade is not None:
            parts += (b"Connection: upgrade\r\nUpgrade: ", self.upgrade, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)


class ProtocolError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close", b"upgrade"})  # name no other header


# Underscore spellings of headers that frame a request (a 400) or that the proxy sets
# (dropped). A set lookup, not a scan of every name for "_": it is per header.
_UNDERSCORED: Final = frozenset({
    b"content_length", b"transfer_encoding",
    b"x_forwarded_for", b"x-forwarded_for", b"x_forwarded-for",
    b"x_forwarded_proto", b"x-forwarded_proto", b"x_forwarded-proto",
})


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


class RequestReader:
    """Client side: feed bytes, take events from ``events`` (a list of (kind, payload)).

    Pipelined requests are parsed as they arrive and queue up behind the one
    being served; the caller bounds that queue by pausing the client when
    ``events`` or ``held_size`` grows (one request at a time is forwarded).

    Head size: what httptools has handed over (URL pieces, whole header lines)
    is counted exactly; a line still in httptools' hands is counted by the
    reads that brought no callback at all, so a head is never counted twice
    and a trickled line is still stopped (at most one read past the limit).
    """

    __slots__ = ("_bad_te", "_failed", "_head", "_head_bytes", "_held", "_hosts", "_in_head",
                 "_named", "_parser", "_raw", "_touched", "_unfinished", "_url", "events",
                 "held_size", "max_header_bytes", "strip_forwarded_proto")

    def __init__(self, max_header_bytes: int, strip_forwarded_proto: bool = True) -> None:
        self.max_header_bytes = max_header_bytes
        self.strip_forwarded_proto = strip_forwarded_proto
        self.events: list[tuple[int, Any]] = []  # a few at most: smaller than a deque
        self._parser = httptools.HttpRequestParser(self)
        self._head: RequestHead | None = None
        self._url: bytes = b""
        self._head_bytes = 0
        self._in_head = False
        self._named = False
        self._failed = False
        self._raw = False  # the node accepted an Upgrade: everything is tunnel data
        # after an Upgrade request, what the client sent next: nobody's until the node answers
        self._held: bytearray | None = None
        self.held_size = 0  # its length: the transport pauses the client past a limit
        self._hosts = 0
        self._bad_te = False
        self._touched = False  # a callback ran during this feed()
        self._unfinished = 0  # bytes of reads that brought no callback (a line in httptools)

    @property
    def in_head(self) -> bool:
        """True while a request head is partly received (the request timeout runs)."""
        return self._in_head

    def start_tunnel(self) -> None:
        """The node answered the Upgrade request with 101: release what was held, as tunnel data."""
        held = self._held
        self._held = None
        self.held_size = 0
        self._raw = True
        if held:
            self.events.append((RAW, bytes(held)))

    def feed(self, data: bytes) -> None:
        if self._raw:
            self.events.append((RAW, data))
            return
        held = self._held
        if held is not None:
            held += data
            self.held_size = len(held)
            return
        if self._failed:
            return
        self._touched = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # on_headers_complete let only a body-less Upgrade request through (CONNECT is
            # refused there): what follows is the node's to judge, once it answered.
            self._held = held = bytearray(data[exc.args[0]:])
            self.held_size = len(held)
            return
        except httptools.HttpParserCallbackError as exc:
            status = exc.__context__.status if isinstance(exc.__context__, ProtocolError) else 400
            self._fail(status)
            return
        except httptools.HttpParserError:
            self._fail(400)
            return
        if self._head is not None:  # inside a message: a head, or trailers, may be unfinished
            if self._touched:
                self._unfinished = 0
            else:
                self._unfinished += len(data)
                if self._head_bytes + self._unfinished > self.max_header_bytes:
                    self._fail(431 if self._in_head else 400)

    def _fail(self, status: int) -> None:
        self._failed = True
        self._in_head = False
        self.events.append((ERROR, status))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._head = RequestHead()
        self._url = b""
        self._head_bytes = 0
        self._in_head = True
        self._named = False  # Connection named other headers to drop
        self._hosts = 0
        self._bad_te = False
        self._touched = True
        self._unfinished = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._touched = True
        self._head_bytes += len(url)
        if self._head_bytes > self.max_header_bytes:
            raise ProtocolError(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        assert head is not None
        self._touched = True
        self._head_bytes += len(name) + len(value) + 4
        if not self._in_head:  # a trailer field: counted, bounded, not forwarded
            if self._head_bytes > self.max_header_bytes:
                raise ProtocolError(400)
            return
        if self._head_bytes > self.max_header_bytes:
            raise ProtocolError(431)
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                tokens = _connection_tokens(value)
                if b"close" in tokens:
                    head.keep_alive = False
                if b"upgrade" in tokens:
                    head.upgrade = head.upgrade or b""
                if not tokens <= _PLAIN_CONNECTION:  # it names other headers: drop them at the end
                    head.headers.append((b"\x00connection", value))
                    self._named = True
            elif lname == b"transfer-encoding":
                # one "chunked" and nothing else: other codings, or a list split over
                # lines, are read differently by different parsers (TE.TE smuggling)
                if head.chunked or value.strip(b" \t").lower() != b"chunked":
                    self._bad_te = True
                head.chunked = True
            elif lname == b"upgrade":
                head.upgrade = value
            return
        if lname in _UNDERSCORED:  # (the name's hash is cached by the lookup above: cheap)
            # CGI/WSGI nodes read "_" as "-": X_Forwarded_For is their X-Forwarded-For
            dashed = lname.replace(b"_", b"-")
            if dashed == b"content-length" or dashed == b"transfer-encoding":
                raise ProtocolError(400)
            if dashed == b"x-forwarded-for" or self.strip_forwarded_proto:
                return  # the proxy's own header is the only one the node may see
        if lname == b"content-length":
            head.content_length = int(value)
        elif lname == b"host":
            self._hosts += 1
        elif lname == b"expect":
            head.expect_continue = value.lower() == b"100-continue"
        elif lname == b"x-forwarded-for":
            head.xff = head.xff + b", " + value if head.xff else value
            return
        elif lname == b"x-forwarded-proto" and self.strip_forwarded_proto:
            return
        head.headers.append((name, value))

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        parser = self._parser
        self._in_head = False
        self._head_bytes = 0  # from here on it counts trailer fields
        self._touched = True
        head.method = method = parser.get_method()
        head.target = self._url
        version = parser.get_http_version()
        if version != "1.1":
            if version != "1.0":
                raise ProtocolError(505)
            head.http10 = True
        if method == b"CONNECT":
            raise ProtocolError(501)  # a reverse proxy opens no tunnels to where clients say
        if self._hosts != 1 and (self._hosts or not head.http10):
            raise ProtocolError(400)  # RFC 9112 3.2: exactly one Host on HTTP/1.1
        if head.chunked:
            if self._bad_te:
                raise ProtocolError(501)  # RFC 9112 6.1: a coding we do not forward
            if head.http10:
                raise ProtocolError(400)  # RFC 9112 6.1: framing an HTTP/1.0 peer may misread
        head.keep_alive = head.keep_alive and parser.should_keep_alive()
        if self._named:
            named = _drop_connection_named(head.headers)
            if b"content-length" in named or b"host" in named:
                raise ProtocolError(400)
            if b"x-forwarded-for" in named:
                head.xff = None  # the client's own, named hop-by-hop: gone; ours is added
        # llhttp pauses after a request with both an Upgrade header and "Connection: upgrade"
        # (CONNECT was refused above); the two must agree on which requests those are.
        if head.upgrade is not None:
            if not parser.should_upgrade():
                head.upgrade = None  # Upgrade without "Connection: upgrade", or the reverse
            elif not head.upgrade or head.has_body:
                raise ProtocolError(400)  # its body and what follows could not be told apart
        self.events.append((HEAD, head))

    def on_body(self, body: bytes) -> None:
        head = self._head
        assert head is not None
        self._touched = True
        self.events.append((BODY, chunk(body) if head.chunked else body))

    def on_message_complete(self) -> None:
        head = self._head
        assert head is not None
        self.events.append((END, LAST_CHUNK if head.chunked else b""))
        self._head = None


def _drop_connection_named(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Remove the marker for Connection and every header it names (hop-by-hop); the names.

    Content-Length is never dropped: the body it frames is passed on as it is.
    """
    named: set[bytes] = set()
    marker = False
    for name, value in headers:
        if name == b"\x00connection":
            marker = True
            named |= _connection_tokens(value)
    if not marker:
        return named
    keep = named - _NEVER_DROPPED
    headers[:] = [(n, v) for n, v in headers
                  if n != b"\x00connection" and n.lower() not in keep]
    return named


# a 101 answer needs its Upgrade header (elsewhere it is gone already); a body its length
_NEVER_DROPPED: Final = frozenset({b"upgrade", b"content-length"})


# ---- a client connection's lifecycle (sans-IO) ---------------------------------------------
# The transport keeps one state per client connection; the functions below make every
# decision about it, so they are tested without sockets (tests/unit/test_proxy_lifecycle.py).
IDLE: Final = 0  # between requests: reading the next head
CONNECTING: Final = 1  # a request head read, no node connection yet (its body is buffered)
SENDING: Final = 2  # the request is going to the node
WAITING: Final = 3  # the whole request is with the node: its answer is awaited or relayed
TUNNEL: Final = 4  # the node said 101 to an Upgrade request: bytes both ways
CLOSED: Final = 5
# what a connection's deadline is for
T_REQUEST: Final = 0  # a request head to arrive
T_IDLE: Final = 1  # the next request on a kept-alive connection
T_ACTIVE: Final = 2  # the node (or client) to move while a request is in flight

# What to do with an event from the RequestReader, given the state (pump_action).
P_START: Final = 1  # a new request: pick a node, connect
P_FAIL: Final = 2  # answer the payload's status and close
P_FORWARD: Final = 3  # bytes for the node (body, or tunnel data)
P_FORWARD_END: Final = 4  # the last bytes of the request for the node
P_HOLD: Final = 5  # leave it queued: the request before it is still being served
P_DROP: Final = 6  # nothing to do with it


def pump_action(state: int, kind: int) -> int:
    """One request at a time: a pipelined head waits until the answer before it is done."""
    if state == IDLE:
        if kind == HEAD:
            return P_START
        return P_FAIL if kind == ERROR else P_DROP
    if state in (CONNECTING, SENDING):
        if kind == HEAD:
            return P_HOLD
        if kind == ERROR:
            return P_FAIL
        return P_FORWARD_END if kind == END else P_FORWARD
    if state == TUNNEL:
        return P_FORWARD
    return P_HOLD  # WAITING: the answer comes first; CLOSED: nobody reads it


def deadline_status(timer: int, state: int, in_head: bool, answer_started: bool) -> int:
    """The status a passed deadline answers (then closes): 408 while a request head is
    arriving, 504 while a node owes the start of its answer; 0 closes without one."""
    if timer == T_REQUEST and in_head:
        return 408
    if state == WAITING and not answer_started:
        return 504
    return 0


def may_resend(method: bytes, has_body: bool, reused: bool, received: bool,
               resent: bool) -> bool:
    """A kept-alive node connection died under a request: send it again on a fresh one?

    Only when the node said nothing at all (it most likely closed the idle connection
    as we wrote), only once, only without a body (it is not kept), and only for an
    idempotent method (RFC 9110 9.2.2, RFC 9112 9.3.1): the node may have acted on it.
    """
    return reused and not received and not resent and not has_body and method in IDEMPOTENT


# What a node connection dying (or speaking nonsense) mid-request leads to (node_broke).
B_RESEND: Final = 1  # send the request again on a fresh connection (may_resend said so)
B_502: Final = 2  # nothing of the answer was sent yet: answer 502 and close
B_ABORT: Final = 3  # part of the answer went out: reset the client, never a truncated "success"


def node_broke(answer_started: bool, resend: bool) -> int:
    if resend:
        return B_RESEND
    return B_ABORT if answer_started else B_502


def switch_allowed(request_done: bool) -> bool:
    """The node said 101 to an Upgrade request (ResponseReader refuses any other 101):
    a tunnel only once the request was wholly sent, else the 101 is a 502."""
    return request_done


def node_reusable(reusable: bool, request_done: bool, upgrading: bool, stopping: bool) -> bool:
    """Whether a node connection goes back to the idle pool after an answer. Never after
    an Upgrade request: the node may still be waiting to switch."""
    return reusable and request_done and not upgrading and not stopping


def after_answer(client_keep_alive: bool, stopping: bool, upgrading: bool, client_eof: bool,
                 queued: bool) -> int:
    """The client connection's state once an answer was sent: IDLE (keep-alive) or CLOSED.
    A refused Upgrade closes: what the client sent after it was never read as requests."""
    if not client_keep_alive or stopping or upgrading or (client_eof and not queued):
        return CLOSED
    return IDLE


# ResponseReader event kinds
R_HEAD: Final = 11  # payload: bytes (head for the client); interim 1xx heads are R_INTERIM
R_INTERIM: Final = 12
R_BODY: Final = 13  # payload: bytes for the client
R_END: Final = 14  # payload: bytes to finish the body for the client
R_UPGRADE: Final = 15  # payload: bytes after a 101 head (tunnel data)


MAX_RESPONSE_HEAD: Final = 65536  # a node's head larger than this is a 502
# In a lower-cased node's head (llhttp refuses space before a colon): a hop-by-hop header
# other than a plain "connection: keep-alive" or "close" (which is cut out).
_UNUSUAL_LINE: Final = re.compile(
    rb"\r\n(?:connection:(?! ?(?:keep-alive|close)\r\n)|keep-alive:|proxy-connection:|te:"
    rb"|trailer:|transfer-encoding:|upgrade:)")


class ResponseReader:
    """Node side: one per backend connection, reused for each response on it.

    Call :meth:`expect` before each request with how the client must be
    answered, then feed what the node sends; ``events`` fills with bytes for
    the client. ``reusable`` says whether the node connection may be reused.

    httptools checks and frames everything; the head is taken whole from the
    bytes fed (no callback per header). A head with no hop-by-hop header but
    ``Connection: keep-alive`` -- what nearly every node sends -- goes to the
    client as it came, less that line; others are rebuilt header by header.
    """

    __slots__ = ("_client_http10", "_client_keep_alive", "_head_buf", "_head_request",
                 "_head_start", "_in_head", "_mode", "_parser", "_reset_parser", "_upgrade",
                 "client_keep_alive", "complete", "eof_body", "events", "received", "reusable",
                 "started", "status")

    def __init__(self) -> None:
        self.events: list[tuple[int, Any]] = []  # a few at most: smaller than a deque
        self._parser = httptools.HttpResponseParser(self)
        self._head_buf: bytes | bytearray = b""  # what was fed since expect(), until the head ends
        self._head_start = 0
        self._in_head = False
        self._head_request = False
        self._client_http10 = False
        self._client_keep_alive = True
        self._mode = 0  # 0 passthrough (length/no body), 1 re-chunk, 2 until-close raw
        self.status = 0
        self.started = False  # any byte of the final response seen
        self.complete = False
        self.reusable = False
        self.client_keep_alive = True  # decided when the head is seen
        self.eof_body = False  # body runs until the node closes
        self.received = False  # any byte at all since expect()
        self._upgrade = False
        self._reset_parser = False

    def expect(self, head_request: bool, client_http10: bool, client_keep_alive: bool,
               upgrade: bool = False) -> None:
        """Get ready for the answer to a request; ``upgrade``: it asked to switch protocols
        (a 101 to any other request is a 502)."""
        if self._reset_parser:
            self._parser = httptools.HttpResponseParser(self)
            self._reset_parser = False
        self._head_request = head_request
        self._client_http10 = client_http10
        self._client_keep_alive = client_keep_alive
        self._in_head = True
        self._head_buf = b""
        self._head_start = 0
        self.status = 0
        self.started = False
        self.complete = False
        self.reusable = False
        self.eof_body = False
        self.received = False
        self._upgrade = upgrade

    def feed(self, data: bytes) -> None:
        """Raises ProtocolError(502) when the node speaks nonsense."""
        self.received = True
        if self._in_head:
            buf = self._head_buf
            if not buf:
                self._head_buf = buf = data
            else:  # a head in pieces: grow a bytearray (a trickled head costs no copies)
                if type(buf) is bytes:
                    self._head_buf = buf = bytearray(buf)
                buf += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            rest = data[exc.args[0]:]
            if rest:
                self.events.append((R_UPGRADE, bytes(rest)))
        except httptools.HttpParserError:
            raise ProtocolError(502) from None
        # Only a head still unfinished counts: one read may hold a head and a long body.
        if self._in_head and len(self._head_buf) - self._head_start > MAX_RESPONSE_HEAD:
            raise ProtocolError(502)

    def node_closed(self) -> bool:
        """The node closed the connection; True if that ends the response cleanly."""
        if self.eof_body and self.started and not self.complete:
            self.complete = True
            self.reusable = False
            self.events.append((R_END, LAST_CHUNK if self._mode == 1 else b""))
            return True
        return self.complete

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if not self._in_head:  # a response nobody asked for, after the one that was
            self.reusable = False
            return
        buf = self._head_buf
        start = self._head_start
        end = buf.find(b"\r\n\r\n", start) + 4  # llhttp has seen it: it is there
        if end - start > MAX_RESPONSE_HEAD:  # however many reads brought it
            raise ProtocolError(502)
        head = bytes(buf[start:end])  # the whole of a bytes buffer is not copied
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._head_start = end  # interim answers have no body: the next head follows
            self.events.append((R_INTERIM, _reencode(head, status, b"")))
            return
        self._in_head = False
        self._head_buf = b""
        if status == 101 and not self._upgrade:
            raise ProtocolError(502)  # a tunnel nobody asked for
        self.status = status
        self.started = True
        if status == 101:
            self._mode = 0
            self.events.append((R_HEAD, _reencode(head, status, b"Connection: upgrade\r\n",
                                                  keep_upgrade=True)))
            return
        low = head.lower()
        simple = head.startswith(b"HTTP/1.1 ") and _UNUSUAL_LINE.search(low) is None
        if simple:  # passed on as it is, less a plain Connection line
            at = low.find(b"\r\nconnection:")
            if at >= 0:
                eol = low.find(b"\r\n", at + 13)
                head = head[:at] + head[eol:]
                simple = low.find(b"\r\nconnection:", eol) < 0  # two of them: rebuilt
        # RFC 9112 6.3: chunked framing only when chunked is the last coding; any other
        # Transfer-Encoding means a body that runs until the node closes. Codings other
        # than chunked (gzip, ...) are the body's and stay named for the client.
        te = TE_CHUNKED
        if simple:  # no Transfer-Encoding line (the common case: nothing to allocate)
            coded = node_chunked = False
        else:
            codings = _transfer_codings(head)
            coded = bool(codings)
            node_chunked = coded and codings[-1] == b"chunked"
            if coded and codings != [b"chunked"]:
                te = b"Transfer-Encoding: %s\r\n" % b", ".join(
                    [c for c in codings if c != b"chunked"] + [b"chunked"])
        length = not coded and b"\r\ncontent-length:" in low
        no_body = self._head_request or status in (204, 304)
        keep = self._client_keep_alive
        extra = b""
        if no_body:
            self._mode = 0
            if coded and not self._client_http10:
                extra = te
        elif length:
            self._mode = 0
        elif self._client_http10:
            self._mode = 2
            keep = False
        else:
            self._mode = 1
            extra = te
        self.eof_body = not no_body and not node_chunked and not length
        if keep:
            if self._client_http10:
                extra += b"Connection: keep-alive\r\n"
        else:
            extra += b"Connection: close\r\n"
        self.client_keep_alive = keep
        if not simple:
            out = _reencode(head, status, extra)
        elif extra:
            out = head[:-2] + extra + b"\r\n"
        else:
            out = head
        self.events.append((R_HEAD, out))
        if self._head_request:
            # httptools cannot be told a response answers HEAD: finish here and start a
            # fresh parser for the next response on this connection.
            self._reset_parser = True
            self.events.append((R_END, b""))
            self._finish(self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return  # a HEAD answer's stray body: the connection is not reused
        self.events.append((R_BODY, chunk(body) if self._mode == 1 else body))

    def on_message_complete(self) -> None:
        if self.status in (0, 101) or self.complete:
            return  # interim 1xx, a tunnel starting, or the HEAD answer already finished
        self.events.append((R_END, LAST_CHUNK if self._mode == 1 else b""))
        self._finish(self._parser.should_keep_alive())

    def _finish(self, node_keep_alive: bool) -> None:
        self.complete = True
        self.reusable = node_keep_alive and not self.eof_body


def _transfer_codings(head: bytes) -> list[bytes]:
    """The Transfer-Encoding codings of a head, lower-cased, in order, over all its lines."""
    codings: list[bytes] = []
    for name, value in _header_lines(head):
        if name.lower() == b"transfer-encoding":
            codings += [t.strip(b" \t").lower() for t in value.split(b",") if t.strip(b" \t")]
    return codings


def _header_lines(head: bytes) -> list[tuple[bytes, bytes]]:
    """(name, value) pairs of a head llhttp accepted (CRLF lines, no folding, no space before ':')."""
    pairs = []
    for line in head[:-4].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        pairs.append((name, value.strip(b" \t")))
    return pairs


def _reencode(head: bytes, status: int, extra: bytes, keep_upgrade: bool = False) -> bytes:
    """A node's head for the client: HTTP/1.1, hop-by-hop headers dropped, ``extra`` added."""
    reason = head[:head.find(b"\r\n")].split(b" ", 2)[2:]
    headers = []
    named = False
    for name, value in _header_lines(head):
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                headers.append((b"\x00connection", value))
                named = True
            elif lname == b"upgrade" and keep_upgrade:
                headers.append((name, value))
            continue
        headers.append((name, value))
    if named:
        _drop_connection_named(headers)
    return _encode_status(status, reason[0] if reason else b"", headers, extra)


def _encode_status(status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                   extra: bytes) -> bytes:
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason or b"-")]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (extra, b"\r\n")
    return b"".join(parts)
