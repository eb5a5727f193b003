"""The request-smuggling corpus through the real `lockgate runtime serve` (worker process,
compiled core when built), to a node that logs what reaches it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_http_smuggling_corpus import CORPUS, check_case
from test_http_smuggling_support import LoggingNode
from test_runtime_support import free_port, pool_of, runtime, vs


@pytest.mark.timeout(120)
def test_every_corpus_case_is_refused_or_forwarded_as_one_well_framed_request(
        tmp_path: Path) -> None:
    port = free_port()
    node = LoggingNode(lambda request: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                       if request.header(b"upgrade") else
                       b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    try:
        config = {"virtual_servers": {"web": vs(port)},
                  "pools": {"web": pool_of(f"127.0.0.1:{node.port}")}}
        with runtime(tmp_path, config):
            for case in CORPUS:
                check_case(case, port, node)
        allowed = sum(case.node_sees.count(b"/hidden") for case in CORPUS)
        assert [r.target for r in node.requests].count(b"/hidden") == allowed
        # A body refused half way was cut, never completed into something else.
        assert all("without sending complete message body" in e for e in node.errors), node.errors
    finally:
        node.close()
