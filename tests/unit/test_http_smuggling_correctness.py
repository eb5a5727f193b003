"""HTTP correctness findings of issue 10, each reproduced first: sans-IO where the
parser decides, over real sockets (in-process proxy, logging node) where the
transport does."""

from __future__ import annotations

from typing import Any

import pytest
from test_http_smuggling_support import (
    OK,
    LoggingNode,
    ProxyUnderTest,
    Seen,
    read_response,
    read_until_closed,
)

from lockgate.runtime.proxy.http1 import (
    ERROR,
    HEAD,
    ProtocolError,
    RequestReader,
    ResponseReader,
)


def request_events(*pieces: bytes, limit: int = 65536) -> list[tuple[int, Any]]:
    reader = RequestReader(limit)
    for piece in pieces:
        reader.feed(piece)
    return list(reader.events)


def test_a_head_under_the_limit_in_many_segments_is_not_431() -> None:
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Pad: " + b"p" * 40_000 + b"\r\n\r\n"
    events = request_events(*[head[i:i + 1000] for i in range(0, len(head), 1000)])
    assert [k for k, _ in events][:1] == [HEAD], events[:1]
    # and one header line trickled a byte at a time past the limit is still stopped
    reader = RequestReader(4096)
    reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: ")
    for _ in range(5000):
        reader.feed(b"a")
        if reader.events:
            break
    assert reader.events == [(ERROR, 431)]


def test_the_request_uri_counts_in_the_head_limit() -> None:
    assert request_events(b"GET /" + b"u" * 5000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
                          limit=4096) == [(ERROR, 431)]
    trickled = [b"GET /"] + [b"u" * 100] * 60 + [b" HTTP/1.1\r\nHost: h\r\n\r\n"]
    assert request_events(*trickled, limit=4096)[-1] == (ERROR, 431)


@pytest.mark.parametrize("wire", [
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Host\r\n\r\n",
])
def test_ambiguous_requests_are_refused(wire: bytes) -> None:
    events = request_events(wire)
    assert events and events[-1][0] == ERROR and 400 <= events[-1][1] < 600, events
    assert not [k for k, _ in events if k == HEAD]


def test_http10_without_host_is_fine() -> None:
    assert next(k for k, _ in request_events(b"GET / HTTP/1.0\r\n\r\n")) == HEAD


def test_connection_naming_x_forwarded_for_cannot_keep_or_drop_a_spoofed_one() -> None:
    (kind, head), *_ = request_events(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"Connection: X-Forwarded-For\r\n\r\n")
    assert kind == HEAD
    out = head.encode(b"10.0.0.1", b"http")
    assert b"6.6.6.6" not in out and b"X-Forwarded-For: 10.0.0.1\r\n" in out
    (kind, head), *_ = request_events(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Forwarded-Proto\r\n"
        b"X-Forwarded-Proto: https\r\n\r\n")
    assert head.encode(None, b"http").count(b"X-Forwarded-Proto") == 1
    assert b"X-Forwarded-Proto: http\r\n" in head.encode(None, b"http")


def response_reader(wire: bytes, http10: bool = False) -> ResponseReader:
    reader = ResponseReader()
    reader.expect(False, http10, True)
    reader.feed(wire)
    return reader


def test_a_node_head_over_the_limit_in_one_read_is_a_502() -> None:
    wire = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(ProtocolError) as caught:
        response_reader(wire)
    assert caught.value.status == 502


def test_gzip_chunked_keeps_its_gzip_coding() -> None:
    reader = response_reader(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                             b"3\r\nabc\r\n0\r\n\r\n")
    out = b"".join(p for _, p in reader.events)
    assert b"Transfer-Encoding: gzip, chunked\r\n" in out and out.endswith(b"3\r\nabc\r\n0\r\n\r\n")


