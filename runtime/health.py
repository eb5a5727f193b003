"""Active health monitors: TCP connect and HTTP GET with an expected status.

One asyncio task per (pool, node, monitor) in each worker. A node is alive
for a monitor until ``failures`` checks in a row fail, and alive again after
``rise`` checks in a row pass; it is alive for the pool when every monitor
says so. State lives on the NodeState, so it survives reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from lockgate.runtime.config.model import Monitor
from lockgate.runtime.pools import NodeState, PoolRuntime

log = logging.getLogger("lockgate.runtime.health")


class MonitorState:
    __slots__ = ("fails", "ok", "passes")

    def __init__(self) -> None:
        self.ok = True
        self.fails = 0
        self.passes = 0


async def check_connect(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def check_http(host: str, port: int, monitor: Monitor, pattern: re.Pattern[str]) -> bool:
    async def probe() -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            host_header = monitor.host_header or (f"[{host}]" if ":" in host else host)
            writer.write(f"GET {monitor.path} HTTP/1.1\r\nHost: {host_header}\r\n"
                         "User-Agent: lockgate-monitor\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
        finally:
            writer.close()
        parts = line.split()
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and bool(
            pattern.search(parts[1].decode("latin-1")))
    try:
        return await asyncio.wait_for(probe(), monitor.timeout)
    except (OSError, TimeoutError, ValueError):
        return False


class HealthChecker:
    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str, str], tuple[asyncio.Task[None], Monitor]] = {}

    def apply(self, pools: dict[str, PoolRuntime], monitors: dict[str, Monitor]) -> None:
        wanted: dict[tuple[str, str, str], tuple[NodeState, Monitor]] = {}
        for pool in pools.values():
            names = set(pool.config.monitors)
            for node in pool.nodes:
                for stale in set(node.monitor_state) - names:
                    del node.monitor_state[stale]
                for name in names:
                    node.monitor_state.setdefault(name, MonitorState())
                    wanted[(pool.name, node.address, name)] = (node, monitors[name])
                node.monitor_ok = all(s.ok for s in node.monitor_state.values())
        for key, (task, monitor) in list(self._tasks.items()):
            if key not in wanted or wanted[key][1] != monitor:
                task.cancel()
                del self._tasks[key]
        for key, (node, monitor) in wanted.items():
            if key not in self._tasks:
                task = asyncio.get_running_loop().create_task(self._run(node, monitor))
                self._tasks[key] = (task, monitor)

    async def _run(self, node: NodeState, monitor: Monitor) -> None:
        pattern = re.compile(monitor.status_regex)
        while True:
            if monitor.type == "http":
                ok = await check_http(node.host, node.port, monitor, pattern)
            else:
                ok = await check_connect(node.host, node.port, monitor.timeout)
            self._record(node, monitor, ok)
            await asyncio.sleep(monitor.delay)

    @staticmethod
    def _record(node: NodeState, monitor: Monitor, ok: bool) -> None:
        state = node.monitor_state.get(monitor.name)
        if state is None:
            return
        if ok:
            state.fails = 0
            state.passes += 1
            if not state.ok and state.passes >= monitor.rise:
                state.ok = True
                log.warning("node %s is alive again (monitor %s)", node.address, monitor.name)
        else:
            state.passes = 0
            state.fails += 1
            if state.ok and state.fails >= monitor.failures:
                state.ok = False
                log.warning("node %s failed monitor %s", node.address, monitor.name)
        was = node.monitor_ok
        node.monitor_ok = all(s.ok for s in node.monitor_state.values())
        if was and not node.monitor_ok:
            node.close_idle()

    async def stop(self) -> None:
        tasks = [t for t, _ in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
