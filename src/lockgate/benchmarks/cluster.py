"""Cluster: configuration replication time between members in network namespaces.

Three ``lockgate runtime serve`` members, each in its own network namespace,
and a client in a fourth, all on one bridge (in a fifth, "hub", namespace) with
addresses from 10.88.0.0/24 that exist only inside these namespaces; all of
them are deleted at the end, also on failure. Members 2 and 3 join member 1
with ``lockgate runtime join``. One round: the client PUTs a new pool on member 1
and polls the other two every 5 ms until both answer it; ``replication_ms`` is
the median over the rounds (after one warm-up round) of the time to the slower
of the two, ``replication_ms_max`` the worst round. Needs root and
``ip``.

Also the helpers the network-namespace tests use (:class:`Topology`,
:class:`NsMember`) and, run inside the client namespace, the probe:
``python -m lockgate.benchmarks.cluster probe|get|put ...``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate import proc
from lockgate.benchmarks.servers import Child, lockgate_argv, start_long_lived

SUBNET = "10.88.0"
CONFIG = "/api/tm/1.0/config/active"
USER = "admin"
ROUNDS = 10
POLL = 0.005


# ---- topology -------------------------------------------------------------------------------
@dataclass
class Topology:
    """Namespaces ``<tag>-hub`` (a bridge), ``<tag>-1`` ... ``<tag>-N`` (members) and
    ``<tag>-c`` (client), each member/client joined to the bridge by a veth pair."""

    members: int
    tag: str = field(default_factory=lambda: f"lgc{os.getpid() % 10000}{secrets.token_hex(2)}")
    created: list[str] = field(default_factory=list)

    def ns(self, index: int) -> str:
        return f"{self.tag}-{index}"

    @property
    def client(self) -> str:
        return f"{self.tag}-c"

    @property
    def hub(self) -> str:
        return f"{self.tag}-hub"

    def address(self, index: int) -> str:
        return f"{SUBNET}.{index}"

    @property
    def client_address(self) -> str:
        return f"{SUBNET}.200"

    def up(self) -> Topology:
        self._add_ns(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for index in range(1, self.members + 1):
            self._attach(self.ns(index), self.address(index), f"m{index}")
        self._attach(self.client, self.client_address, "cl")
        return self

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _attach(self, ns: str, address: str, short: str) -> None:
        self._add_ns(ns)
        # The pair is made in the hub (so no name can clash with the host's links),
        # then one end moves into the member's namespace.
        _ip("-n", self.hub, "link", "add", f"v{short}", "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        _ip("-n", self.hub, "link", "set", f"v{short}", "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")

    def link(self, index: int, up: bool) -> None:
        """Cut or restore member ``index``'s cable (its veth end in the hub)."""
        _ip("-n", self.hub, "link", "set", f"vm{index}", "up" if up else "down")

    def down(self) -> None:
        for name in reversed(self.created):  # deleting a namespace deletes its links
            proc.run(["ip", "netns", "delete", name], check=False, quiet=True, timeout=30)
        self.created.clear()


def _ip(*args: str) -> None:
    proc.run(["ip", *args], capture=True, timeout=30, quiet=True)


@contextlib.contextmanager
def topology(members: int) -> Iterator[Topology]:
    topo = Topology(members)
    try:
        yield topo.up()
    finally:
        topo.down()


# ---- members ---------------------------------------------------------------------------------
@dataclass
class NsMember:
    """``lockgate runtime serve`` in a namespace, on the default ports 9070/9090/9080."""

    topo: Topology
    index: int
    root: Path
    password: str
    child: Child | None = None
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return f"tm{self.index}"

    @property
    def address(self) -> str:
        return self.topo.address(self.index)

    @property
    def state_dir(self) -> Path:
        return self.root / "var" / "lib" / "lockgate"

    def prepare(self) -> NsMember:
        from lockgate.firstboot.apply.admin import set_admin_password

        set_admin_password(self.root, USER, self.password)
        return self

    def start(self, timeout: float = 60.0) -> NsMember:
        argv = ["ip", "netns", "exec", self.topo.ns(self.index), *lockgate_argv(), "runtime",
                "serve", "--state-dir", str(self.state_dir), "--workers", "1", "--grace", "1",
                "--management-host", self.address, "--member-name", self.name]
        self.child = start_long_lived(self.name, argv)
        self.child.wait_for_line("lockgate-runtime: serving", timeout)
        for line in self.child.output().splitlines():
            if line.startswith("lockgate-runtime: serving"):
                self.fingerprint = line.rsplit("fingerprint=", 1)[1].split()[0]
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(grace=10)
            self.child = None

    def join(self, target: NsMember, fingerprint: str, *extra: str,
             password: str | None = None) -> tuple[int, str, str]:
        secret = self.root / "join.password"
        secret.write_text((password if password is not None else self.password) + "\n")
        secret.chmod(0o600)
        result = proc.run(["ip", "netns", "exec", self.topo.ns(self.index), *lockgate_argv(),
                           "runtime", "join", target.address, "--fingerprint", fingerprint,
                           "--password-file", str(secret), "--name", self.name,
                           "--state-dir", str(self.state_dir), *extra],
                          check=False, capture=True, timeout=90)
        return (result.returncode, result.stdout.decode(errors="replace"),
                result.stderr.decode(errors="replace"))