def test_a_body_delimited_by_close_under_a_non_chunked_coding_ends_cleanly() -> None:
    reader = response_reader(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabcdef")
    assert reader.node_closed()
    out = b"".join(p for _, p in reader.events)
    assert b"Transfer-Encoding: gzip, chunked\r\n" in out
    assert out.endswith(b"\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n")
    assert reader.complete and not reader.reusable


# ---- over sockets ------------------------------------------------------------------------

@pytest.mark.parametrize("coding", [b"", b"Transfer-Encoding: gzip\r\n"])
def test_a_body_delimited_by_close_reaches_the_client_whole_and_framed(coding: bytes) -> None:
    body = bytes(range(256)) * 600  # 150 KiB, several reads
    node = LoggingNode(lambda _: b"HTTP/1.1 200 OK\r\n" + coding + b"\r\n" + body,
                       close_after={1, 2})
    with ProxyUnderTest(node.port) as proxy, proxy.connect() as s:
        s.sendall(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        first = _read_chunked(s)
        s.sendall(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")  # the client connection carries on
        second = _read_chunked(s)
        for answer in (first, second):
            head, _, chunked = answer.partition(b"\r\n\r\n")
            assert (b"Transfer-Encoding: gzip, chunked\r\n" if coding
                    else b"Transfer-Encoding: chunked\r\n") in head + b"\r\n"
            assert _dechunk(chunked) == body
    node.close()


def _read_chunked(s: Any) -> bytes:
    """A response up to its last chunk (the test's bodies never hold that sequence)."""
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        piece = s.recv(65536)
        assert piece, f"cut after {len(data)} bytes: {data[-40:]!r}"
        data += piece
    return data


def test_a_bodyless_post_is_not_retried_when_a_reused_node_connection_dies() -> None:
    posts = []

    def script(request: Seen) -> bytes:
        if request.method == b"POST":
            posts.append(request)
            return b""  # the node takes the request and closes without an answer
        return OK

    node = LoggingNode(script, close_after={2, 3})
    with ProxyUnderTest(node.port) as proxy, proxy.connect() as s:
        s.sendall(b"GET /warm HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(s).endswith(b"ok")
        s.sendall(b"POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        assert read_until_closed(s).startswith(b"HTTP/1.1 502 ")
        assert len(posts) == 1
    node.close()


def test_a_get_is_retried_once_when_a_reused_node_connection_dies() -> None:
    gets = []

    def script(request: Seen) -> bytes:
        gets.append(request.target)
        return b"" if len(gets) == 2 else OK

    node = LoggingNode(script, close_after={2})
    with ProxyUnderTest(node.port) as proxy, proxy.connect() as s:
        s.sendall(b"GET /warm HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(s).endswith(b"ok")
        s.sendall(b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(s).endswith(b"ok")
        assert gets == [b"/warm", b"/again", b"/again"]
    node.close()


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out += rest[:size]
        body = rest[size + 2:]


@pytest.mark.parametrize("name", [b"X_Forwarded_For", b"x-forwarded_for", b"X_FORWARDED_PROTO"])
def test_underscore_spellings_of_forwarding_headers_never_reach_the_node(name: bytes) -> None:
    # CGI/WSGI nodes read "_" and "-" alike (HTTP_X_FORWARDED_FOR): a client's
    # underscore spelling would stand beside, or before, the proxy's own header.
    (kind, head), *_ = request_events(b"GET / HTTP/1.1\r\nHost: h\r\n" + name + b": 6.6.6.6\r\n\r\n")
    assert kind == HEAD
    out = head.encode(b"10.0.0.1", b"http")
    assert b"6.6.6.6" not in out


@pytest.mark.parametrize("name", [b"Content_Length", b"Transfer_Encoding", b"content_length"])
def test_underscore_spellings_of_framing_headers_are_refused(name: bytes) -> None:
    events = request_events(POST_HEAD + name + b": 5\r\nContent-Length: 0\r\n\r\n")
    assert events == [(ERROR, 400)], events


def test_other_underscore_names_pass() -> None:
    (kind, head), *_ = request_events(POST_HEAD + b"X_Trace: 1\r\n\r\n")
    assert kind == HEAD and b"X_Trace: 1\r\n" in head.encode(None, None)


POST_HEAD = b"POST / HTTP/1.1\r\nHost: h\r\n"
