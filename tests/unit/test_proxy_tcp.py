"""The TCP relay's write order: queued bytes always go before a half-close or a close.

Relayed bytes wait in ``Context.send``'s queue until the end of the loop turn.
A FIN read in the same turn as the last bytes must not overtake them. The
loop here never runs, so only the relay's own flushes can deliver anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from lockgate.runtime.config.model import normalise_tree, parse_config
from lockgate.runtime.proxy.context import Context, VsRuntime, VsStats
from lockgate.runtime.proxy.tcp_transport import TcpBackend, TcpClient

TREE = {"virtual_servers": {"raw": {"properties": {"basic": {
            "protocol": "tcp", "port": 8080, "pool": "p"}}}},
        "pools": {"p": {"properties": {"basic": {"nodes_table": [{"node": "127.0.0.1:9"}]}}}}}


class Recorder:
    """A transport that writes down what was done to it, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        assert ("eof",) not in self.log, "write after write_eof"
        self.log.append(("write", data))

    def write_eof(self) -> None:
        self.log.append(("eof",))

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closing = True
        self.log.append(("close",))

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.fixture
def relay() -> Iterator[tuple[TcpClient, Recorder, Recorder]]:
    """(client protocol, client's transport, node's transport), already connected."""
    loop = asyncio.new_event_loop()
    try:
        config = parse_config(normalise_tree(TREE), 1)
        client = TcpClient(Context(loop), VsRuntime(config.virtual_servers["raw"], VsStats()))
        to_client, to_node = Recorder(), Recorder()
        client.transport = to_client  # type: ignore[assignment]
        backend = TcpBackend(client)
        backend.transport = to_node  # type: ignore[assignment]
        client.backend = backend
        yield client, to_client, to_node
    finally:
        loop.close()


def test_client_bytes_then_its_half_close_reach_the_node_in_order(relay: Any) -> None:
    client, _, to_node = relay
    client.data_received(b"request")
    assert to_node.log == []  # queued for the end of the loop turn
    client.eof_received()
    assert to_node.log == [("write", b"request"), ("eof",)]


def test_node_bytes_then_its_half_close_reach_the_client_in_order(relay: Any) -> None:
    client, to_client, _ = relay
    client.backend.data_received(b"answer")
    client.backend.eof_received()
    assert to_client.log == [("write", b"answer"), ("eof",)]


def test_node_closing_after_a_half_closed_client_still_delivers_its_last_bytes(relay: Any) -> None:
    client, to_client, to_node = relay
    client.eof_received()
    client.backend.data_received(b"last words")
    client.backend.eof_received()  # both sides done: the relay closes
    assert to_client.log == [("write", b"last words"), ("close",)]
    assert to_node.log == [("eof",), ("close",)]


def test_bulk_data_is_written_at_once_so_flow_control_can_pause_the_sender(relay: Any) -> None:
    """Small messages wait for the end of the loop turn; a queue past 64 KiB goes out now.

    Otherwise one loop turn could read 32 buffers of 256 KiB from a fast node for a
    client that never reads before any write could pause the node's side.
    """
    client, to_client, _ = relay
    client.backend.data_received(b"small")
    assert to_client.log == []
    bulk = b"x" * (64 * 1024)
    client.backend.data_received(bulk)
    assert to_client.log == [("write", b"small"), ("write", bulk)]
