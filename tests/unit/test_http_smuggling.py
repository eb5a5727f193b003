"""Request smuggling through Upgrade and CONNECT, over real sockets to a logging node.

A client byte after an Upgrade request may reach the node only once the node
said 101; an answer other than 101 ends the exchange as an ordinary one (the
node connection is closed, never pooled, and so is the client's). CONNECT has
no place in a reverse proxy: 501. A 101 nobody asked for is a 502.
"""

from __future__ import annotations

from test_http_smuggling_support import (
    OK,
    LoggingNode,
    ProxyUnderTest,
    Seen,
    read_response,
    read_until_closed,
)

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"


def refuse_upgrades(request: Seen) -> bytes:
    if request.header(b"upgrade"):
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"
    return OK


def accept_upgrades(request: Seen) -> bytes:
    if request.header(b"upgrade"):
        return b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    return OK


def test_bytes_after_a_refused_upgrade_never_reach_the_node() -> None:
    node = LoggingNode(refuse_upgrades)
    with ProxyUnderTest(node.port) as proxy:
        with proxy.connect() as s:
            s.sendall(UPGRADE + HIDDEN)
            answer = read_until_closed(s)
        assert answer.startswith(b"HTTP/1.1 404 ") and answer.endswith(b"nope")
        assert answer.count(b"HTTP/1.1") == 1
        # The next client gets a fresh node connection: the refused one was not pooled.
        with proxy.connect() as s:
            s.sendall(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(s).endswith(b"ok")
        seen = node.wait_requests(2)
        assert [r.target for r in seen] == [b"/ws", b"/next"]
        assert seen[0].conn != seen[1].conn
        assert b"smuggled" not in b"".join(node.raw.values())
        assert proxy.errors == []
        assert b"Connection: close\r\n" in answer  # said, as the connection closes
    node.close()


def test_bytes_after_an_accepted_upgrade_are_tunnelled_after_the_101() -> None:
    node = LoggingNode(accept_upgrades)
    with ProxyUnderTest(node.port) as proxy, proxy.connect() as s:
        s.sendall(UPGRADE + b"first\n")
        data = b""
        while b"echo:first\n" not in data:
            piece = s.recv(4096)
            assert piece, data
            data += piece
        assert data.startswith(b"HTTP/1.1 101 ")
        s.sendall(b"second\n")
        assert s.recv(4096) == b"echo:second\n"
        raw = bytes(node.raw[0])
        assert raw.endswith(b"\r\n\r\nfirst\nsecond\n") and raw.count(b"HTTP/1.1") == 1
    node.close()


def test_connect_is_refused_and_nothing_reaches_the_node() -> None:
    node = LoggingNode()
    with ProxyUnderTest(node.port) as proxy:
        with proxy.connect() as s:
            s.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n" + HIDDEN)
            answer = read_until_closed(s)
        assert answer.startswith(b"HTTP/1.1 501 ") and answer.count(b"HTTP/1.1") == 1
        assert node.raw == {} or not any(node.raw.values())
    node.close()


def test_a_101_nobody_asked_for_is_a_502_and_the_proxy_carries_on() -> None:
    def unasked_101(request: Seen) -> bytes:
        if request.target == b"/plain":
            return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\n\r\n"
        return OK

    node = LoggingNode(unasked_101)
    with ProxyUnderTest(node.port) as proxy:
        with proxy.connect() as s:
            s.sendall(b"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n")
            answer = read_until_closed(s)
            assert answer.startswith(b"HTTP/1.1 502 ")
        with proxy.connect() as s:
            s.sendall(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\nGET /again HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(s).endswith(b"ok")
            assert read_response(s).endswith(b"ok")
        seen = node.wait_requests(3)
        assert [r.target for r in seen] == [b"/plain", b"/after", b"/again"]
        assert seen[1].conn != seen[0].conn  # the node connection that said 101 was closed
        assert proxy.errors == []
    node.close()


def test_an_upgrade_request_with_a_body_is_refused() -> None:
    node = LoggingNode(refuse_upgrades)
    with ProxyUnderTest(node.port) as proxy, proxy.connect() as s:
        s.sendall(b"POST /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: x\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(HIDDEN), HIDDEN))
        assert read_until_closed(s).startswith(b"HTTP/1.1 400 ")
        assert not any(node.raw.values())
    node.close()


def test_an_upgrade_header_without_connection_upgrade_is_an_ordinary_request() -> None:
    node = LoggingNode(accept_upgrades)
    with ProxyUnderTest(node.port) as proxy, proxy.connect() as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"
                  b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        # not an upgrade request: the node sees no Upgrade header and answers plainly
        assert read_response(s).endswith(b"ok")
        assert read_response(s).endswith(b"ok")
        seen = node.wait_requests(2)
        assert [r.target for r in seen] == [b"/a", b"/b"]
        assert not seen[0].header(b"upgrade")
        assert all(r.header(b"x-forwarded-for") == [b"127.0.0.1"] for r in seen)
    node.close()
