"""Signed UDP heartbeats between cluster members (port 9090, each member's ``admin_port``).

A packet is ``JSON body + HMAC-SHA256(cluster secret, DOMAIN + body)`` (32 bytes).
The body names the sender, the membership epoch, a sequence number, the send time,
its kind (``beat`` or ``leaving``), the traffic-IP groups it can serve and the IPs
it holds. A receiver drops, and counts, a packet that

* does not verify (forged, or signed with another cluster's secret: ``forged``),
* comes from a name not in the member list (``unknown``),
* carries a sequence number not above the last one accepted from that sender
  (``replayed``), or a send time more than :data:`MAX_SKEW` away from its own
  clock (a replay to a member that restarted and forgot the last sequence).

Sequence numbers are microseconds since the epoch, kept strictly increasing, so a
restarted member (or its guard sending ``leaving`` for it) is never taken for a
replay of its former self.

:class:`Peers` is the bookkeeping, a pure object driven by ``now`` so the tests
control time: a peer is live from its first good beat until ``monitor_timeout``
passes without one, or at once when it says ``leaving``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("lockgate.runtime.cluster.heartbeat")

DOMAIN = b"lockgate-heartbeat-v1\0"
TAG = 32
MAX_SKEW = 60.0  # seconds; NTP keeps cloud instances well inside this
MAX_PACKET = 8192


@dataclass(frozen=True)
class Beat:
    sender: str
    epoch: int
    seq: int
    ts: float
    kind: str = "beat"  # or "leaving"
    serving: frozenset[str] = frozenset()  # traffic-IP groups it can serve
    holding: frozenset[str] = frozenset()  # traffic IPs raised on it now


def encode(beat: Beat, secret: bytes) -> bytes:
    body = json.dumps({"v": 1, "from": beat.sender, "epoch": beat.epoch, "seq": beat.seq,
                       "ts": beat.ts, "kind": beat.kind, "serving": sorted(beat.serving),
                       "holding": sorted(beat.holding)}, separators=(",", ":")).encode()
    return body + hmac.new(secret, DOMAIN + body, hashlib.sha256).digest()


class BadPacket(Exception):
    pass


def decode(packet: bytes, secret: bytes) -> Beat:
    """The beat in ``packet``; BadPacket when it does not verify or does not parse."""
    if len(packet) <= TAG:
        raise BadPacket("short")
    body, tag = packet[:-TAG], packet[-TAG:]
    if not hmac.compare_digest(tag, hmac.new(secret, DOMAIN + body, hashlib.sha256).digest()):
        raise BadPacket("bad signature")
    try:
        data = json.loads(body)
        return Beat(sender=str(data["from"]), epoch=int(data["epoch"]), seq=int(data["seq"]),
                    ts=float(data["ts"]), kind=str(data["kind"]),
                    serving=frozenset(map(str, data["serving"])),
                    holding=frozenset(map(str, data["holding"])))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadPacket(f"malformed ({exc})") from None


class Sequence:
    """Strictly increasing sequence numbers that also survive a restart (time based)."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last = max(self.last + 1, time.time_ns() // 1000)
        return self.last


@dataclass
class PeerState:
    last_seq: int = 0
    heard: float = -1e18  # monotonic time of the last good beat
    leaving: bool = False
    serving: frozenset[str] = frozenset()
    holding: frozenset[str] = frozenset()
    epoch: int = 0


@dataclass
class Peers:
    """What this member knows about the others, from their beats."""

    me: str
    names: frozenset[str]
    timeout: float  # monitor_timeout, seconds
    state: dict[str, PeerState] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("forged", "unknown", "replayed", "skewed", "self"), 0))

    def set_members(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        for gone in set(self.state) - self.names:
            del self.state[gone]

    def receive(self, packet: bytes, secret: bytes, now: float, wall: float | None = None
                ) -> Beat | None:
        """Account for one packet; the beat when accepted, else None (and a count)."""
        try:
            beat = decode(packet, secret)
        except BadPacket:
            self.dropped["forged"] += 1
            return None
        if beat.sender == self.me:
            self.dropped["self"] += 1
            return None
        if beat.sender not in self.names:
            self.dropped["unknown"] += 1
            return None
        wall = time.time() if wall is None else wall
        if abs(beat.ts - wall) > MAX_SKEW:
            self.dropped["skewed"] += 1
            return None
        peer = self.state.setdefault(beat.sender, PeerState())
        if beat.seq <= peer.last_seq:
            self.dropped["replayed"] += 1
            return None
        peer.last_seq = beat.seq
        peer.epoch = beat.epoch
        peer.leaving = beat.kind == "leaving"
        peer.heard = now
        peer.serving = frozenset() if peer.leaving else beat.serving
        peer.holding = frozenset() if peer.leaving else beat.holding
        return beat

    def live(self, now: float) -> frozenset[str]:
        # list(): the status may be read from another thread (the Admin UI's) while a
        # first beat from a member adds its entry.
        return frozenset(name for name, p in list(self.state.items())
                         if not p.leaving and now - p.heard <= self.timeout)

    def serving(self, now: float) -> dict[str, frozenset[str]]:
        return {name: self.state[name].serving for name in self.live(now)}

    def holders(self, now: float) -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = {}
        for name in self.live(now):
            for ip in self.state[name].holding:
                out.setdefault(ip, set()).add(name)
        return {ip: frozenset(names) for ip, names in out.items()}


class Endpoint(asyncio.DatagramProtocol):
    """The UDP socket: hands every datagram to ``on_packet``."""

    def __init__(self, on_packet: Callable[[bytes, Any], None]) -> None:
        self.on_packet = on_packet
        self.transport: Any = None  # a DatagramTransport (uvloop's is not a subclass)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) <= MAX_PACKET:
            self.on_packet(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("heartbeat socket: %s", exc)  # ICMP unreachable from a dead peer: expected

    def send(self, packet: bytes, targets: Iterable[tuple[str, int]]) -> None:
        if self.transport is None:
            return
        for target in targets:
            try:
                self.transport.sendto(packet, target)
            except OSError as exc:  # no route while a link is down: the next beat retries
                log.debug("heartbeat to %s: %s", target, exc)


async def open_endpoint(host: str, port: int, on_packet: Callable[[bytes, Any], None]
                        ) -> Endpoint:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(lambda: Endpoint(on_packet),
                                                      local_addr=(host or "0.0.0.0", port))
    return protocol


def send_leaving(secret: bytes, sender: str, epoch: int, targets: Iterable[tuple[str, int]]
                 ) -> None:
    """One signed ``leaving`` beat to each target (blocking; the guard's last words)."""
    import socket

    packet = encode(Beat(sender, epoch, Sequence().next(), time.time(), "leaving"), secret)
    for host, port in targets:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(packet, (host, port))
            except OSError as exc:
                log.debug("leaving beat to %s: %s", host, exc)
