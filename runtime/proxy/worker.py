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
from lockgate.runtime.pools import PoolRuntime
from lockgate.runtime.proxy.context import Context, TlsContexts, VsRuntime, VsStats
from lockgate.runtime.proxy.http_transport import HttpClient
from lockgate.runtime.proxy.tcp_transport import TcpClient

log = logging.getLogger("lockgate.runtime.worker")

SWEEP_INTERVAL = 0.25
HOUSEKEEPING_INTERVAL = 1.0
LISTEN_BACKLOG = 1024


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


def open_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Every worker binds the same address; the kernel spreads new connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


class Worker:
    def __init__(self, state_dir: Path, slot: int) -> None:
        self.state_dir = Path(state_dir)
        self.slot = slot
        self.store = ConfigStore(self.state_dir)
        self.ctx: Context = None  # type: ignore[assignment,unused-ignore]
        self.health = HealthChecker()
        self.version = -1
        self.stamp: tuple[int, int, int] | None = None
        self.vservers: dict[str, VsRuntime] = {}
        self.stats: dict[str, VsStats] = {}
        self.listeners: dict[tuple[Any, ...], asyncio.AbstractServer] = {}
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
        config = self.store.load()
        await self.apply(config, strict=True)
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
        # certificate files"; unchanged listeners and pools stay as they are.
        await self.apply(config, strict=False)

    async def apply(self, config: Config, strict: bool) -> None:
        """Make ``config`` the running one without dropping connections."""
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

        wanted: dict[tuple[Any, ...], VirtualServer] = {}
        for vs in config.virtual_servers.values():
            if vs.enabled:
                for key in listener_keys(vs):
                    wanted[key] = vs
        vservers: dict[str, VsRuntime] = {}
        errors = []
        for vs in config.virtual_servers.values():
            runtime = self.vservers.get(vs.name)
            stats = self.stats.setdefault(vs.name, VsStats())
            if runtime is None:
                runtime = VsRuntime(vs, stats)
            runtime.config = vs  # connections read it per request: new settings apply at once
            vservers[vs.name] = runtime
            stamp = tls_stamp(vs)
            if stamp is None:
                runtime.tls, runtime.tls_stamp = None, None
            elif stamp != runtime.tls_stamp:
                try:
                    runtime.tls, runtime.tls_stamp = load_tls(vs), stamp
                except ListenerError as exc:
                    # Keep serving the certificates loaded before, if any.
                    if strict:
                        raise
                    errors.append(str(exc))
                    log.error("worker %d: %s", self.slot, exc)
        # Open new listeners before closing old ones, so a moved service never has a gap.
        for key, vs in wanted.items():
            if key in self.listeners:
                continue
            try:
                self.listeners[key] = await self._listen(vservers[vs.name], key[1])
            except ListenerError as exc:
                if strict:
                    raise
                errors.append(str(exc))
                log.error("worker %d: %s", self.slot, exc)
        for key in [k for k in self.listeners if k not in wanted]:
            self.listeners.pop(key).close()
        self.vservers = vservers
        self.version = config.version
        if not errors:
            log.info("worker %d: running config version %d", self.slot, config.version)

    async def _listen(self, vs: VsRuntime, host: str) -> asyncio.AbstractServer:
        config = vs.config
        context = None
        if config.ssl_decrypt:
            if vs.tls is None:
                raise ListenerError(f"virtual_servers.{config.name}: no usable certificate, "
                                    "not listening")
            context = front_context(vs)
        vs.proto = b"https" if context is not None else b"http"
        sock = open_socket(host, config.port)
        ctx = self.ctx
        factory: Any
        if config.protocol == "tcp":
            def factory() -> TcpClient:
                return TcpClient(ctx, vs)
        else:
            def factory() -> HttpClient:
                return HttpClient(ctx, vs)
        return await ctx.loop.create_server(factory, sock=sock, ssl=context,
                                            backlog=LISTEN_BACKLOG)

    # ---- housekeeping ---------------------------------------------------------------------
    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.ctx.sweep()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            if file_stamp(self.store.path) != self.stamp:
                self.reload_event.set()
            try:
                self.write_status()
            except OSError as exc:
                log.error("worker %d: cannot write status: %s", self.slot, exc)
            except Exception:  # a bug: say so every time, but keep watching the config
                log.exception("worker %d: writing status failed", self.slot)

    def write_status(self) -> None:
        data = {
            "pid": os.getpid(), "slot": self.slot, "time": time.time(), "version": self.version,
            "virtual_servers": {name: vs.stats.as_dict() for name, vs in self.vservers.items()},
            "pools": {name: pool.status() for name, pool in self.ctx.pools.items()},
        }
        status.write_worker_status(self.state_dir, self.slot, data)

    def listening(self) -> list[str]:
        out = []
        for server in self.listeners.values():
            for sock in server.sockets:  # type: ignore[attr-defined]
                host, port = sock.getsockname()[:2]
                out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return sorted(out)


async def run_worker(state_dir: Path, slot: int, ready_fd: int | None, grace: float) -> int:
    worker = Worker(state_dir, slot)
    try:
        await worker.startup()
    except (ListenerError, ValueError) as exc:
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
    args = parser.parse_args(argv)
    # Until the loop's handler is installed a reload request must not kill us; the
    # store is read after this, so nothing is missed.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if args.parent is not None:
        _die_with_parent(args.parent)
    logging.basicConfig(level=logging.WARNING, format=f"worker {args.slot}: %(levelname)s %(message)s")
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        code = uvloop.run(run_worker(args.state_dir, args.slot, args.ready_fd, args.grace))
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
