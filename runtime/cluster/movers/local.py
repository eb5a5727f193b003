"""Raise a traffic IP on the local interface whose subnet holds it, and announce it.

IPv4: ``ip addr add IP/<subnet prefix> dev DEV`` and gratuitous ARP (a request and
a reply with sender = target = IP, to the broadcast address) sent on a raw
``AF_PACKET`` socket, so no arping is needed. IPv6: added ``nodad`` (the address is
ours by the cluster's decision; waiting for DAD would cost a second) and announced
with an unsolicited neighbour advertisement (override flag) to ff02::1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import struct
from dataclasses import dataclass

from lockgate.proc import RunError, run
from lockgate.runtime.cluster.movers import MoverError

log = logging.getLogger("lockgate.runtime.cluster.movers.local")


@dataclass(frozen=True)
class Link:
    device: str
    prefix: int
    mac: bytes
    index: int


def _addresses() -> list[dict[str, object]]:
    out = run(["ip", "-j", "addr", "show"], capture=True, quiet=True).stdout
    return list(json.loads(out or b"[]"))


def find_link(ip: str) -> Link:
    """The interface with a (non traffic-IP) subnet that contains ``ip``."""
    address = ipaddress.ip_address(ip)
    best: tuple[int, Link] | None = None
    for dev in _addresses():
        mac_text = str(dev.get("address") or "00:00:00:00:00:00")
        for info in dev.get("addr_info", []):  # type: ignore[attr-defined]
            net = ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
            if address in net and net.prefixlen < net.max_prefixlen and address != net[0]:
                link = Link(str(dev["ifname"]), net.prefixlen,
                            bytes.fromhex(mac_text.replace(":", "")), int(str(dev["ifindex"])))
                if best is None or net.prefixlen > best[0]:
                    best = (net.prefixlen, link)
    if best is None:
        raise MoverError(f"traffic IP {ip}: no local interface has a subnet containing it; "
                         "add an address in that subnet to one interface")
    return best[1]


def held(ip: str) -> bool:
    out = run(["ip", "-j", "addr", "show", "to", ip], capture=True, quiet=True).stdout
    return any(info.get("local") == ip for dev in json.loads(out or b"[]")
               for info in dev.get("addr_info", []))


class LocalMover:
    name = "local"

    def __init__(self) -> None:
        self.links: dict[str, Link] = {}

    def _link(self, ip: str) -> Link:
        if ip not in self.links:
            self.links[ip] = find_link(ip)
        return self.links[ip]

    def prepare(self, ips: list[str]) -> None:
        for ip in ips:
            try:
                self._link(ip)
            except MoverError as exc:  # said again, as an error, if it ever has to rise here
                log.warning("%s", exc)

    def raise_ip(self, ip: str) -> None:
        link = self._link(ip)
        argv = ["ip", "addr", "replace", f"{ip}/{link.prefix}", "dev", link.device]
        if ":" in ip:
            argv.append("nodad")
        try:
            run(argv, capture=True, quiet=True)
        except RunError as exc:
            raise MoverError(f"cannot raise traffic IP {ip} on {link.device}: {exc}") from None
        self.announce(ip)

    def drop_ip(self, ip: str) -> None:
        if not held(ip):
            return
        link = self._link(ip)
        try:
            run(["ip", "addr", "del", f"{ip}/{link.prefix}", "dev", link.device],
                capture=True, quiet=True)
        except RunError as exc:
            if held(ip):
                raise MoverError(f"cannot drop traffic IP {ip} from {link.device}: {exc}") from None

    def announce(self, ip: str) -> None:
        link = self._link(ip)
        try:
            if ":" in ip:
                send_unsolicited_na(ip, link)
            else:
                send_gratuitous_arp(ip, link)
        except OSError as exc:  # the address is up; peers learn it on their next ARP
            log.warning("traffic IP %s: announcing on %s failed: %s", ip, link.device, exc)


def arp_frames(ip: str, mac: bytes) -> list[bytes]:
    """A gratuitous ARP request and reply (both kinds: some switches heed only one)."""
    addr = socket.inet_aton(ip)
    frames = []
    for op in (1, 2):
        eth = b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac + addr + (
            b"\xff" * 6 if op == 2 else b"\x00" * 6) + addr
        frames.append(eth + arp)
    return frames


def send_gratuitous_arp(ip: str, link: Link) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
        sock.bind((link.device, 0))
        for frame in arp_frames(ip, link.mac):
            sock.send(frame)


def na_message(ip: str, mac: bytes) -> bytes:
    """ICMPv6 neighbour advertisement, override flag, target link-layer address option
    (the kernel fills in the checksum on a raw ICMPv6 socket)."""
    return (struct.pack("!BBHI", 136, 0, 0, 0x20000000) + socket.inet_pton(socket.AF_INET6, ip)
            + struct.pack("!BB", 2, 1) + mac)


def send_unsolicited_na(ip: str, link: Link) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, link.index)
        with contextlib.suppress(OSError):  # source = the traffic IP when it is usable
            sock.bind((ip, 0, 0, link.index))
        sock.sendto(na_message(ip, link.mac), ("ff02::1", 0, 0, link.index))
