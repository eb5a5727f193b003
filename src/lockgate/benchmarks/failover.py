"""Failover: how long a traffic IP is unreachable when its member dies, and whether a
loaded cluster ever moves an IP nobody asked to move.

Three ``lockgate runtime serve`` members in network namespaces on one bridge and a
client in a fourth (:class:`lockgate.benchmarks.cluster.Topology`; addresses exist
only inside those namespaces, deleted at the end also on failure), ``cluster.json``
written directly (no join needed), DEFAULT fault-tolerance settings, three traffic
IPs (one per member), a virtual server on port 80 of each member in front of a small
backend that answers with the member's name.

* ``failover_kill_ms``: the client starts a request every 10 ms (each on its own
  connection); the holder of one IP is SIGKILLed; time from the kill to the end of
  the first answer from another member. Median over the rounds (the member is
  started again between rounds and the cluster left to settle).
* ``failover_linkdown_ms``: the same, cutting the holder's cable (its veth end on
  the bridge) instead; bounded below by ``monitor_timeout`` (nothing is said).
* ``false_takeovers``: ``wrk`` loads all three IPs for ``soak_s`` (600 s in the full
  bench) and every "traffic IP ... raised here" logged meanwhile is counted: with
  nobody killed, each one is a false takeover.

* ``failover_vip_left_after_kill``: whether a killed member still had the IP up (it
  must not: its guard drops it).
* ``keepalived_failover_kill_ms`` (defaults) and ``keepalived_failover_kill_ms_fast``
  (VRRPv3, 0.1 s adverts), ``keepalived_vip_left_after_kill``: keepalived in the same
  namespaces in the same run, after our members stopped
  (:mod:`lockgate.benchmarks.keepalived`); null with the reason when it is not installed.
Needs root, ``ip``, (for the soak) ``wrk`` and (for the reference) ``keepalived``.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate import proc
from lockgate.benchmarks.cluster import Topology
from lockgate.benchmarks.keepalived import run_keepalived
from lockgate.benchmarks.report import rounded, say, table
from lockgate.benchmarks.servers import Child, lockgate_argv, start_long_lived
from lockgate.runtime.cluster.state import ClusterState, Member, save_cluster

ROUNDS = 5
SOAK_S = 600.0
VIPS = (100, 101, 102)
SECRET_BYTES = 32

# What answers on a member: its own name, on HOST:PORT (argv), so a client sees who
# holds a traffic IP. The failover bench's members proxy to it; keepalived's serve it.
BACKEND = r"""
import http.server, sys
name, host, port = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(name)))
        self.end_headers(); self.wfile.write(name)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer((host, port), H)
print("ready", flush=True)
s.serve_forever()
"""


def start_name_server(ns: str, name: str, host: str, port: int) -> Child:
    """:data:`BACKEND` in network namespace ``ns``, answering ``name``; ready when it returns."""
    child = start_long_lived(f"{name}-backend", [
        "ip", "netns", "exec", ns, sys.executable, "-c", BACKEND, name, host, str(port)])
    child.wait_for_line("ready", 30)
    return child


def ns_addresses(ns: str) -> set[str]:
    """The addresses on ``eth0`` in network namespace ``ns`` (empty when it is gone)."""
    result = proc.run(["ip", "-n", ns, "-j", "addr", "show", "dev", "eth0"],
                      check=False, capture=True, quiet=True, timeout=30)
    if result.returncode != 0:
        return set()
    return {i["local"] for d in json.loads(result.stdout) for i in d["addr_info"]}

# A request every 10 ms, each on its own connection with 2 s to answer; prints
# "<monotonic start> <monotonic end> <body>" per answer until stdin closes.
POLLER = r"""
import asyncio, sys, time
ip = sys.argv[1]
async def one():
    start = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(ip, 80), 2)
        w.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(r.read(), 2)
        w.close()
        body = data.split(b"\r\n\r\n", 1)[1].decode()
        if data.startswith(b"HTTP/1.1 200"):
            print(f"{start:.6f} {time.monotonic():.6f} {body}", flush=True)
    except (OSError, asyncio.TimeoutError, IndexError):
        pass
