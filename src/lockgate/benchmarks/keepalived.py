"""keepalived in the failover bench's topology: the reference our failover is compared with.

The same namespaces as :mod:`lockgate.benchmarks.failover` (three members on a bridge, a
client in a fourth), after our members have stopped: one keepalived per member (VRRP
multicast between the namespaces, priorities 150/100/50, all starting as BACKUP,
preemption on as by default), one VIP, and a small HTTP server on port 80 of every member
answering its name, so the client's poll is the same as for ours (a request every 10 ms,
time from the kill to the first answer from another member).

The kill is SIGKILL of every keepalived process of the master at once (its process group:
the parent and its VRRP child). Killing only the parent is not a crash of keepalived: the
VRRP child gets SIGTERM from the kernel (parent-death signal) and stops in order.

Two variants, same run: keepalived's defaults (VRRPv2, ``advert_int 1``) and VRRPv3 with
``advert_int 0.1``. After each kill the dead master's namespace is checked for the VIP:
keepalived leaves it there (ours is dropped by the runtime's guard); it is removed by
hand before keepalived is started again, as an operator would have to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate import proc
from lockgate.benchmarks.servers import Child, start_long_lived

PRIORITIES = (150, 100, 50)
VRID = 51



def conf(name: str, priority: int, vip: str, advert: float) -> str:
    version = 2 if advert >= 1 else 3  # sub-second adverts need VRRPv3
    return f"""global_defs {{
  router_id {name}
  vrrp_version {version}
}}
vrrp_instance VI_{VRID} {{
  state BACKUP
  interface eth0
  virtual_router_id {VRID}
  priority {priority}
  advert_int {advert:g}
  virtual_ipaddress {{
    {vip}/24 dev eth0
  }}
}}
"""


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if proc.which("keepalived") is None:
        return "keepalived not installed"
    return None


@dataclass
class KaNode:
    ns: str
    name: str
    workdir: Path
    child: Child | None = None
    web: Child | None = None
    starts: int = 0

    def start(self, priority: int, vip: str, advert: float) -> None:
        path = self.workdir / f"{self.name}.conf"
        path.write_text(conf(self.name, priority, vip, advert))
        # Fresh pid files for every start: keepalived refuses to start ("daemon is already
        # running") over the ones its SIGKILLed predecessor left behind.
        self.starts += 1
        run = self.workdir / f"{self.name}-{self.starts}"
        run.mkdir(exist_ok=True)
        # -n: in the foreground (our child); -l: log to stdout.
        self.child = start_long_lived(f"keepalived-{self.name}", [
            "ip", "netns", "exec", self.ns, "keepalived", "-n", "-l", "-D", "-P",
            "-f", str(path), "-p", str(run / "keepalived.pid"), "-r", str(run / "vrrp.pid"),
            "-c", str(run / "checkers.pid")])

    def start_web(self) -> None:
        from lockgate.benchmarks.failover import start_name_server  # failover imports us

        self.web = start_name_server(self.ns, self.name, "0.0.0.0", 80)  # the VIP's answer

    def kill(self) -> None:
        """SIGKILL of every keepalived process here at once (its process group)."""
        if self.child is not None and self.child.popen.poll() is None:
            os.killpg(self.child.pid, signal.SIGKILL)
            self.child.popen.wait(10)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(grace=5)
            self.child = None

    def addresses(self) -> set[str]:
        from lockgate.benchmarks.failover import ns_addresses

        return ns_addresses(self.ns)

    def drop(self, vip: str) -> None:
        proc.run(["ip", "-n", self.ns, "addr", "del", f"{vip}/24", "dev", "eth0"],
                 check=False, capture=True, quiet=True, timeout=30)


def wait_master(nodes: list[KaNode], vip: str, want: str, timeout: float = 30.0) -> None:
    """``vip`` up on ``want`` only."""
    deadline = time.monotonic() + timeout
    while True:
        on = [n.name for n in nodes if vip in n.addresses()]
        if on == [want]:
            return
        if time.monotonic() > deadline:
            tails = " || ".join(f"{n.name}: {n.child.tail() if n.child else '-'}" for n in nodes)
            raise RuntimeError(f"keepalived: {vip} on {on}, not on {want} only; {tails}")
        time.sleep(0.05)


def measure(topo: Any, client_ns: str, vip: str, workdir: Path, advert: float, rounds: int
            ) -> dict[str, Any]:
    """``rounds`` SIGKILLs of the master: the failover times and whether the VIP stayed up
    on the dead master each time. ``topo``: the failover bench's Topology."""
    from lockgate.benchmarks.failover import Poller

    nodes = [KaNode(topo.ns(i), f"m{i}", workdir) for i in range(1, len(PRIORITIES) + 1)]
    times: list[float] = []
    left: list[bool] = []
    try:
        for node in nodes:
            node.start_web()
        for node, priority in zip(nodes, PRIORITIES, strict=True):
            node.start(priority, vip, advert)
        master, others = nodes[0], {n.name for n in nodes[1:]}
        for _ in range(rounds):
            wait_master(nodes, vip, master.name)
            with Poller(client_ns, vip) as poller:
                killed = time.monotonic()
                master.kill()
                times.append(poller.first_from(others, killed, timeout=30))
            left.append(vip in master.addresses())
            master.drop(vip)  # by hand: keepalived will not
            master.start(PRIORITIES[0], vip, advert)  # preempts back
    finally:
        for node in nodes:
            node.stop()
            if node.web is not None:
                node.web.stop(grace=2)
            with contextlib.suppress(Exception):
                node.drop(vip)
    return {"ms": [round(t * 1000, 1) for t in times], "vip_left": left}


def run_keepalived(topo: Any, client_ns: str, vip: str, workdir: Path, rounds: int
                   ) -> dict[str, Any]:
    """Both variants; the keys the bench reports next to ``failover_kill_ms``."""
    why = unavailable()
    if why is not None:
        return {"keepalived_failover_kill_ms": None, "keepalived_failover_kill_ms_fast": None,
                "keepalived_note": why}
    slow = measure(topo, client_ns, vip, workdir, 1.0, rounds)
    fast = measure(topo, client_ns, vip, workdir, 0.1, rounds)
    version = proc.run(["keepalived", "--version"], check=False, capture=True, quiet=True,
                       timeout=30)
    text = (version.stdout + version.stderr).decode(errors="replace").splitlines()
    return {
        "keepalived_failover_kill_ms": round(statistics.median(slow["ms"]), 1),
        "keepalived_failover_kill_ms_rounds": slow["ms"],
        "keepalived_failover_kill_ms_fast": round(statistics.median(fast["ms"]), 1),
        "keepalived_failover_kill_ms_fast_rounds": fast["ms"],
        "keepalived_vip_left_after_kill": all(slow["vip_left"] + fast["vip_left"]),
        "keepalived_note": (f"{text[0] if text else 'keepalived'}; defaults (VRRPv2, "
                            "advert_int 1) and _fast (VRRPv3, advert_int 0.1); SIGKILL of "
                            "the master's keepalived process group"),
    }
