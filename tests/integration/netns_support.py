"""Network namespaces made by a test: a bridge in its own namespace, N hosts on veths.

Addresses exist only inside these namespaces. ``Topology`` is a context manager and
deletes every namespace it made on exit (deleting a namespace deletes its veth ends),
also when the test fails. Needs root (``skip_unless_root``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

_COUNTER = itertools.count()


def skip_unless_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Host:
    ns: str
    veth: str  # the host's end, inside ns
    peer: str  # the bridge's end, inside the bridge namespace
    address: str
    prefix: list[str] = field(default_factory=list)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *argv, check=check)

    def python(self, code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=timeout)


class Topology:
    """``hosts`` namespaces on one bridge, in 10.77.<n>.0/24 (n unique per topology)."""

    def __init__(self, names: list[str], subnet: str | None = None) -> None:
        n = next(_COUNTER)
        self.tag = f"{os.getpid() % 10000}x{n}"
        self.subnet = subnet or f"10.77.{(os.getpid() + n) % 200 + 20}"
        self.bridge_ns = f"lgbr{self.tag}"
        self.names = names
        self.hosts: dict[str, Host] = {}
        self.made: list[str] = []

    def __enter__(self) -> Topology:
        try:
            sh("ip", "netns", "add", self.bridge_ns)
            self.made.append(self.bridge_ns)
            b = ["ip", "netns", "exec", self.bridge_ns]
            sh(*b, "ip", "link", "add", "br0", "type", "bridge")
            sh(*b, "ip", "link", "set", "br0", "up")
            sh(*b, "ip", "link", "set", "lo", "up")
            for i, name in enumerate(self.names, start=1):
                ns = f"lg{name}{self.tag}"
                sh("ip", "netns", "add", ns)
                self.made.append(ns)
                veth, peer = f"v{i}h{self.tag}"[:15], f"v{i}b{self.tag}"[:15]
                sh("ip", "link", "add", veth, "netns", ns, "type", "veth", "peer", "name", peer,
                   "netns", self.bridge_ns)
                sh(*b, "ip", "link", "set", peer, "master", "br0")
                sh(*b, "ip", "link", "set", peer, "up")
                address = f"{self.subnet}.{i}"
                h = Host(ns, veth, peer, address, ["ip", "netns", "exec", ns])
                h.run("ip", "link", "set", "lo", "up")
                h.run("ip", "addr", "add", f"{address}/24", "dev", veth)
                h.run("ip", "link", "set", veth, "up")
                self.hosts[name] = h
        except BaseException:
            self.close()
            raise
        return self

    def ip(self, last: int) -> str:
        return f"{self.subnet}.{last}"

    def bridge(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.bridge_ns, *argv)

    def close(self) -> None:
        for ns in reversed(self.made):
            # Processes still inside keep a namespace's network alive; tests stop theirs first.
            sh("ip", "netns", "del", ns, check=False)
        self.made.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()
