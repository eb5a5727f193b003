"""One worker process: its own uvloop loop and SO_REUSEPORT listeners.

Lifecycle: :meth:`Worker.startup` (load the store, open listeners, start
monitors and housekeeping), :meth:`Worker.main_loop` (serve; apply new store
versions in place on SIGHUP or when the file changes), :meth:`Worker.shutdown`
(graceful: stop accepting, let requests in flight finish within the grace).

Run as ``python -m lockgate.runtime.proxy.worker --state-dir D --slot N``
by the supervisor (:mod:`lockgate.runtime.workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from lockgate.files import file_stamp
from lockgate.runtime import status
from lockgate.runtime.config.model import Config, VirtualServer
from lockgate.runtime.config.store import ConfigStore
from lockgate.runtime.health import HealthChecker
from lockgate.runtime.licence import NOT_ACCEPTED, Licence, licence_stamp, licence_state
from lockgate.runtime.listen import MANAGEMENT_PORTS, ip_literal, traffic_ips
from lockgate.runtime.pools import PoolRuntime
from lockgate.runtime.proxy.acceptor import Acceptor
from lockgate.runtime.proxy.context import (
    Context,
    Limiter,
    SharedLimiter,
    TlsContexts,
    VsRuntime,
    VsStats,
)
from lockgate.runtime.proxy.http_transport import HttpClient
from lockgate.runtime.proxy.tcp_transport import TcpClient

log = logging.getLogger("lockgate.runtime.worker")

SWEEP_INTERVAL = 0.25
HOUSEKEEPING_INTERVAL = 1.0
RETRY_INTERVAL = 5.0  # how often what could not be opened or loaded is tried again
LISTEN_BACKLOG = 1024
# Lets a listener bind a traffic IP before it is raised on this host (the kernel's
# IP_FREEBIND, also honoured by IPv6 sockets); Python names it only from 3.12.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
# The bandwidth bucket holds this much of a second's allowance (and at least
# MIN_BURST bytes): enough for a read or two, small enough that a burst after an
# idle spell does not show in a rate measured over seconds.
BURST_SECONDS = 0.05
MIN_BURST = 64 * 1024


class ListenerError(Exception):
    pass


def listener_keys(vs: VirtualServer) -> list[tuple[Any, ...]]:
    """What a listening socket depends on; an unchanged key keeps the socket open on reload.

    Certificates are not part of it: a renewed certificate is swapped in behind the
    same socket (see :func:`front_context`), because closing a listener resets the
    connections the kernel has already queued on it."""
    return [(vs.name, host, vs.port, vs.protocol, vs.ssl_decrypt) for host in vs.listen_on_hosts]


def tls_stamp(vs: VirtualServer) -> tuple[Any, ...] | None:
    """Identifies the certificate files as they are now; a change means "load them again"."""
    if not vs.ssl_decrypt:
        return None
    paths = [vs.cert_file, vs.key_file, *(p for s in vs.sni for p in (s.cert_file, s.key_file))]
    return (tuple(paths), vs.sni, tuple(_file_id(p) for p in paths))


def _file_id(path: str) -> tuple[int, int, int] | None:
    try:
        return file_stamp(Path(path))
    except OSError:
        return None  # unreadable: loading it will say so


def load_tls(vs: VirtualServer) -> TlsContexts:
    """The virtual server's certificate and its SNI certificates, loaded now."""

    def load(cert: str, key: str, field: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ListenerError(f"virtual_servers.{vs.name}.ssl.{field}: cannot load "
                                f"certificate/key ({exc})") from None
        return ctx

    main = load(vs.cert_file, vs.key_file, "cert_file")
    by_name = {s.host.lower(): load(s.cert_file, s.key_file, "sni") for s in vs.sni}
    return TlsContexts(main, by_name)


def front_context(vs: VsRuntime) -> ssl.SSLContext:
    """The context a TLS listener is created with, for its whole life.

    Every handshake switches to the virtual server's *current* contexts in the
    SNI callback (called with ``None`` when the client sends no name), so a
    reload that loads new certificates takes effect without touching the socket.
    The front context itself holds no certificate: OpenSSL picks the
    certificate after the callback, from the context it switched to."""
    front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    front.minimum_version = ssl.TLSVersion.TLSv1_2

    def choose(sslobj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        tls = vs.tls
        if tls is not None:
            sslobj.context = (tls.by_name.get(name.lower()) if name else None) or tls.main

    front.sni_callback = choose
    return front


def open_socket(host: str, port: int, freebind: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Every worker binds the same address; the kernel spreads new connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if freebind:
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        raise ListenerError(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from None
    return sock


class Worker:
    def __init__(self, state_dir: Path, slot: int,
                 reserved_ports: tuple[int, ...] = MANAGEMENT_PORTS, share: int = 1) -> None:
        self.state_dir = Path(state_dir)
        self.slot = slot
        self.share = max(1, share)  # workers of this serve (they share one bucket)
        self.licence: Licence | None = None
        self.licence_stamp: tuple[Any, ...] | None = None
        self.reserved_ports = frozenset(reserved_ports)  # the management plane's, never ours
        self.store = ConfigStore(self.state_dir)
        self.ctx: Context = None  # type: ignore[assignment,unused-ignore]
        self.health = HealthChecker()
        self.version = -1
        self.stamp: tuple[int, int, int] | None = None
        self.vservers: dict[str, VsRuntime] = {}
        self.stats: dict[str, VsStats] = {}
        self.listeners: dict[tuple[Any, ...], asyncio.AbstractServer] = {}
        self.wanted: dict[tuple[Any, ...], VirtualServer] = {}
        self.freebind: set[str] = set()  # traffic IPs: listened on before they are raised
        self.problems: dict[str, dict[str, str]] = {}  # virtual server -> {what: reason}
        self.last_settle = 0.0
        self._settle_lock = asyncio.Lock()
        self.stop_event = asyncio.Event()
        self.reload_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle ------------------------------------------------------------------------
    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self.ctx = Context(loop)
        saved = status.read_worker_status(self.state_dir, self.slot) or {}
        for name, counters in saved.get("virtual_servers", {}).items():
            self.stats.setdefault(name, VsStats()).restore(counters)
        self.stamp = file_stamp(self.store.path)
        self.load_licence()
        config = self.store.load()
        await self.apply(config)
        for pool_name, pool in saved.get("pools", {}).items():
            runtime = self.ctx.pools.get(pool_name)
            for node in runtime.nodes if runtime else ():
                old = pool.get("nodes", {}).get(node.address, {})
                node.requests = int(old.get("requests", 0))
                node.failures = int(old.get("failures", 0))
        loop.add_signal_handler(signal.SIGHUP, self.reload_event.set)
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        self._tasks = [loop.create_task(self._sweeper()), loop.create_task(self._housekeeping())]

    async def main_loop(self) -> None:
        while not self.stop_event.is_set():
            reload_wait = asyncio.ensure_future(self.reload_event.wait())
            stop_wait = asyncio.ensure_future(self.stop_event.wait())
            await asyncio.wait({reload_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            reload_wait.cancel()
            stop_wait.cancel()
            if self.reload_event.is_set() and not self.stop_event.is_set():
                self.reload_event.clear()
                await self.reload()

    async def shutdown(self, grace: float = 10.0) -> None:
        ctx = self.ctx
        ctx.stopping = True
        for server in self.listeners.values():
            server.close()
        self.listeners.clear()
        for conn in list(ctx.connections):
            conn.close_if_idle()
        deadline = time.monotonic() + grace
        while ctx.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # in-flight requests finishing; bounded by the grace
        for conn in list(ctx.connections):
            conn.abort()
        await self.health.stop()
        for task in self._tasks:
            task.cancel()
        for pool in ctx.pools.values():
            for node in pool.nodes:
                node.close_idle()
        self.write_status()

    # ---- licence --------------------------------------------------------------------------
    def load_licence(self) -> bool:
        """Read the licence and apply its bandwidth limit; True when acceptance changed
        (the listeners must then be opened or closed: the caller reloads)."""
        self.licence_stamp = licence_stamp(self.state_dir)
        lic = licence_state(self.state_dir)
        before = self.licence
        self.licence = lic
        rate = lic.bandwidth_bytes_s  # in total: the workers share one bucket
        limiter = self.ctx.limiter
        if limiter is None or limiter.rate != rate:
            if isinstance(limiter, SharedLimiter):
                limiter.close()
            self.ctx.limiter = None if rate <= 0 else self._limiter(rate)
        if self.slot == 0 and (before is None or before.message != lic.message):
            if lic.message:  # one worker says it, not N
                log.warning("licence: %s", lic.message)
            else:
                log.warning("licence: %s edition, %s", lic.edition,
                            f"{lic.bandwidth_mbit_s} Mb/s" if lic.bandwidth_mbit_s
                            else "no bandwidth limit")
        return before is not None and before.accepted != lic.accepted

    def _limiter(self, rate: float) -> Limiter:
        burst = max(rate * BURST_SECONDS, MIN_BURST)
        path = status.run_folder(self.state_dir) / "bandwidth.bucket"
        try:
            return SharedLimiter(self.ctx.loop, rate, burst, str(path))
        except OSError as exc:  # the cap still holds: each worker keeps 1/N of it
            log.error("worker %d: cannot share the bandwidth bucket %s (%s); "
                      "this worker keeps 1/%d of the limit", self.slot, path, exc, self.share)
            return Limiter(self.ctx.loop, rate / self.share, burst / self.share)

    # ---- configuration --------------------------------------------------------------------
    async def reload(self) -> None:
        self.stamp = file_stamp(self.store.path)
        try:
            config = self.store.load()
        except (OSError, ValueError) as exc:
            log.error("worker %d: cannot read the config store, keeping version %d: %s",
                      self.slot, self.version, exc)
            return
        # Applied even when the version is the same: SIGHUP also means "re-read the
        # certificate files" and "try again what could not be opened"; unchanged
        # listeners and pools stay as they are.
        await self.apply(config)

    async def apply(self, config: Config) -> None:
        """Make ``config`` the running one without dropping connections.

        Applied object by object: a listener that cannot be opened or a certificate
        that cannot be loaded is skipped and reported (log, status), never fatal, so
        one bad virtual server cannot keep the others from serving."""
        ctx = self.ctx
        old_pools = ctx.pools
        pools = {name: PoolRuntime(cfg, old_pools.get(name)) for name, cfg in config.pools.items()}
        retired = [n for name, pool in old_pools.items() if name not in pools for n in pool.nodes]
        retired += [n for pool in pools.values() for n in pool.removed]
        for node in retired:
            node.retired = True  # requests in flight finish; their connections are not kept
            node.close_idle()
        ctx.pools = pools
        self.health.apply(pools, config.monitors)

        vservers: dict[str, VsRuntime] = {}
        for vs in config.virtual_servers.values():
            runtime = self.vservers.get(vs.name)
            stats = self.stats.setdefault(vs.name, VsStats())
            if runtime is None:
                runtime = VsRuntime(vs, stats)
            runtime.config = vs  # connections read it per request: new settings apply at once
            vservers[vs.name] = runtime
        self.vservers = vservers
        self.freebind = traffic_ips(g.ipaddresses for g in config.traffic_ip_groups.values()
                                    if g.enabled)
        accepted = self.licence is not None and self.licence.accepted
        self.wanted = {key: vs for vs in config.virtual_servers.values()
                       if accepted and vs.enabled and vs.port not in self.reserved_ports
                       for key in listener_keys(vs)}
        # Open new listeners before closing old ones, so a moved service never has a gap.
        await self.settle()
        for key in [k for k in self.listeners if k not in self.wanted]:
            self.listeners.pop(key).close()
        self.version = config.version
        if not self.problems:
            log.info("worker %d: running config version %d", self.slot, config.version)

    async def settle(self) -> None:
        """Load changed certificates and open missing listeners; record what fails.

        Called on every apply and, while something is failing, every RETRY_INTERVAL,
        so a restored certificate or an address added to the host is picked up."""
        async with self._settle_lock:  # the retry timer and a reload must not both open a listener
            await self._settle()

    async def _settle(self) -> None:
        self.last_settle = time.monotonic()
        problems: dict[str, dict[str, str]] = {}
        for runtime in self.vservers.values():
            vs = runtime.config
            if not vs.enabled:
                continue
            found = problems.setdefault(vs.name, {})
            if self.licence is None or not self.licence.accepted:
                found["licence"] = f"virtual_servers.{vs.name}: not listening: {NOT_ACCEPTED}"
                continue
            if vs.port in self.reserved_ports:
                found["port"] = (f"virtual_servers.{vs.name}.basic.port: {vs.port} is a "
                                 "management port (REST API, Admin UI, cluster); not listening")
                continue
            stamp = tls_stamp(vs)
            if stamp is None:
                runtime.tls, runtime.tls_stamp = None, None
            elif stamp != runtime.tls_stamp:
                try:
                    runtime.tls, runtime.tls_stamp = load_tls(vs), stamp
                except ListenerError as exc:
                    found["ssl"] = str(exc)  # the certificates loaded before, if any, keep serving
            for key in listener_keys(vs):
                if key in self.listeners:
                    continue
                if vs.ssl_decrypt and runtime.tls is None:
                    found.setdefault("ssl", f"virtual_servers.{vs.name}: no usable certificate")
                    continue
                try:
                    self.listeners[key] = await self._listen(runtime, key[1])
                except ListenerError as exc:
                    found[f"listen {key[1]}"] = f"virtual_servers.{vs.name}: {exc}"
        problems = {name: found for name, found in problems.items() if found}
        self._report(problems)
        self.problems = problems

    def _report(self, problems: dict[str, dict[str, str]]) -> None:
        """One log line per new or changed problem, one when a virtual server recovers."""
        for name, found in problems.items():
            before = self.problems.get(name, {})
            for what, reason in found.items():
                if before.get(what) != reason:
                    log.error("worker %d: %s", self.slot, reason)
        for name in self.problems:
            runtime = self.vservers.get(name)
            if name not in problems and runtime is not None and runtime.config.enabled:
                log.warning("worker %d: virtual_servers.%s: problem solved, listening",
                            self.slot, name)

    def vs_state(self, runtime: VsRuntime) -> dict[str, Any]:
        """How far the virtual server's configuration is in effect in this worker."""
        vs = runtime.config
        if not vs.enabled:
            return {"state": "disabled", "error": None, "listeners": 0, "listeners_failed": 0}
        keys = listener_keys(vs)
        open_count = sum(key in self.listeners for key in keys)
        found = self.problems.get(vs.name, {})
        state = "error" if open_count < len(keys) else "warning" if found else "ok"
        return {"state": state, "error": "; ".join(found.values()) or None,
                "listeners": open_count, "listeners_failed": len(keys) - open_count}

    async def _listen(self, vs: VsRuntime, host: str) -> asyncio.AbstractServer:
        config = vs.config
        context = None
        if config.ssl_decrypt:
            if vs.tls is None:
                raise ListenerError(f"virtual_servers.{config.name}: no usable certificate, "
                                    "not listening")
            context = front_context(vs)
        vs.proto = b"https" if context is not None else b"http"
        sock = open_socket(host, config.port, freebind=ip_literal(host) in self.freebind)
        ctx = self.ctx
        if config.protocol != "tcp" and context is None:
            # Silent connections held as bare descriptors until they speak (acceptor.py).
            return Acceptor(ctx, vs, sock)
        factory: Any
        if config.protocol == "tcp":
            def factory() -> TcpClient:
                return TcpClient(ctx, vs)
        else:
            def factory() -> HttpClient:
                return HttpClient(ctx, vs)
        try:
            return await ctx.loop.create_server(factory, sock=sock, ssl=context,
                                                backlog=LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            raise ListenerError(f"cannot listen on {host}:{config.port}: "
                                f"{exc.strerror or exc}") from None

    # ---- housekeeping ---------------------------------------------------------------------
    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.ctx.sweep()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            if licence_stamp(self.state_dir) != self.licence_stamp:
                try:
                    self.load_licence()
                except Exception:  # a bug: say so, keep the licence in force
                    log.exception("worker %d: reading the licence failed", self.slot)
                self.reload_event.set()  # opens or closes the listeners if acceptance changed
            if file_stamp(self.store.path) != self.stamp:
                self.reload_event.set()
            elif self.problems and time.monotonic() - self.last_settle >= RETRY_INTERVAL:
                try:
                    await self.settle()
                except Exception:  # a bug: say so, keep serving what is open
                    log.exception("worker %d: retrying failed listeners failed", self.slot)
            try:
                self.write_status()
            except OSError as exc:
                log.error("worker %d: cannot write status: %s", self.slot, exc)
            except Exception:  # a bug: say so every time, but keep watching the config
                log.exception("worker %d: writing status failed", self.slot)

    def write_status(self) -> None:
        data = {
            "pid": os.getpid(), "slot": self.slot, "time": time.time(), "version": self.version,
            "virtual_servers": {name: {**vs.stats.as_dict(), **self.vs_state(vs)}
                                for name, vs in self.vservers.items()},
            "pools": {name: pool.status() for name, pool in self.ctx.pools.items()},
            "licence": self.licence.as_dict() if self.licence is not None else None,
            "bandwidth_limit_bytes_s": self.ctx.limiter.rate if self.ctx.limiter else 0,
        }
        status.write_worker_status(self.state_dir, self.slot, data)

    def listening(self) -> list[str]:
        out = []
        for server in self.listeners.values():
            for sock in server.sockets:  # type: ignore[attr-defined]
                host, port = sock.getsockname()[:2]
                out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return sorted(out)


async def run_worker(state_dir: Path, slot: int, ready_fd: int | None, grace: float,
                     reserved_ports: tuple[int, ...] = MANAGEMENT_PORTS, share: int = 1) -> int:
    worker = Worker(state_dir, slot, reserved_ports, share)
    try:
        await worker.startup()
    except ValueError as exc:  # a damaged store (serve checks it first, so rare)
        sys.stderr.write(f"lockgate worker {slot}: {exc}\n")  # one write: workers share stderr
        sys.stderr.flush()
        return 3
    if ready_fd is not None:
        # one write of a short line: atomic on a pipe even with other workers writing
        os.write(ready_fd, f"{slot} {os.getpid()} {','.join(worker.listening())}\n".encode())
        os.close(ready_fd)
    try:
        await worker.main_loop()
    finally:
        await worker.shutdown(grace)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lockgate-worker")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--parent", type=int, help="supervisor pid: exit when it is gone")
    parser.add_argument("--reserved-ports", default=",".join(map(str, MANAGEMENT_PORTS)),
                        help="comma-separated ports no virtual server may take")
    parser.add_argument("--share", type=int, default=1,
                        help="workers sharing the licence's bandwidth limit (each takes 1/N)")
    args = parser.parse_args(argv)
    # Until the loop's handler is installed a reload request must not kill us; the
    # store is read after this, so nothing is missed.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if args.parent is not None:
        _die_with_parent(args.parent)
    logging.basicConfig(level=logging.WARNING, format=f"worker {args.slot}: %(levelname)s %(message)s")
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        reserved = tuple(int(p) for p in args.reserved_ports.split(",") if p)
        code = uvloop.run(run_worker(args.state_dir, args.slot, args.ready_fd, args.grace,
                                     reserved, args.share))
        sys.exit(code)


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, so no worker is orphaned."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(0)  # the supervisor died before the request took effect


if __name__ == "__main__":
    main()
