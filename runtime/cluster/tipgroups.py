"""Fault tolerance: heartbeats in, assignment, IP movers out (run inside ``serve``).

Every ``TICK`` the service looks at what it knows (its own health, the peers' beats)
and computes :func:`lockgate.runtime.cluster.assign.assign`; it raises the IPs
that fall to it and drops the others, one mover call at a time off the event loop.
It beats every ``monitor_interval`` and at once after any change it made, so peers
learn who holds what without waiting.

Death detection, fastest first:

* the runtime stops (SIGTERM): it drops its IPs and says ``leaving``;
* the runtime dies (SIGKILL, crash): its guard (:mod:`.guard`) sees the pipe close,
  says ``leaving`` and drops the IPs — peers take over in milliseconds;
* the host or its link dies: silence for ``monitor_timeout``.

A member whose workers are not all up (one down for longer than ``child_timeout``)
or whose pools in use all have only dead nodes serves no group, so its IPs move.

Only a clustered appliance (``cluster.json`` exists) raises traffic IPs: a stand-alone
one has no member name the groups could name, and a test's ``serve`` in the host's
namespace must never add addresses there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lockgate.files import atomic_write
from lockgate.paths import StatePaths
from lockgate.runtime.cluster import status as ft_status
from lockgate.runtime.cluster.assign import GroupSpec, assign, mine
from lockgate.runtime.cluster.heartbeat import (
    Beat,
    Endpoint,
    Peers,
    Sequence,
    encode,
    open_endpoint,
)
from lockgate.runtime.cluster.movers import Mover, MoverError, choose
from lockgate.runtime.cluster.state import ClusterState, cluster_path, load_cluster
from lockgate.runtime.config.model import Config, FaultTolerance
from lockgate.runtime.config.store import ConfigStore

log = logging.getLogger("lockgate.runtime.cluster.ft")

TICK = 0.02  # seconds between checks: bounds how late a timeout or a change is acted on
RELOAD = 1.0  # seconds between re-reads of the configuration and cluster.json
RAISED_FILE = "traffic_ips.json"


def raised_path(state_dir: Path) -> Path:
    return StatePaths(Path(state_dir)).runtime / RAISED_FILE


class LazyMover:
    """The platform's mover, made on first use, off the event loop (every call is in a
    thread). Making a cloud mover reads the instance metadata and needs the cloud's SDK
    (the ``cluster-cloud`` extra): a stand-alone appliance, which never moves an IP,
    must not crash-loop at start when either is missing. A failure to make it is a
    :class:`MoverError` for the IP being moved, retried on the next move."""

    def __init__(self, platform: str | None) -> None:
        self.name = platform or "local"
        self.platform = platform
        self._real: Mover | None = None

    def _mover(self) -> Mover:
        if self._real is None:
            try:
                self._real = choose(self.platform)
            except MoverError:
                raise
            except Exception as exc:  # metadata unreachable, SDK not installed, ...
                raise MoverError(f"cannot set up the {self.name} IP mover: "
                                 f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        return self._real

    def raise_ip(self, ip: str) -> None:
        self._mover().raise_ip(ip)

    def drop_ip(self, ip: str) -> None:
        self._mover().drop_ip(ip)

    def announce(self, ip: str) -> None:
        self._mover().announce(ip)

    def prepare(self, ips: list[str]) -> None:
        try:
            self._mover().prepare(ips)
        except MoverError as exc:  # the move itself will report it again, with its IP
            log.error("%s", exc)


def groups_of(config: Config) -> list[GroupSpec]:
    return [GroupSpec(g.name, g.ipaddresses, g.machines, g.passive_machines, g.keeptogether,
                      g.enabled) for g in config.traffic_ip_groups.values()]


def cleanup_leftovers(state_dir: Path, mover: Mover | None = None) -> list[str]:
    """Drop the traffic IPs a previous run left raised (it crashed and its guard died
    too): the next start must not answer for IPs the cluster gave to someone else."""
    path = raised_path(state_dir)
    try:
        left = list(json.loads(path.read_text()).get("ips", []))
    except (FileNotFoundError, ValueError):
        return []
    if left:
        mover = mover or choose(detect_platform())
        for ip in left:
            try:
                mover.drop_ip(ip)
            except MoverError as exc:
                log.error("%s", exc)
        log.warning("dropped traffic IPs left by the previous run: %s", " ".join(left))
    path.unlink(missing_ok=True)
    return left


def detect_platform() -> str | None:
    """The cloud first boot found this appliance on (its instance record), if any."""
    if os.environ.get("LOCKGATE_IP_MOVER"):
        return os.environ["LOCKGATE_IP_MOVER"]
    try:
        from lockgate.firstboot.state import InstanceState

        state = InstanceState(Path("/"))
        current = state.current()
        record = state.get(current) if current else None
        return record.platform if record else None
    except Exception:  # no first-boot state (a developer's machine): local addresses
        return None


class FaultToleranceService:
    def __init__(self, state_dir: Path, host: str = "", supervisor: Any = None,
                 mover: Mover | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.supervisor = supervisor
        self.platform = detect_platform()
        self.mover: Mover = mover or LazyMover(self.platform)
        self.cluster: ClusterState | None = None
        self.cluster_mtime = 0.0
        self.config: Config | None = None
        self.settings = FaultTolerance()
        self.peers: Peers | None = None
        self.endpoint: Endpoint | None = None
        self.seq = Sequence()
        self.held: set[str] = set()
        self.failed: dict[str, float] = {}  # ip -> when raising it last failed
        self.started = 0.0
        self.next_beat = 0.0
        self.next_reload = 0.0
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.guard: subprocess.Popen[bytes] | None = None
        self.worker_down: dict[int, float] = {}
        self.pools_ok = True
        self.next_pool_check = 0.0
        self.endpoint_retry = 0.0
        self.status_written = 0.0
        self.status_shape: Any = None
        self.status_writer: asyncio.Task[None] | None = None

    # ---- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(cleanup_leftovers, self.state_dir, self.mover)
        self._reload(force=True)
        self.started = time.monotonic()
        ft_status.register(self.state_dir, self)
        self.task = asyncio.create_task(self._run())

    def describe(self) -> str:
        """For the serving line; empty for a stand-alone appliance (nothing to say)."""
        if self.cluster is None:
            return ""
        me = self.cluster.me
        return f"fault_tolerance=udp:{me.admin_port if me else '?'}"

    async def close(self) -> None:
        """Orderly stop: drop every IP, tell the peers, let the guard go."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.status_writer is not None:
            await asyncio.wait({self.status_writer}, timeout=5)
        for ip in sorted(self.held):
            await self._move("drop", ip)
        self._beat("leaving")
        if self.endpoint is not None and self.endpoint.transport is not None:
            self.endpoint.transport.close()
        self._stop_guard()
        raised_path(self.state_dir).unlink(missing_ok=True)
        ft_status.unregister(self.state_dir, self)
        ft_status.status_path(self.state_dir).unlink(missing_ok=True)

    # ---- guard -------------------------------------------------------------------------------
    def _start_guard(self) -> None:
        assert self.cluster is not None
        # Long-lived child, like the workers: Popen, not lockgate.proc.run. Own session, so
        # a signal to the runtime's process group leaves it to do its job.
        self.guard = subprocess.Popen([sys.executable, "-m", "lockgate.runtime.cluster.guard"],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      start_new_session=True)
        setup = {"secret": self.cluster.secret.hex(), "name": self.cluster.name,
                 "epoch": self.cluster.epoch, "peers": self._targets(), "mover": self.platform}
        self._tell_guard(json.dumps(setup))

    def _tell_guard(self, line: str) -> None:
        if self.guard is None or self.guard.stdin is None:
            return
        try:
            self.guard.stdin.write(line.encode() + b"\n")
            self.guard.stdin.flush()
        except OSError:
            log.error("traffic-IP guard is gone; restarting it")
            self.guard = None

    def _stop_guard(self) -> None:
        if self.guard is not None:
            self._tell_guard("bye")
            with contextlib.suppress(OSError):
                if self.guard.stdin is not None:
                    self.guard.stdin.close()
            try:
                self.guard.wait(5)
            except subprocess.TimeoutExpired:
                self.guard.kill()
                self.guard.wait()
            self.guard = None

    # ---- state -------------------------------------------------------------------------------
    def _targets(self) -> list[tuple[str, int]]:
        if self.cluster is None:
            return []
        return [(m.address, m.admin_port) for m in self.cluster.peers]

    def _reload(self, force: bool = False) -> None:
        try:
            self.config = ConfigStore(self.state_dir).load()
            self.settings = self.config.fault_tolerance
        except Exception as exc:  # a damaged store is reported by serve; keep the last good
            log.error("fault tolerance: cannot read the configuration: %s", exc)
        try:
            mtime = cluster_path(self.state_dir).stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if not force and mtime == self.cluster_mtime:
            return
        self.cluster_mtime = mtime
        cluster = load_cluster(self.state_dir) if mtime else None
        old = self.cluster
        self.cluster = cluster
        if cluster is None:
            return
        timeout = max(self.settings.monitor_timeout, 2 * self.settings.monitor_interval)
        if self.peers is None:
            self.peers = Peers(cluster.name, frozenset(m.name for m in cluster.members), timeout)
        else:
            self.peers.set_members(m.name for m in cluster.members)
        if old is not None:
            self._tell_guard(f"peers {json.dumps(self._targets())} {cluster.epoch}")

    def _on_packet(self, data: bytes, addr: Any) -> None:
        if self.peers is None or self.cluster is None:
            return
        beat = self.peers.receive(data, self.cluster.secret, time.monotonic())
        if beat is None:
            if self.settings.verbose:
                log.warning("heartbeat from %s dropped (%s)", addr, self.peers.dropped)
            return
        if self.settings.verbose:
            log.warning("heartbeat from %s seq=%d kind=%s serving=%s holding=%s", beat.sender,
                        beat.seq, beat.kind, sorted(beat.serving), sorted(beat.holding))
        self.changed.set()  # recompute now, not at the next tick (assign is cheap)

    def _my_health(self) -> bool:
        now = time.monotonic()
        sup = self.supervisor
        if sup is not None:
            for slot, proc in list(sup.procs.items()):
                up = proc.poll() is None and sup.ready.get(slot) == proc.pid
                if up:
                    self.worker_down.pop(slot, None)
                else:
                    self.worker_down.setdefault(slot, now)
            if any(now - t > self.settings.child_timeout for t in self.worker_down.values()):
                return False
        if now >= self.next_pool_check:
            self.next_pool_check = now + RELOAD
            self.pools_ok = self._pools_ok()
        return self.pools_ok

    def _pools_ok(self) -> bool:
        """False when every node of every pool in use is dead (nothing to send traffic to)."""
        if self.config is None:
            return True
        used = {vs.pool for vs in self.config.virtual_servers.values() if vs.enabled}
        if not used:
            return True
        from lockgate.runtime.status import snapshot

        pools = snapshot(self.state_dir)["pools"]
        states = [node["state"] for name in used
                  for node in pools.get(name, {}).get("nodes", {}).values()]
        return not states or any(state != "dead" for state in states)

    def _serving(self) -> frozenset[str]:
        if self.config is None or self.cluster is None or not self._my_health():
            return frozenset()
        me = self.cluster.name
        return frozenset(g.name for g in self.config.traffic_ip_groups.values()
                         if me in g.machines or me in g.passive_machines)

    def desired(self, now: float) -> frozenset[str]:
        assert self.peers is not None and self.cluster is not None and self.config is not None
        serving = self.peers.serving(now)
        holders = {ip: set(names) for ip, names in self.peers.holders(now).items()}
        me = self.cluster.name
        serving[me] = self._serving()
        if serving[me]:
            for ip in self.held:
                holders.setdefault(ip, set()).add(me)
        result = assign(groups_of(self.config), serving,
                        {ip: frozenset(n) for ip, n in holders.items()},
                        autofailback=self.settings.autofailback)
        return mine(result, me)

    # ---- the loop ----------------------------------------------------------------------------
    def _beat(self, kind: str = "beat") -> None:
        if self.cluster is None or self.endpoint is None:
            return
        beat = Beat(self.cluster.name, self.cluster.epoch, self.seq.next(), time.time(), kind,
                    self._serving() if kind == "beat" else frozenset(),
                    frozenset(self.held) if kind == "beat" else frozenset())
        self.endpoint.send(encode(beat, self.cluster.secret), self._targets())
        self.next_beat = time.monotonic() + self.settings.monitor_interval

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let fault tolerance die silently; try again next tick
                log.exception("fault tolerance step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), TICK)
            self.changed.clear()

    async def _step(self) -> None:
        now = time.monotonic()
        await self._act(now)
        if self.cluster is not None and self.config is not None:
            self._write_status(now)

    async def _act(self, now: float) -> None:
        if now >= self.next_reload:
            self.next_reload = now + RELOAD
            self._reload()
        if self.cluster is None or self.config is None or self.cluster.me is None:
            return
        if self.endpoint is None:
            me = self.cluster.me
            if now < self.endpoint_retry:
                return
            try:
                self.endpoint = await open_endpoint(self.host, me.admin_port, self._on_packet)
            except OSError as exc:
                log.error("fault tolerance: cannot listen on UDP %s:%d: %s; retrying in 5 s",
                          self.host or "*", me.admin_port, exc)
                self.endpoint_retry = now + 5
                return
            self.started = now
            mine_too = [ip for g in groups_of(self.config)
                        if self.cluster.name in (*g.machines, *g.passive) for ip in g.ips]
            await asyncio.to_thread(self.mover.prepare, mine_too)
            self._start_guard()
            self._beat()
        if self.guard is None or self.guard.poll() is not None:
            self._start_guard()
            for ip in self.held:
                self._tell_guard(f"hold {ip}")
        if now >= self.next_beat:
            self._beat()
        assert self.peers is not None
        # Listen for one timeout before raising anything (unless alone): the peers'
        # beats say who holds what, so a restarted member does not grab IPs back.
        everyone = frozenset(m.name for m in self.cluster.peers)
        if (now - self.started < self.peers.timeout and not self.held
                and not everyone <= self.peers.live(now)):
            return
        want = self.desired(now)
        changed = False
        for ip in sorted(self.held - want):
            changed |= await self._move("drop", ip)
        for ip in sorted(want - self.held):
            if now - self.failed.get(ip, -1e9) < 1.0:
                continue  # failed a moment ago: the log has why; retry once a second
            changed |= await self._move("raise", ip)
        if changed:
            self._save_raised()
            self._beat()

    def _write_status(self, now: float) -> None:
        """For other processes (the CLI): at once on a change, else every second. Written
        in a thread (it fsyncs), one write at a time, so a takeover never waits on it."""
        if self.status_writer is not None and not self.status_writer.done():
            return
        raw = self.raw_status()
        shape = ([(m["name"], m["state"], m["serving"], m["holding"]) for m in raw["members"]],
                 raw["traffic_ip_groups"], raw["healthy"], raw["epoch"])
        if shape == self.status_shape and now - self.status_written < ft_status.WRITE_EVERY:
            return
        self.status_shape, self.status_written = shape, now
        self.status_writer = asyncio.create_task(self._save_status(raw))

    async def _save_status(self, raw: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(ft_status.write_status, self.state_dir, raw)
        except OSError as exc:
            log.error("cannot write the cluster status: %s", exc)

    async def _move(self, action: str, ip: str) -> bool:
        try:
            if action == "raise":
                # Recorded first: a death in the middle of the call still drops it.
                self._tell_guard(f"hold {ip}")
                self._save_raised(ip)
                await asyncio.to_thread(self.mover.raise_ip, ip)
                self.held.add(ip)
                log.warning("traffic IP %s raised here", ip)
            else:
                await asyncio.to_thread(self.mover.drop_ip, ip)
                self.held.discard(ip)
                self._tell_guard(f"drop {ip}")
                log.warning("traffic IP %s dropped here", ip)
            self.failed.pop(ip, None)
            return True
        except MoverError as exc:
            self.failed[ip] = time.monotonic()
            log.error("%s", exc)
            return False

    def _save_raised(self, extra: str | None = None) -> None:
        ips = self.held | ({extra} if extra else set())
        data = json.dumps({"ips": sorted(ips)}).encode()
        atomic_write(raised_path(self.state_dir), data, 0o600)

    def raw_status(self) -> dict[str, Any]:
        """The status document (lockgate.runtime.cluster.status) with wall-clock times."""
        now, wall = time.monotonic(), time.time()
        cluster, config = self.cluster, self.config
        groups = list(config.traffic_ip_groups.values()) if config is not None else []
        if cluster is None:
            doc = ft_status.offline_document(self.state_dir)
            doc.update(written_at=wall, healthy=None)
            return doc
        me = cluster.name
        mine_serving = sorted(self._serving())
        held = sorted(self.held)  # one C-level copy: safe against the loop's changes
        holders: dict[str, list[str]] = {ip: [me] for ip in held}
        members = []
        for m in cluster.members:
            if m.name == me:
                members.append(ft_status.member_entry(
                    m, me, groups, state="self", alive=True, heard_at=None,
                    serving=mine_serving, holding=held))
                continue
            peer = self.peers.state.get(m.name) if self.peers is not None else None
            live = peer is not None and self.peers is not None and m.name in self.peers.live(now)
            if peer is None:
                state = "not_heard"
            elif peer.leaving:
                state = "leaving"
            else:
                state = "alive" if live else "dead"
            holding = sorted(peer.holding) if peer is not None and live else []
            for ip in holding:
                holders.setdefault(ip, []).append(m.name)
            members.append(ft_status.member_entry(
                m, me, groups, state=state, alive=live,
                heard_at=None if peer is None else wall - (now - peer.heard),
                serving=sorted(peer.serving) if peer is not None and live else [],
                holding=holding))
        return {
            "clustered": True, "member": me, "epoch": cluster.epoch, "written_at": wall,
            "healthy": bool(mine_serving) or not any(
                me in (*g.machines, *g.passive_machines) for g in groups),
            "settings": ft_status.settings_entry(self.settings),
            "members": members,
            "traffic_ip_groups": [ft_status.group_entry(g, holders)
                                  for g in sorted(groups, key=lambda g: g.name)],
            "dropped_packets": dict(self.peers.dropped) if self.peers else {},
        }

    def status_document(self) -> dict[str, Any]:
        return ft_status.aged(self.raw_status())

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"member": self.cluster.name if self.cluster else None,
                "held": sorted(self.held),
                "live_peers": sorted(self.peers.live(now)) if self.peers else [],
                "dropped_packets": dict(self.peers.dropped) if self.peers else {}}


async def start_fault_tolerance(state_dir: Path, host: str = "", supervisor: Any = None
                                ) -> FaultToleranceService:
    service = FaultToleranceService(state_dir, host, supervisor)
    await service.start()
    return service
