"""The sans-IO HTTP/1.1 core, fed bytes without sockets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockgate.runtime.proxy.http1 import (
    BODY,
    END,
    ERROR,
    HEAD,
    R_BODY,
    R_END,
    R_HEAD,
    R_INTERIM,
    R_UPGRADE,
    RAW,
    ProtocolError,
    RequestReader,
    ResponseReader,
    error_response,
)


def request_events(*chunks: bytes, limit: int = 65536) -> list[tuple[int, Any]]:
    reader = RequestReader(limit)
    for data in chunks:
        reader.feed(data)
    return list(reader.events)


def heads(events: list[tuple[int, Any]]) -> list[Any]:
    return [p for k, p in events if k == HEAD]


def test_simple_get_is_reencoded_with_forwarding_headers() -> None:
    events = request_events(b"GET /a?b=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n")
    assert [k for k, _ in events] == [HEAD, END]
    head = events[0][1]
    assert head.keep_alive and not head.http10 and not head.has_body
    assert head.encode(b"10.1.2.3", b"https") == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n"
        b"X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n\r\n")


def test_hop_by_hop_headers_and_those_named_by_connection_are_dropped() -> None:
    events = request_events(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n"
        b"X-Secret: 1\r\nTE: trailers\r\nProxy-Connection: x\r\nX-Forwarded-For: 1.1.1.1\r\n"
        b"X-Forwarded-Proto: http\r\nX-Keep: y\r\n\r\n")
    out = heads(events)[0].encode(b"2.2.2.2", b"https")
    assert out == (b"GET / HTTP/1.1\r\nHost: h\r\nX-Keep: y\r\n"
                   b"X-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nX-Forwarded-Proto: https\r\n\r\n")


def test_forwarding_headers_can_be_turned_off() -> None:
    head = heads(request_events(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"))[0]
    assert head.encode(None, None) == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_content_length_body_passes_unchanged_in_pieces() -> None:
    events = request_events(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234",
                            b"56789")
    assert [k for k, _ in events] == [HEAD, BODY, BODY, END]
    assert b"".join(p for k, p in events if k in (BODY, END)) == b"0123456789"
    assert b"Content-Length: 10\r\n" in events[0][1].encode(None, None)


def test_chunked_request_is_rechunked_and_terminated() -> None:
    events = request_events(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabc\r\n", b"2\r\nde\r\n0\r\n\r\n")
    head = events[0][1]
    assert head.chunked and b"Transfer-Encoding: chunked\r\n" in head.encode(None, None)
    body = b"".join(p for k, p in events if k in (BODY, END))
    assert body == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


def test_pipelined_requests_queue_in_order() -> None:
    events = request_events(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
                            b"GET /3 HTTP/1.0\r\n\r\n")
    assert [h.target for h in heads(events)] == [b"/1", b"/2", b"/3"]
    assert [h.keep_alive for h in heads(events)] == [True, True, False]
    assert [k for k, _ in events] == [HEAD, END, HEAD, END, HEAD, END]


def test_connection_close_and_http10_keep_alive() -> None:
    close = heads(request_events(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))[0]
    assert not close.keep_alive
    ka10 = heads(request_events(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))[0]
    assert ka10.keep_alive and ka10.http10


def test_expect_100_continue_is_seen_and_forwarded() -> None:
    head = heads(request_events(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                                b"Content-Length: 3\r\n\r\n"))[0]
    assert head.expect_continue
    assert b"Expect: 100-continue\r\n" in head.encode(None, None)


@pytest.mark.parametrize("data", [
    b"NOT-A-METHOD\x01 / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
])
def test_malformed_requests_give_400(data: bytes) -> None:
    events = request_events(data)
    assert events[-1] == (ERROR, 400)


def test_oversized_head_in_one_piece_gives_431() -> None:
    events = request_events(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", limit=4096)
    assert events == [(ERROR, 431)]


def test_oversized_head_trickled_gives_431_before_it_completes() -> None:
    reader = RequestReader(2048)
    reader.feed(b"GET / HTTP/1.1\r\n")
    for _ in range(100):
        reader.feed(b"X-A: " + b"b" * 50 + b"\r\n")
        if reader.events:
            break
    assert list(reader.events) == [(ERROR, 431)]


def test_in_head_tracks_a_partial_request() -> None:
    reader = RequestReader(65536)
    assert not reader.in_head
    reader.feed(b"GET / HT")
    assert reader.in_head
    reader.feed(b"TP/1.1\r\n\r\n")
    assert not reader.in_head


def test_upgrade_request_holds_what_follows_until_the_node_says_101() -> None:
    reader = RequestReader(65536)
    reader.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\n\r\nhello")
    reader.feed(b"more")
    head = reader.events[0][1]
    assert head.upgrade == b"websocket"
    assert b"Connection: upgrade\r\nUpgrade: websocket\r\n" in head.encode(None, None)
    assert [k for k, _ in reader.events] == [HEAD, END]  # nothing released yet
    assert reader.held_size == 9
    reader.start_tunnel()
    reader.feed(b"!")
    assert reader.events[2:] == [(RAW, b"hellomore"), (RAW, b"!")]


# ---- responses ------------------------------------------------------------------------------

def response(data: bytes | list[bytes], head_request: bool = False, http10: bool = False,
             keep_alive: bool = True) -> tuple[ResponseReader, list[tuple[int, Any]]]:
    reader = ResponseReader()
    reader.expect(head_request, http10, keep_alive)
    for piece in [data] if isinstance(data, bytes) else data:
        reader.feed(piece)
    return reader, list(reader.events)


def client_bytes(events: list[tuple[int, Any]]) -> bytes:
    return b"".join(p for _, p in events)


def test_content_length_response_passes_and_connection_is_reusable() -> None:
    reader, events = response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: t=5\r\n"
                              b"Server: n\r\n\r\nhello")
    assert [k for k, _ in events] == [R_HEAD, R_BODY, R_END]
    assert client_bytes(events) == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: n\r\n\r\nhello"
    assert reader.complete and reader.reusable and reader.client_keep_alive


def test_chunked_response_is_rechunked_for_http11_client() -> None:
    reader, events = response([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwi",
                               b"ki\r\n5\r\npedia\r\n0\r\n\r\n"])
    data = client_bytes(events)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert _dechunk(body) == b"wikipedia"
    assert reader.reusable


def test_chunked_response_to_http10_client_ends_with_close() -> None:
    reader, events = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"3\r\nabc\r\n0\r\n\r\n", http10=True)
    data = client_bytes(events)
    assert data.endswith(b"Connection: close\r\n\r\nabc")
    assert not reader.client_keep_alive


def test_read_until_close_response_is_chunked_then_ended_by_node_close() -> None:
    reader, _events = response(b"HTTP/1.1 200 OK\r\n\r\nsome data")
    assert not reader.complete
    assert reader.node_closed()
    data = client_bytes(list(reader.events))
    assert data.endswith(b"Transfer-Encoding: chunked\r\n\r\n9\r\nsome data\r\n0\r\n\r\n")
    assert not reader.reusable


def test_head_response_has_no_body_and_parser_restarts() -> None:
    reader, events = response(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", head_request=True)
    assert [k for k, _ in events] == [R_HEAD, R_END]
    assert b"Content-Length: 1234" in events[0][1]
    assert reader.complete and reader.reusable
    reader.events.clear()
    reader.expect(False, False, True)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert client_bytes(list(reader.events)).endswith(b"\r\n\r\nok") and reader.complete


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status: int) -> None:
    reader, events = response(b"HTTP/1.1 %d X\r\nETag: 1\r\n\r\n" % status)
    assert [k for k, _ in events] == [R_HEAD, R_END] and reader.complete and reader.reusable


def test_100_continue_is_passed_on_before_the_final_answer() -> None:
    reader, events = response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                              b"Content-Length: 0\r\n\r\n")
    assert [k for k, _ in events] == [R_INTERIM, R_HEAD, R_END]
    assert events[0][1] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert reader.status == 201


def test_connection_close_from_node_is_not_reused_but_client_keeps_alive() -> None:
    reader, events = response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert b"Connection" not in events[0][1]
    assert reader.complete and not reader.reusable and reader.client_keep_alive


def test_client_close_is_told_in_the_response() -> None:
    _, events = response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", keep_alive=False)
    assert b"Connection: close\r\n" in events[0][1]


def test_101_switches_to_tunnel() -> None:
    reader = ResponseReader()
    reader.expect(False, False, True, upgrade=True)
    reader.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\nframe")
    events = list(reader.events)
    assert reader.status == 101
    assert b"Upgrade: websocket\r\n" in events[0][1] and b"Connection: upgrade\r\n" in events[0][1]
    assert [k for k, _ in events] == [R_HEAD, R_UPGRADE] and events[-1] == (R_UPGRADE, b"frame")


def test_garbage_from_node_is_a_protocol_error() -> None:
    from lockgate.runtime.proxy.http1 import ProtocolError

    reader = ResponseReader()
    reader.expect(False, False, True)
    with pytest.raises(ProtocolError):
        reader.feed(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_error_responses_are_complete_and_close() -> None:
    data = error_response(503)
    reader, _events = response(data)
    assert reader.status == 503 and reader.complete and not reader.reusable


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out += rest[:size]
        body = rest[size + 2:]


@given(st.binary(min_size=0, max_size=3000), st.lists(st.integers(1, 400), max_size=20))
def test_any_split_of_a_chunked_upload_gives_the_same_body(payload: bytes, cuts: list[int]) -> None:
    wire = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i in range(0, len(payload), 700):
        part = payload[i:i + 700]
        wire += b"%x\r\n%s\r\n" % (len(part), part)
    wire += b"0\r\n\r\n"
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(wire[pos:pos + cut])
        pos += cut
    pieces.append(wire[pos:])
    events = request_events(*[p for p in pieces if p])
    assert events[-1][0] == END
    assert _dechunk(b"".join(p for k, p in events if k in (BODY, END))) == payload


# Pins re-encoding details a faster header path must keep: common names named by
# Connection are dropped too, and heads without end-to-end headers stay well formed.
def test_common_headers_named_by_connection_are_still_dropped() -> None:
    head = heads(request_events(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Cookie, accept\r\n"
                                b"Cookie: a=1\r\nAccept: */*\r\nUser-Agent: u\r\n\r\n"))[0]
    assert head.encode(None, None) == b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\n\r\n"
    _, events = response(b"HTTP/1.1 200 OK\r\nConnection: ETag\r\nETag: \"x\"\r\nDate: d\r\n"
                         b"Content-Length: 0\r\n\r\n")
    assert client_bytes(events) == b"HTTP/1.1 200 OK\r\nDate: d\r\nContent-Length: 0\r\n\r\n"


def test_heads_without_end_to_end_headers_encode_cleanly() -> None:
    head = heads(request_events(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))[0]
    assert head.encode(None, None) == b"GET /x HTTP/1.1\r\n\r\n"
    assert head.encode(b"", None) == b"GET /x HTTP/1.1\r\nX-Forwarded-For: \r\n\r\n"
    _, events = response(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert client_bytes(events) == b"HTTP/1.1 204 No Content\r\n\r\n"
    _, events = response(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")
    assert client_bytes(events) == b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"  # as sent
    _, events = response(b"HTTP/1.0 200 \r\nContent-Length: 0\r\n\r\n")  # rebuilt
    assert client_bytes(events) == b"HTTP/1.1 200 -\r\nContent-Length: 0\r\n\r\n"


# ---- the whole-head response path --------------------------------------------------------
NGINX_LIKE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
              b"ETag: \"x\"\r\n\r\nhello")


@given(st.lists(st.integers(1, 60), max_size=12))
def test_any_split_of_a_response_gives_the_same_bytes(cuts: list[int]) -> None:
    wire = b"HTTP/1.1 100 Continue\r\n\r\n" + NGINX_LIKE
    _, whole = response(wire)
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(wire[pos:pos + cut])
        pos += cut
    pieces.append(wire[pos:])
    reader, events = response([p for p in pieces if p])
    assert client_bytes(events) == client_bytes(whole) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello")
    assert reader.complete and reader.reusable and reader.status == 200


@pytest.mark.parametrize("line", [
    b"Keep-Alive: timeout=5", b"TE: trailers", b"Trailer: X-Sum", b"Proxy-Connection: close",
    b"connection: Keep-Alive", b"CONNECTION: close",
])
def test_hop_by_hop_lines_never_reach_the_client(line: bytes) -> None:
    _, events = response(b"HTTP/1.1 200 OK\r\nA: 1\r\n" + line + b"\r\nContent-Length: 2\r\n\r\nok")
    assert client_bytes(events) == b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 2\r\n\r\nok"


def test_two_connection_lines_are_both_dropped() -> None:
    _, events = response(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nA: 1\r\n"
                         b"Connection: X-Hop\r\nX-Hop: y\r\nContent-Length: 0\r\n\r\n")
    assert client_bytes(events) == b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 0\r\n\r\n"


def test_a_header_merely_ending_in_a_hop_by_hop_name_is_kept() -> None:
    wire = b"HTTP/1.1 200 OK\r\nX-Connection: keep-alive\r\nX-Te: 1\r\nContent-Length: 0\r\n\r\n"
    _, events = response(wire)
    assert client_bytes(events) == wire


def test_a_node_head_without_end_is_a_502() -> None:
    reader = ResponseReader()
    reader.expect(False, False, True)
    reader.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ProtocolError) as caught:
        for _ in range(2000):
            reader.feed(b"X-Filler: " + b"a" * 60 + b"\r\n")
    assert caught.value.status == 502


def test_a_second_response_in_the_same_read_is_dropped_and_the_node_not_reused() -> None:
    reader, events = response(NGINX_LIKE + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
    assert client_bytes(events).endswith(b"\r\n\r\nhello") and b"evil" not in client_bytes(events)
    assert reader.complete and not reader.reusable


def test_a_head_and_a_long_body_in_one_read_pass() -> None:
    body = b"b" * 200_000  # more than the head limit, in the same read as the head
    reader, events = response(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + body)
    assert client_bytes(events).endswith(b"\r\n\r\n" + body) and reader.complete
    chunked = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        len(body), body)
    reader, events = response(chunked)
    assert reader.complete and _dechunk(client_bytes(events).partition(b"\r\n\r\n")[2]) == body
