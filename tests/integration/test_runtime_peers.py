"""lockgate between real peers: HAProxy in front of it, HAProxy behind it, nginx at the end.

HAProxy writes its HTTP/1 heads its own way (lower-case names, its own
Connection handling), so these chains exercise the node-side head path against
a server that is not nginx and the client side against a proxy that keeps
connections alive and pipelines nothing. Each chain must answer keep-alive
requests on one connection, a HEAD, and a short wrk run, without an error.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from lockgate.benchmarks import servers
from lockgate.benchmarks.wrk import run_wrk
from lockgate.proc import which

pytestmark = pytest.mark.skipif(
    any(which(tool) is None for tool in ("haproxy", "nginx", "wrk")),
    reason="needs haproxy, nginx and wrk (scripts/apt-packages.txt)")

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade"}


@contextmanager
def chain(tmp_path: Path, order: str) -> Iterator[int]:
    """The front port of nginx <- (lockgate <- haproxy) or (haproxy <- lockgate)."""
    with ExitStack() as stack:
        _, port = stack.enter_context(servers.nginx_backend(tmp_path))
        for proxy in reversed(order.split(",")):
            start = servers.haproxy if proxy == "haproxy" else servers.lockgate_proxy
            _, ports = stack.enter_context(start(tmp_path, 1, port))
            port = ports.http
        yield port


@pytest.mark.parametrize("order", ["haproxy,lockgate", "lockgate,haproxy"])
def test_chain_keeps_alive_and_passes_bodies(tmp_path: Path, order: str) -> None:
    with chain(tmp_path, order) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            sock = conn.sock
            for i in range(200):
                conn.request("HEAD" if i % 50 == 7 else "GET", f"/?n={i}")
                response = conn.getresponse()
                body = response.read()
                assert response.status == 200
                assert body == (b"" if i % 50 == 7 else servers.BODY), (i, body)
                names = [name.lower() for name, _ in response.getheaders()]
                assert names.count("content-length") == 1, response.getheaders()
                assert not HOP_BY_HOP & set(names) - {"connection"}, response.getheaders()
                assert names.count("connection") <= 1, response.getheaders()
            assert conn.sock is sock, "the chain closed a kept-alive connection"
        finally:
            conn.close()


@pytest.mark.parametrize("order", ["haproxy,lockgate", "lockgate,haproxy"])
def test_chain_under_wrk_has_no_errors(tmp_path: Path, order: str) -> None:
    with chain(tmp_path, order) as port:
        run = run_wrk(f"http://127.0.0.1:{port}/", 2, connections=20)
        assert run.result.requests > 500 and run.result.errors == 0, run.output