async def main():
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
    tasks = set()
    while not stop.done():
        t = asyncio.ensure_future(one()); tasks.add(t); t.add_done_callback(tasks.discard)
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
asyncio.run(main())
"""


def config(vips: list[str], machines: list[str], passive: list[str] | None = None,
           autofailback: bool = False, **settings: Any) -> dict[str, Any]:
    return {
        "virtual_servers": {"web": {"properties": {"basic": {
            "protocol": "http", "port": 80, "pool": "local"}}}},
        "pools": {"local": {"properties": {"basic": {
            "nodes_table": [{"node": "127.0.0.1:8081"}]}}}},
        "traffic_ip_groups": {"web": {"properties": {"basic": {
            "ipaddresses": vips, "machines": machines, "passive_machines": passive or []}}}},
        "settings": {"workers": 1, "autofailback": autofailback, **settings},
    }


@dataclass
class FtMember:
    topo: Topology
    index: int
    workdir: Path
    child: Child | None = None
    backend: Child | None = None
    raised: list[float] = field(default_factory=list)  # monotonic times of "raised here"

    @property
    def name(self) -> str:
        return f"m{self.index}"

    @property
    def ns(self) -> str:
        return self.topo.ns(self.index)

    @property
    def state_dir(self) -> Path:
        return self.workdir / self.name

    def launch(self) -> None:
        argv = ["ip", "netns", "exec", self.ns, *lockgate_argv(), "runtime", "serve",
                "--config", str(self.workdir / f"{self.name}.json"), "--state-dir",
                str(self.state_dir), "--workers", "1", "--grace", "0.5", "--no-management"]
        self.child = start_long_lived(self.name, argv, {"LOCKGATE_IP_MOVER": "local"},
                                      on_line=self._line)

    def wait_serving(self, timeout: float = 60.0) -> None:
        assert self.child is not None
        self.child.wait_for_line("lockgate-runtime: serving", timeout)

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_serving(timeout)

    def _line(self, line: str) -> None:
        if "raised here" in line:
            self.raised.append(time.monotonic())

    def start_backend(self) -> None:
        self.backend = start_name_server(self.ns, self.name, "127.0.0.1", 8081)

    def kill(self) -> None:
        if self.child is not None and self.child.popen.poll() is None:
            os.kill(self.child.pid, signal.SIGKILL)
            self.child.popen.wait(10)

    def stop(self) -> None:
        for child in (self.child, self.backend):
            if child is not None:
                child.stop(grace=10)

    def addresses(self) -> set[str]:
        return ns_addresses(self.ns)


class FtCluster:
    """``members`` serve processes (the last ``passives`` of them passive) + a client."""

    def __init__(self, workdir: Path, members: int = 3, passives: int = 0,
                 vips: tuple[int, ...] = VIPS, autofailback: bool = False,
                 **settings: Any) -> None:
        self.topo = Topology(members)
        self.workdir = workdir
        self.members = [FtMember(self.topo, i, workdir) for i in range(1, members + 1)]
        self.vips = [self.topo.address(v) for v in vips]
        names = [m.name for m in self.members]
        self.active, self.passive = names[:members - passives], names[members - passives:]
        self.doc = config(self.vips, self.active, self.passive, autofailback, **settings)

    def __enter__(self) -> FtCluster:
        try:
            self.topo.up()
            secret = os.urandom(SECRET_BYTES)
            everyone = tuple(Member(m.name, self.topo.address(m.index)) for m in self.members)
            for m in self.members:
                m.state_dir.mkdir(parents=True)
                save_cluster(m.state_dir, ClusterState(m.name, secret, everyone, 1))
                (self.workdir / f"{m.name}.json").write_text(json.dumps(self.doc))
                m.start_backend()
            for m in self.members:  # all at once: a member alone for a monitor_timeout
                m.launch()           # takes every IP (and keeps it, autofailback off)
            for m in self.members:
                m.wait_serving()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for m in self.members:
            m.stop()
        self.topo.down()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def member(self, name: str) -> FtMember:
        return next(m for m in self.members if m.name == name)

    def holders(self) -> dict[str, list[str]]:
        held = {m.name: m.addresses() for m in self.members}
        return {ip: [n for n, a in held.items() if ip in a] for ip in self.vips}

    def wait_assigned(self, timeout: float = 30.0, want: dict[str, str] | None = None
                      ) -> dict[str, str]:
        """Each traffic IP up on exactly one member (on ``want``'s, when given)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.holders()
            if all(len(h) == 1 for h in found.values()):
                now = {ip: h[0] for ip, h in found.items()}
                if want is None or all(now[ip] == m for ip, m in want.items()):
                    return now
            if time.monotonic() > deadline:
                tails = " || ".join(f"{m.name}: {m.child.tail() if m.child else '-'}"
                                    for m in self.members)
                raise AssertionError(f"traffic IPs not settled: {found}; {tails}")
            time.sleep(0.05)

    def poller(self, ip: str) -> Poller:
        return Poller(self.topo.client, ip)


class Poller:
    """The client requesting ``ip`` every 10 ms from its namespace."""

    def __init__(self, client_ns: str, ip: str) -> None:
        import subprocess
        import threading

        # Long-lived, with a stdin we close to stop it: Popen like servers.start_long_lived.
        self.proc = subprocess.Popen(["ip", "netns", "exec", client_ns, sys.executable, "-c",
                                      POLLER, ip], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.answers: list[tuple[float, float, str]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            start, end, body = line.split()
            self.answers.append((float(start), float(end), body))

    def wait_answer(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers:
            if time.monotonic() > deadline:
                raise AssertionError("the client got no answer at all")
            time.sleep(0.01)

    def first_from(self, members: set[str], after: float, timeout: float = 15.0) -> float:
        """Seconds from ``after`` to the end of the first answer by one of ``members``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = [end for _, end, body in list(self.answers) if body in members and end >= after]
            if ends:
                return min(ends) - after
            time.sleep(0.01)
        raise AssertionError(f"no answer from {sorted(members)} within {timeout:g} s")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(5)

    def __enter__(self) -> Poller:
        self.wait_answer()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure_kill(cluster: FtCluster, vip: str, left: list[bool] | None = None) -> float:
    """SIGKILL the holder of ``vip``: seconds to the first answer from another member.
    Whether the IP was still up on the killed member then is appended to ``left``.
    The killed member is started again and the IPs settle before it returns."""
    holder = cluster.wait_assigned()[vip]
    victim = cluster.member(holder)
    with cluster.poller(vip) as poller:
        killed = time.monotonic()
        victim.kill()
        took = poller.first_from({m.name for m in cluster.members} - {holder}, killed)
    if left is not None:
        left.append(vip in victim.addresses())
    victim.start()
    cluster.wait_assigned()
    return took


def measure_linkdown(cluster: FtCluster, vip: str) -> float:
    holder = cluster.wait_assigned()[vip]
    index = cluster.member(holder).index
    with cluster.poller(vip) as poller:
        cut = time.monotonic()
        cluster.topo.link(index, up=False)
        try:
            took = poller.first_from({m.name for m in cluster.members} - {holder}, cut)
        finally:
            cluster.topo.link(index, up=True)
    cluster.wait_assigned()
    return took


def soak(cluster: FtCluster, seconds: float) -> int:
    """``wrk`` on every traffic IP for ``seconds``; IPs raised meanwhile (nobody died)."""
    cluster.wait_assigned()
    time.sleep(2.0)  # any startup moves are over
    before = sum(len(m.raised) for m in cluster.members)
    loads = [start_long_lived(f"wrk-{ip}", ["ip", "netns", "exec", cluster.topo.client, "wrk",
                                            "-t1", "-c16", f"-d{int(seconds)}s", f"http://{ip}/"])
             for ip in cluster.vips]
    try:
        for load in loads:
            load.wait_exit(seconds + 60)
    finally:
        for load in loads:
            load.stop(grace=2)
    cluster.wait_assigned()
    return sum(len(m.raised) for m in cluster.members) - before


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if proc.which("ip") is None:
        return "needs ip (iproute2)"
    return None


def run_failover(rounds: int = ROUNDS, soak_s: float = SOAK_S) -> dict[str, Any]:
    why = unavailable()
    if why:
        say(f"failover: skipped ({why})")
        return {"failover_kill_ms": None, "failover_linkdown_ms": None,
                "false_takeovers": None, "failover_skipped": why}
    kills: list[float] = []
    cuts: list[float] = []
    left: list[bool] = []
    with (tempfile.TemporaryDirectory(prefix="lockgate-failover-") as tmp,
          FtCluster(Path(tmp)) as cluster):
        cluster.wait_assigned()
        for r in range(rounds):
            vip = cluster.vips[r % len(cluster.vips)]
            kills.append(measure_kill(cluster, vip, left))
            say(f"failover: SIGKILL round {r + 1}: {kills[-1] * 1000:.0f} ms")
        for r in range(rounds):
            vip = cluster.vips[r % len(cluster.vips)]
            cuts.append(measure_linkdown(cluster, vip))
            say(f"failover: link-down round {r + 1}: {cuts[-1] * 1000:.0f} ms")
        false = None
        if soak_s > 0 and proc.which("wrk") is not None:
            say(f"failover: {soak_s:.0f} s of wrk load on every traffic IP")
            false = soak(cluster, soak_s)
        # The reference, in the same namespaces, once ours are gone.
        for m in cluster.members:
            m.stop()
        say("failover: keepalived in the same namespaces (defaults, then 0.1 s adverts)")
        reference = run_keepalived(cluster.topo, cluster.topo.client, cluster.vips[0],
                                   Path(tmp), rounds)
        say(f"failover: keepalived {reference}")
    return {
        "failover_kill_ms": rounded(statistics.median(kills) * 1000, 1),
        "failover_kill_ms_max": rounded(max(kills) * 1000, 1),
        "failover_linkdown_ms": rounded(statistics.median(cuts) * 1000, 1),
        "false_takeovers": false,
        "false_takeovers_soak_s": soak_s if false is not None else None,
        "failover_vip_left_after_kill": any(left),
        **reference,
    }


def tables(data: dict[str, Any]) -> list[str]:
    rows = [[key, str(data.get(key))] for key in (
        "failover_kill_ms", "failover_kill_ms_max", "failover_linkdown_ms", "false_takeovers",
        "false_takeovers_soak_s", "failover_vip_left_after_kill", "keepalived_failover_kill_ms",
        "keepalived_failover_kill_ms_fast", "keepalived_vip_left_after_kill",
        "keepalived_note")]
    return [table(["measure", "value"], rows, "Traffic-IP failover (defaults, 3 members)")]


if __name__ == "__main__":  # python -m lockgate.benchmarks.failover [rounds] [soak_s]
    args = sys.argv[1:]
    result = run_failover(int(args[0]) if args else ROUNDS, float(args[1]) if len(args) > 1
                          else SOAK_S)
    for block in tables(result):
        print(block)
    print(json.dumps(result))
