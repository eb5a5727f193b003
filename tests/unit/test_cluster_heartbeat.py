"""Heartbeat packets: signed, replays and forgeries dropped, liveness from beats and time,
and real datagrams between two endpoints on loopback."""

from __future__ import annotations

import asyncio
import time

from lockgate.runtime.cluster.heartbeat import (
    Beat,
    Peers,
    Sequence,
    decode,
    encode,
    open_endpoint,
    send_leaving,
)

SECRET = b"s" * 32


def beat(seq: int, sender: str = "tm2", kind: str = "beat", ts: float | None = None) -> Beat:
    return Beat(sender, 3, seq, time.time() if ts is None else ts, kind,
                frozenset({"web"}), frozenset({"10.0.0.1"}))


def peers() -> Peers:
    return Peers("tm1", frozenset({"tm1", "tm2", "tm3"}), timeout=1.5)


def test_round_trip() -> None:
    b = beat(7)
    assert decode(encode(b, SECRET), SECRET) == b


def test_forged_and_foreign_packets_are_dropped() -> None:
    p = peers()
    good = encode(beat(1), SECRET)
    flipped = bytearray(good)
    flipped[10] ^= 1  # body changed, tag kept
    assert p.receive(bytes(flipped), SECRET, now=0.0) is None
    assert p.receive(encode(beat(2), b"x" * 32), SECRET, now=0.0) is None  # other cluster
    assert p.receive(b"short", SECRET, now=0.0) is None
    assert p.dropped["forged"] == 3
    assert p.receive(encode(beat(3, sender="intruder"), SECRET), SECRET, now=0.0) is None
    assert p.dropped["unknown"] == 1
    assert p.receive(encode(beat(4, sender="tm1"), SECRET), SECRET, now=0.0) is None
    assert p.live(0.0) == frozenset()


def test_replayed_and_stale_packets_are_dropped() -> None:
    p = peers()
    first = encode(beat(10), SECRET)
    assert p.receive(first, SECRET, now=0.0) is not None
    assert p.receive(first, SECRET, now=1.0) is None  # same packet again
    assert p.receive(encode(beat(9), SECRET), SECRET, now=1.0) is None  # older sequence
    assert p.dropped["replayed"] == 2
    # An old capture replayed to a member that restarted (forgot sequence numbers).
    fresh = peers()
    old = encode(beat(5, ts=time.time() - 3600), SECRET)
    assert fresh.receive(old, SECRET, now=0.0) is None
    assert fresh.dropped["skewed"] == 1
    # A replay does not keep a dead peer alive.
    assert p.live(2.0) == frozenset()


def test_liveness_timeout_and_leaving() -> None:
    p = peers()
    p.receive(encode(beat(1), SECRET), SECRET, now=10.0)
    p.receive(encode(beat(1, sender="tm3"), SECRET), SECRET, now=10.0)
    assert p.live(11.0) == {"tm2", "tm3"}
    assert p.holders(11.0) == {"10.0.0.1": frozenset({"tm2", "tm3"})}
    assert p.live(11.6) == frozenset()  # monitor_timeout 1.5 s of silence
    p.receive(encode(beat(2), SECRET), SECRET, now=12.0)
    assert p.serving(12.0) == {"tm2": frozenset({"web"})}
    p.receive(encode(beat(3, kind="leaving"), SECRET), SECRET, now=12.1)
    assert p.live(12.1) == frozenset()  # at once, no timeout to wait for
    p.receive(encode(beat(4), SECRET), SECRET, now=13.0)  # back again
    assert p.live(13.0) == {"tm2"}


def test_sequence_is_increasing_across_instances() -> None:
    a = Sequence()
    first = [a.next() for _ in range(100)]
    assert first == sorted(set(first))
    assert Sequence().next() > first[0]  # a restarted sender starts above its old numbers


def test_real_datagrams_between_two_endpoints() -> None:
    async def run() -> Peers:
        p = peers()
        got = asyncio.Event()

        def on_packet(data: bytes, addr: object) -> None:
            if p.receive(data, SECRET, time.monotonic()) is not None:
                got.set()

        receiver = await open_endpoint("127.0.0.1", 0, on_packet)
        assert receiver.transport is not None
        port = receiver.transport.get_extra_info("sockname")[1]
        sender = await open_endpoint("127.0.0.1", 0, lambda d, a: None)
        sender.send(encode(beat(Sequence().next()), SECRET), [("127.0.0.1", port)])
        await asyncio.wait_for(got.wait(), 5)
        assert p.live(time.monotonic()) == {"tm2"}
        got.clear()
        await asyncio.to_thread(send_leaving, SECRET, "tm2", 3, [("127.0.0.1", port)])
        await asyncio.wait_for(got.wait(), 5)
        sender.transport.close()
        receiver.transport.close()
        return p

    p = asyncio.run(run())
    assert p.live(time.monotonic()) == frozenset()