def client_call(topo: Topology, password: str, *args: str, timeout: float = 120) -> Any:
    """Run the probe in the client namespace; its one JSON line, parsed."""
    secret = Path(tempfile.mkstemp(prefix="lockgate-bench-pw-")[1])
    try:
        secret.write_text(password)
        result = proc.run(["ip", "netns", "exec", topo.client, sys.executable, "-m",
                           "lockgate.benchmarks.cluster", *args, "--password-file", str(secret)],
                          capture=True, timeout=timeout, quiet=True)
    finally:
        secret.unlink(missing_ok=True)
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


# ---- the probe (inside the client namespace) -----------------------------------------------
def _request(address: str, method: str, path: str, password: str, document: Any = None,
             deadline: float = 10.0) -> tuple[int, Any]:
    from lockgate.http import read_url, unverified_context

    headers = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()}
    data = None
    if document is not None:
        data = json.dumps(document)
        headers["Content-Type"] = "application/json"
    reply = read_url(f"https://{address}:9070{path}", method=method, headers=headers, data=data,
                     ssl_context=unverified_context(), timeout=5.0, deadline=deadline,
                     retry_on=(OSError,))
    return reply.status, json.loads(reply.body) if reply.body else None


def pool_document(node: str) -> dict[str, Any]:
    return {"properties": {"basic": {"nodes_table": [{"node": node}]}}}


def probe(source: str, targets: Sequence[str], rounds: int, password: str,
          timeout: float = 10.0) -> list[float]:
    """Per round: PUT a new pool on ``source``, then the ms until every target has it."""
    times = []
    tag = secrets.token_hex(3)
    for i in range(rounds):
        name, node = f"bench-{tag}-{i}", f"192.0.2.{i % 250 + 1}:80"
        status, _ = _request(source, "PUT", f"{CONFIG}/pools/{name}", password,
                             pool_document(node))
        if status not in (200, 201):
            raise RuntimeError(f"PUT on {source}: HTTP {status}")
        start = time.monotonic()
        waiting = set(targets)
        while waiting:
            for target in sorted(waiting):
                got, _ = _request(target, "GET", f"{CONFIG}/pools/{name}", password)
                if got == 200:
                    waiting.discard(target)
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"pool {name} not on {', '.join(sorted(waiting))} "
                                   f"after {timeout:g} s")
            if waiting:
                time.sleep(POLL)
        times.append((time.monotonic() - start) * 1000)
    return times


def _probe_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="lockgate.benchmarks.cluster")
    parser.add_argument("command", choices=("probe", "get", "put", "cluster"))
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--source")
    parser.add_argument("--targets", default="")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--address")
    parser.add_argument("--pool")
    parser.add_argument("--node")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    password = Path(args.password_file).read_text().strip()
    if args.command == "probe":
        out: Any = {"ms": probe(args.source, [t for t in args.targets.split(",") if t],
                                args.rounds, password, args.timeout)}
    elif args.command == "get":
        status, doc = _request(args.address, "GET", f"{CONFIG}/pools/{args.pool}", password)
        out = {"status": status, "nodes": [r["node"] for r in doc["properties"]["basic"][
            "nodes_table"]] if status == 200 else None}
    elif args.command == "put":
        status, _ = _request(args.address, "PUT", f"{CONFIG}/pools/{args.pool}", password,
                             pool_document(args.node))
        out = {"status": status}
    else:
        status, doc = _request(args.address, "GET", "/api/tm/1.0/cluster", password)
        out = {"status": status, "cluster": doc}
    print(json.dumps(out), flush=True)


# ---- the bench ---------------------------------------------------------------------------------
@contextlib.contextmanager
def cluster_of_three(workdir: Path, password: str) -> Iterator[tuple[Topology, list[NsMember]]]:
    with topology(3) as topo:
        members = [NsMember(topo, i, workdir / f"tm{i}", password).prepare() for i in (1, 2, 3)]
        try:
            for member in members:
                member.start()
            yield topo, members
        finally:
            for member in members:
                member.stop()


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if proc.which("ip") is None:
        return "needs ip (iproute2)"
    return None


def run_cluster(rounds: int = ROUNDS) -> dict[str, Any]:
    """``{"replication_ms": median, "replication_ms_max": ..., "replication_rounds": n}``."""
    from lockgate.benchmarks.report import rounded, say

    why = unavailable()
    if why is not None:
        say(f"cluster: skipped: {why}")
        return {"replication_ms": None, "replication_skipped": why}
    password = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-cluster-") as tmp, \
            cluster_of_three(Path(tmp), password) as (topo, members):
        first = members[0]
        for member in members[1:]:
            code, _, err = member.join(first, first.fingerprint)
            if code != 0:
                raise RuntimeError(f"{member.name} could not join: {err.strip()}")
        say(f"cluster: three members joined; {rounds} replication rounds after one warm-up")
        # The first round also waits for links that are still being set up after the
        # joins (a new member is refused until the others have heard of it): not counted.
        times = client_call(topo, password, "probe", "--source", first.address, "--targets",
                            f"{members[1].address},{members[2].address}",
                            "--rounds", str(rounds + 1))["ms"][1:]
    return {"replication_ms": rounded(statistics.median(times), 1),
            "replication_ms_max": rounded(max(times), 1), "replication_rounds": len(times)}


if __name__ == "__main__":
    _probe_main(sys.argv[1:])
