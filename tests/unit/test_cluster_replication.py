"""Replication pieces in one process on loopback: the store's ordering of replicated
versions, member authentication on the control port, convergence after a conflict."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from lockgate.runtime.cluster.replicate import PROTOCOL, Replicator, mac
from lockgate.runtime.cluster.state import ClusterState, Member, save_cluster
from lockgate.runtime.config.store import ConfigStore, tree_digest
from lockgate.runtime.tls import ensure_certificate

SECRET = bytes(range(32))


def pool(node: str) -> dict[str, Any]:
    return {"properties": {"basic": {"nodes_table": [{"node": node}]}}}


def test_install_takes_only_newer_and_breaks_ties_by_digest(tmp_path: Path) -> None:
    source, store = ConfigStore(tmp_path / "a"), ConfigStore(tmp_path / "b")
    source.put("pools", "p", pool("10.0.0.1:80"))
    version, tree = source.snapshot()
    assert store.install(version, tree) and store.snapshot() == (version, tree)
    assert not store.install(version, tree)  # the same again: nothing to do
    other = ConfigStore(tmp_path / "c")
    other.put("pools", "p", pool("10.0.0.2:80"))
    _, rival = other.snapshot()  # same version number, different content
    bigger, smaller = sorted([tree, rival], key=tree_digest, reverse=True)
    assert store.install(version, bigger) == (tree_digest(bigger) != tree_digest(tree))
    assert not store.install(version, smaller)
    assert store.snapshot()[1] == bigger
    assert not store.install(version - 1, rival)  # older
    assert store.install(version - 1, rival, force=True)  # a joiner adopts the cluster's
    assert store.version == version - 1


async def _pair(tmp_path: Path) -> tuple[Replicator, Replicator]:
    reps = []
    certs = [ensure_certificate(tmp_path / n) for n in ("a", "b")]
    members = tuple(Member(n, "127.0.0.1", 0, 0, c.fingerprint) for n, c in zip("ab", certs, strict=True))
    for n, cert in zip("ab", certs, strict=True):
        rep = Replicator(tmp_path / n, cert.server_context(), poll=0.02)
        await rep.start("127.0.0.1", 0)
        reps.append(rep)
    members = tuple(Member(m.name, m.address, 0, r.port, m.fingerprint)
                    for m, r in zip(members, reps, strict=True))
    for n in "ab":
        save_cluster(tmp_path / n, ClusterState(n, SECRET, members, 1))
    return reps[0], reps[1]


async def _hello(port: int, name: str, secret: bytes) -> dict[str, Any]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context), 10)
    try:
        challenge = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert challenge["protocol"] == PROTOCOL
        writer.write(json.dumps({"type": "hello", "name": name,
                                 "mac": mac(secret, challenge["nonce"], name)}).encode() + b"\n")
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), 5))
        return answer
    finally:
        writer.close()


async def _until(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


def test_only_members_with_the_secret_get_in_and_conflicts_converge(tmp_path: Path) -> None:
    sa, sb = ConfigStore(tmp_path / "a"), ConfigStore(tmp_path / "b")
    # version 1 made on both while apart: a conflict, which one side must win everywhere
    sa.put("pools", "p", pool("10.0.0.1:80"))
    sb.put("pools", "p", pool("10.0.0.2:80"))
    winner = max(sa.snapshot()[1], sb.snapshot()[1], key=tree_digest)

    async def scenario() -> None:
        a, b = await _pair(tmp_path)
        try:
            assert (await _hello(a.port, "b", b"x" * 32))["type"] == "denied"  # wrong secret
            assert (await _hello(a.port, "mallory", SECRET))["type"] == "denied"  # no member
            assert (await _hello(a.port, "b", SECRET))["type"] == "welcome"
            await _until(lambda: sa.snapshot() == sb.snapshot() == (1, winner))
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_removed_member_is_cut_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = await _pair(tmp_path)
        try:
            sa, sb = ConfigStore(tmp_path / "a"), ConfigStore(tmp_path / "b")
            await asyncio.to_thread(sa.put, "pools", "p1", pool("10.0.0.1:80"))
            await _until(lambda: sb.list("pools") == ["p1"])
            assert a.cluster is not None
            save_cluster(tmp_path / "a", a.cluster.without_member("b"))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(sa.put, "pools", "p2", pool("10.0.0.2:80"))
            await asyncio.sleep(1.0)
            assert sb.list("pools") == ["p1"]
            assert (await _hello(a.port, "b", SECRET))["type"] == "denied"
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("bad", ["zz", "sha256:12"])
def test_bad_pins_are_usage_errors(bad: str) -> None:
    from lockgate.runtime.cluster.joining import parse_pin

    with pytest.raises(ValueError):
        parse_pin(bad)
