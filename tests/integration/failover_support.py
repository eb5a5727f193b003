"""Three (or more) ``lockgate runtime serve`` members in network namespaces, a client in
another, traffic IPs on the bridge's subnet; and a client that polls a traffic IP every
10 ms. Used by tests/integration/test_cluster_failover.py and the failover bench."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns_support import Host, Topology

from lockgate.runtime.cluster.state import ClusterState, Member, save_cluster

BACKEND = r"""
import http.server, sys
name = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(name)))
        self.end_headers(); self.wfile.write(name)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 8081), H)
print("ready", flush=True)
s.serve_forever()
"""

# Starts a request every 10 ms (each its own connection, 2 s to answer), prints
# "<monotonic start> <monotonic end> <body>" for every answer, until stdin closes.
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

SECRET = bytes(range(32))


def config(vips: list[str], machines: list[str], passive: list[str], autofailback: bool,
           interval: int | None = None, timeout: int | None = None) -> dict[str, Any]:
    settings: dict[str, Any] = {"workers": 1, "autofailback": autofailback}
    if interval is not None:
        settings["monitor_interval"] = interval
    if timeout is not None:
        settings["monitor_timeout"] = timeout
    return {
        "virtual_servers": {"web": {"properties": {"basic": {
            "protocol": "http", "port": 80, "pool": "local"}}}},
        "pools": {"local": {"properties": {"basic": {"nodes_table": [{"node": "127.0.0.1:8081"}]}}}},
        "traffic_ip_groups": {"web": {"properties": {"basic": {
            "ipaddresses": vips, "machines": machines, "passive_machines": passive}}}},
        "settings": settings,
    }


@dataclass
class Node:
    name: str
    host: Host
    state_dir: Path
    config_file: Path
    proc: subprocess.Popen[str] | None = None
    backend: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    def start(self) -> None:
        env = {**os.environ, "LOCKGATE_PURE_PYTHON": "1", "LOCKGATE_IP_MOVER": "local"}
        self.proc = subprocess.Popen(
            [*self.host.prefix, sys.executable, "-m", "lockgate", "runtime", "serve",
             "--config", str(self.config_file), "--state-dir", str(self.state_dir),
             "--workers", "1", "--grace", "0.5", "--no-management"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def wait_serving(self, timeout: float = 60) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()

        def pump(stream: Any) -> None:
            for line in stream:
                self.output.append(line)
                lines.put(line)

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if lines.get(timeout=0.5).startswith("lockgate-runtime: serving"):
                    return
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        raise AssertionError(f"{self.name} did not start:\n{''.join(self.output)}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def addresses(self) -> set[str]:
        out = self.host.run("ip", "-j", "addr", "show", "dev", self.host.veth, check=False)
        if out.returncode != 0:
            return set()
        return {i["local"] for d in json.loads(out.stdout) for i in d["addr_info"]}


class Cluster:
    """Members m1..mN (plus passive ones) and client c on one bridge."""

    def __init__(self, tmp: Path, actives: int = 3, passives: int = 0, vips: int = 3,
                 autofailback: bool = False, interval: int | None = None,
                 timeout: int | None = None) -> None:
        self.names = [f"m{i}" for i in range(1, actives + passives + 1)]
        self.active = self.names[:actives]
        self.passive = self.names[actives:]
        self.topo = Topology([*self.names, "c"])
        self.tmp = tmp
        self.vip_count = vips
        self.autofailback = autofailback
        self.interval, self.timeout = interval, timeout
        self.nodes: dict[str, Node] = {}

    def __enter__(self) -> Cluster:
        self.topo.__enter__()
        try:
            self.vips = [self.topo.ip(100 + i) for i in range(self.vip_count)]
            members = tuple(Member(n, self.topo.hosts[n].address) for n in self.names)
            doc = config(self.vips, self.active, self.passive, self.autofailback,
                         self.interval, self.timeout)
            for n in self.names:
                state_dir = self.tmp / n
                state_dir.mkdir()
                save_cluster(state_dir, ClusterState(n, SECRET, members, 1))
                cfg = self.tmp / f"{n}.json"
                cfg.write_text(json.dumps(doc))
                node = self.nodes[n] = Node(n, self.topo.hosts[n], state_dir, cfg)
                node.backend = subprocess.Popen(
                    [*node.host.prefix, sys.executable, "-c", BACKEND, n],
                    stdout=subprocess.PIPE, text=True)
                assert node.backend.stdout is not None
                assert node.backend.stdout.readline().strip() == "ready"
            for node in self.nodes.values():
                node.start()
            for node in self.nodes.values():
                node.wait_serving()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
            if node.backend is not None:
                node.backend.kill()
                node.backend.wait(5)
        self.topo.close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> Host:
        return self.topo.hosts["c"]

    def holders(self, ip: str) -> list[str]:
        return [n for n, node in self.nodes.items() if ip in node.addresses()]

    def wait_assigned(self, timeout: float = 20,
                      ok: Callable[[dict[str, list[str]]], bool] | None = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            found = {ip: self.holders(ip) for ip in self.vips}
            if all(len(h) == 1 for h in found.values()) and (ok is None or ok(found)):
                return {ip: h[0] for ip, h in found.items()}
            if time.monotonic() > deadline:
                logs = "".join(f"--- {n}\n{''.join(node.output[-30:])}"
                               for n, node in self.nodes.items())
                raise AssertionError(f"traffic IPs not settled: {found}\n{logs}")
            time.sleep(0.05)

    def get(self, ip: str) -> str:
        code = (f"import urllib.request;print(urllib.request.urlopen('http://{ip}/', timeout=3)"
                ".read().decode())")
        return self.client.python(code).stdout.strip()


class Poller:
    """The client polling ``ip`` every 10 ms from its namespace."""

    def __init__(self, client: Host, ip: str) -> None:
        self.proc = subprocess.Popen([*client.prefix, sys.executable, "-c", POLLER, ip],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.answers: list[tuple[float, float, str]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            start, end, body = line.split()
            self.answers.append((float(start), float(end), body))

    def wait_answer(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers:
            assert time.monotonic() < deadline, "the client got no answer at all"
            time.sleep(0.01)

    def first_from(self, members: set[str], after: float, timeout: float = 15) -> float:
        """Seconds from ``after`` to the end of the first answer by one of ``members``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = [end for start, end, body in list(self.answers)
                    if body in members and end >= after]
            if ends:
                return min(ends) - after
            time.sleep(0.01)
        raise AssertionError(f"no answer from {members} within {timeout} s")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(5)
