"""Differential test of the request parser against h11, a strict reference.

Generated requests -- built from the headers smuggling lives in, then mutated
byte by byte, pipelined, split at random points -- go to both our
RequestReader and h11. Wherever the two disagree on where a request ends or
whether it is valid, ours must have refused (an ERROR event) before any
request h11 would not have produced was complete: a request that differs, or
one h11 rejects, must never be one we forward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import h11
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lockgate.runtime.proxy.http1 import BODY, END, ERROR, HEAD, RequestReader


@dataclass(frozen=True)
class Parsed:
    method: bytes
    target: bytes
    body: bytes


@dataclass
class Outcome:
    requests: list[Parsed]
    heads: list[tuple[bytes, bytes]]  # (method, target) of every head read, finished or not
    refused: bool  # stopped on an error (ours: ERROR event; h11: RemoteProtocolError)
    stopped: bool  # stopped for a reason that is not an error (close, upgrade)


def ours(pieces: list[bytes]) -> Outcome:
    reader = RequestReader(65536)
    for piece in pieces:
        reader.feed(piece)
    requests: list[Parsed] = []
    heads: list[tuple[bytes, bytes]] = []
    head: Any = None
    body = b""
    for kind, payload in reader.events:
        if kind == HEAD:
            head, body = payload, b""
            heads.append((head.method, head.target))
        elif kind == BODY:
            body += payload
        elif kind == END:
            body += payload
            assert head is not None
            requests.append(Parsed(head.method, head.target,
                                   _dechunk(body) if head.chunked else body))
            if not head.keep_alive or head.upgrade is not None:
                return Outcome(requests, heads, False, True)
            head = None
        elif kind == ERROR:
            return Outcome(requests, heads, True, False)
    return Outcome(requests, heads, False, False)


def reference(pieces: list[bytes]) -> Outcome:
    conn = h11.Connection(h11.SERVER)
    requests: list[Parsed] = []
    heads: list[tuple[bytes, bytes]] = []
    current: h11.Request | None = None
    body = b""
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return Outcome(requests, heads, True, False)
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:
                return Outcome(requests, heads, False, True)  # an upgrade or CONNECT
            if isinstance(event, h11.Request):
                current, body = event, b""
                heads.append((bytes(current.method), bytes(current.target)))
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert current is not None
                requests.append(Parsed(bytes(current.method), bytes(current.target), body))
                if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                    return Outcome(requests, heads, False, True)  # an upgrade or CONNECT
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return Outcome(requests, heads, False, True)  # Connection: close, HTTP/1.0
                conn.start_next_cycle()
    return Outcome(requests, heads, False, False)


# llhttp's two request-line leniencies, the only places it accepts what h11 refuses
# (found by this test): a lone CR or LF before a request line, and runs of spaces
# between its parts. Neither can move a request's end, and the node never sees them:
# the proxy sends a request line of its own (RequestHead.encode). Where they occur h11
# is given the line as the proxy sends it, and must then agree on everything else.
_LONE_EOL_BEFORE_LINE: Final = re.compile(rb"(?:(?<=\n)|\A)(?:\r(?!\n)|\n)+(?=[A-Za-z])")
_SPACES_IN_LINE: Final = re.compile(rb"(?m)^([A-Za-z]+) +(\S*) +(HTTP/)")


def _as_the_proxy_sends_it(wire: bytes) -> bytes:
    return _SPACES_IN_LINE.sub(rb"\1 \2 \3", _LONE_EOL_BEFORE_LINE.sub(b"", wire))


def check(wire: bytes, cuts: list[int] | None = None) -> tuple[Outcome, Outcome]:
    """Fails if ours forwards a request h11 would not have produced, in place and content."""
    pieces = _split(wire, cuts or [])
    mine, ref = ours(pieces), reference(pieces)
    if not _agrees(mine, ref):
        ref = reference(_split(_as_the_proxy_sends_it(wire), []))
    why = f"\nwire: {wire!r}\nours: {mine}\nh11:  {ref}"
    # every head we pass on (the proxy streams it at once) is one h11 read the same way
    assert mine.heads == ref.heads[:len(mine.heads)], "forwarded a head h11 reads otherwise" + why
    for i, request in enumerate(mine.requests):
        assert i < len(ref.requests) and ref.requests[i] == request, (
            f"forwarded request {i} that h11 reads otherwise" + why)
    return mine, ref


def _agrees(mine: Outcome, ref: Outcome) -> bool:
    return (mine.heads == ref.heads[:len(mine.heads)]
            and mine.requests == ref.requests[:len(mine.requests)])


def _split(wire: bytes, cuts: list[int]) -> list[bytes]:
    pieces, pos = [], 0
    for cut in cuts:
        if pos >= len(wire):
            break
        pieces.append(wire[pos:pos + cut])
        pos += cut
    if pos < len(wire):
        pieces.append(wire[pos:])
    return [p for p in pieces if p]


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out += rest[:size]
        body = rest[size + 2:]
    return out


# ---- generation ------------------------------------------------------------------------------
# Plain values repeat so that most generated requests are valid and reach the body rules.
METHODS = [b"GET"] * 4 + [b"POST"] * 4 + [b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"PATCH",
                                          b"CONNECT", b"get", b"G ET", b"PROPFIND"]
TARGETS = [b"/"] * 6 + [b"/a?b=c", b"*", b"http://h/x", b"h:443", b"/%00", b"/\x7f", b"/\xff", b"/a#b",
           b""]
VERSIONS = [b"HTTP/1.1"] * 12 + [b"HTTP/1.0"] * 3 + [ b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1",
            b"HTTP/1.1 ", b""]
HEADERS = [
    b"Host: h", b"Host: h", b"Host: h", b"Host: h", b"Host: h", b"Host: h", b"Host:", b"Host: a, b", b"host: h",
    b"Content-Length: 3", b"Content-Length: 0", b"Content-Length: +3", b"Content-Length: 3 ",
    b"Content-Length: 03", b"Content-Length: 3, 3", b"Content-Length: -1",
    b"Content-Length: 99999999999999999999", b"Content-Length:\t3",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: Chunked", b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked, gzip", b"Transfer-Encoding: xchunked", b"Transfer-Encoding:chunked",
    b"Transfer-Encoding : chunked", b"Transfer-Encoding: chunked\x0b", b" Transfer-Encoding: chunked",
    b"Transfer-Encoding:\tchunked", b"Transfer-Encoding: identity",
    b"Connection: close", b"Connection: keep-alive", b"Connection: Upgrade", b"Upgrade: websocket",
    b"Connection: X-Forwarded-For", b"Connection: content-length", b"Expect: 100-continue",
    b"X-A: b", b"X-A: b\x00c", b"X-A: b\rc", b"X-A:  spaced  ", b"X-A: \x80\xff",
    b"X-A: b\r\n c", b"X-A", b": empty", b"X A: b", b"X-A:\tb", b"Trailer: X",
]
ENDINGS = [b"\r\n"] * 30 + [b"\n", b"\r", b"\r\r\n"]


@st.composite
def request_wire(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from(ENDINGS))
    line = b"%s %s %s" % (draw(st.sampled_from(METHODS)), draw(st.sampled_from(TARGETS)),
                          draw(st.sampled_from(VERSIONS)))
    headers = [b"Host: h"] if draw(st.integers(0, 3)) else []
    headers += draw(st.lists(st.sampled_from(HEADERS), max_size=5))
    wire = line + b"\r\n" + b"".join(h + draw(st.sampled_from(ENDINGS)) for h in headers) + eol
    body_kind = draw(st.sampled_from(["none", "none", "raw3", "chunked", "chunked-odd"]))
    if body_kind == "raw3":
        wire += b"abc"
    elif body_kind == "chunked":
        wire += b"3\r\nabc\r\n0\r\n\r\n"
    elif body_kind == "chunked-odd":
        wire += draw(st.sampled_from([
            b"3;ext=1\r\nabc\r\n0\r\n\r\n", b"3\nabc\n0\n\n", b"03\r\nabc\r\n0\r\nX: y\r\n\r\n",
            b"FFFFFFFFFFFFFFFFF3\r\nabc\r\n0\r\n\r\n", b"3 \r\nabc\r\n0\r\n\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n", b"0x3\r\nabc\r\n0\r\n\r\n", b"3\r\nabcd\r\n0\r\n\r\n"]))
    return wire


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    wire = b"".join(draw(st.lists(request_wire(), min_size=1, max_size=3)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        if not wire:
            break
        at = draw(st.integers(0, len(wire) - 1))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from([b"\r", b"\n", b" ", b"\t", b"\x00", b":", b",", b"0", b"a",
                                     b"\x0b", b"\xff", b";"]))
        if op == "insert":
            wire = wire[:at] + byte + wire[at:]
        elif op == "delete":
            wire = wire[:at] + wire[at + 1:]
        else:
            wire = wire[:at] + byte + wire[at + 1:]
    return wire


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.lists(st.integers(1, 40), max_size=8))
@example(b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", [])
@example(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", [])
@example(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", [])
def test_ours_never_forwards_what_h11_reads_otherwise(wire: bytes, cuts: list[int]) -> None:
    check(wire, cuts)


@settings(max_examples=300, deadline=None)
@given(st.lists(request_wire(), min_size=1, max_size=4), st.lists(st.integers(1, 30), max_size=10))
def test_well_formed_pipelines_agree_whole_or_split(parts: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(parts)
    whole_mine, _ = check(wire)
    split_mine, _ = check(wire, cuts)
    assert split_mine.requests == whole_mine.requests  # where reads fall changes nothing
