"""Pools at run time: node state, load-balancing algorithms, idle backend connections.

One :class:`PoolRuntime` per pool per worker. Node state (monitor results,
passive failures, counters, idle connections) lives in :class:`NodeState`
objects that are carried over on reload when the pool keeps the node.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from typing import Any, Protocol

from lockgate.runtime.config.model import Node, Pool


class IdleConnection(Protocol):
    def is_usable(self) -> bool: ...
    def close(self) -> None: ...


class NodeState:
    __slots__ = ("address", "admin_state", "connections", "consecutive_failures", "failed_until",
                 "failures", "hash_seed", "host", "idle", "monitor_ok", "monitor_state",
                 "port", "requests", "retired", "weight")

    def __init__(self, node: Node) -> None:
        self.address = node.address
        self.host = node.host
        self.port = node.port
        self.weight = node.weight
        self.admin_state = node.state
        self.hash_seed = zlib.crc32(node.address.encode())
        self.monitor_ok = True  # all of the pool's monitors say alive (vTM: alive until proven dead)
        self.monitor_state: dict[str, Any] = {}  # monitor name -> health.MonitorState
        self.failed_until = 0.0  # passive monitoring: dead until this monotonic time
        self.consecutive_failures = 0
        self.connections = 0
        self.requests = 0
        self.failures = 0
        self.idle: list[Any] = []  # idle keep-alive backend connections, most recent last
        self.retired = False  # removed from its pool by a reload

    def update(self, node: Node) -> None:
        self.weight = node.weight
        self.admin_state = node.state

    def alive(self, now: float) -> bool:
        return self.monitor_ok and now >= self.failed_until

    def state_name(self, now: float) -> str:
        if not self.alive(now):
            return "dead"
        return "draining" if self.admin_state != "active" else "alive"

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class PoolRuntime:
    def __init__(self, config: Pool, previous: PoolRuntime | None = None) -> None:
        self.name = config.name
        self.config = config
        old = {n.address: n for n in previous.nodes} if previous else {}
        self.nodes: list[NodeState] = []
        for node in config.nodes:
            state = old.pop(node.address, None)
            if state is None:
                state = NodeState(node)
            else:
                state.update(node)
            self.nodes.append(state)
        self.removed = list(old.values())  # the worker closes their idle connections
        self._rr = 0
        self._wrr_current: dict[str, int] = {}
        self._rng = random.Random()

    # ---- choosing a node ----------------------------------------------------------------
    def eligible(self, now: float, exclude: tuple[NodeState, ...] = ()) -> list[NodeState]:
        limit = self.config.max_connections_per_node
        return [n for n in self.nodes
                if n.admin_state == "active" and n.alive(now) and n not in exclude
                and (limit == 0 or n.connections < limit)]

    def pick(self, client_ip: bytes, exclude: tuple[NodeState, ...] = ()) -> NodeState | None:
        now = time.monotonic()
        nodes = self.eligible(now, exclude)
        if not nodes:
            return None
        if len(nodes) == 1:
            return nodes[0]
        algorithm = self.config.algorithm
        if algorithm == "round_robin":
            self._rr += 1
            return nodes[self._rr % len(nodes)]
        if algorithm == "least_connections":
            # Ties rotate (like HAProxy's leastconn), else an idle pool always gets node 1.
            self._rr += 1
            count = len(nodes)
            start = self._rr % count
            best = nodes[start]
            best_load = best.connections / best.weight
            for i in range(1, count):
                node = nodes[(start + i) % count]
                load = node.connections / node.weight
                if load < best_load:
                    best, best_load = node, load
            return best
        if algorithm == "weighted_round_robin":
            return self._smooth_wrr(nodes)
        if algorithm == "random":
            return self._rng.choices(nodes, weights=[n.weight for n in nodes])[0]
        return _rendezvous(nodes, client_ip)

    def _smooth_wrr(self, nodes: list[NodeState]) -> NodeState:
        """nginx's smooth weighted round robin: spreads a heavy node's turns out."""
        current = self._wrr_current
        total = 0
        best: NodeState | None = None
        best_value = 0
        for node in nodes:
            value = current.get(node.address, 0) + node.weight
            current[node.address] = value
            total += node.weight
            if best is None or value > best_value:
                best, best_value = node, value
        assert best is not None
        current[best.address] = best_value - total
        return best

    # ---- passive monitoring -------------------------------------------------------------
    def record_failure(self, node: NodeState) -> None:
        node.failures += 1
        node.consecutive_failures += 1
        cfg = self.config
        if cfg.passive_monitoring and node.consecutive_failures >= cfg.node_fail_threshold:
            node.failed_until = time.monotonic() + cfg.node_fail_time
            node.close_idle()

    @staticmethod
    def record_success(node: NodeState) -> None:
        node.consecutive_failures = 0

    # ---- idle keep-alive connections ----------------------------------------------------
    def take_idle(self, node: NodeState) -> Any | None:
        idle = node.idle
        while idle:
            conn = idle.pop()
            if conn.is_usable():
                return conn
        return None

    def give_idle(self, node: NodeState, conn: Any) -> bool:
        if (node.retired or len(node.idle) >= self.config.max_idle_connections_pernode
                or node.admin_state == "disabled" or not node.alive(time.monotonic())):
            return False
        node.idle.append(conn)
        return True

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"nodes": {n.address: {"state": n.state_name(now), "connections": n.connections,
                                      "requests": n.requests, "failures": n.failures}
                          for n in self.nodes}}


def _rendezvous(nodes: list[NodeState], client_ip: bytes) -> NodeState:
    """Weighted rendezvous hashing: each client IP goes to the node with the best score,
    so removing a node moves only that node's clients."""
    key = zlib.crc32(client_ip)
    best = nodes[0]
    best_score = -math.inf
    for node in nodes:
        u = (_mix32(key ^ node.hash_seed) + 1) / 4294967297.0  # in (0, 1)
        score = -node.weight / math.log(u)
        if score > best_score:
            best, best_score = node, score
    return best


def _mix32(h: int) -> int:
    """murmur3's finaliser: crc32 alone is linear, this spreads the bits."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h
