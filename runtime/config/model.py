"""Typed, frozen view of a whole configuration, parsed once at the edge.

:func:`parse_config` takes the raw tree (kind -> name -> filled document) and
returns a :class:`Config`, checking the rules that span objects: a virtual
server's pool exists, a pool's monitors exist, no two enabled virtual servers
share an address and port, TLS files are named when decryption is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lockgate.runtime.config.schema import (
    KINDS,
    ConfigError,
    fill_document,
    fill_settings,
    split_node,
)


@dataclass(frozen=True)
class SniCert:
    host: str
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class VirtualServer:
    name: str
    protocol: str  # "http" | "tcp"
    port: int
    listen_on_hosts: tuple[str, ...]
    pool: str
    enabled: bool
    max_connections: int
    ssl_decrypt: bool
    cert_file: str
    key_file: str
    sni: tuple[SniCert, ...]
    idle_timeout: float
    connect_timeout: float
    request_timeout: float
    max_header_bytes: int
    add_x_forwarded_for: bool
    add_x_forwarded_proto: bool

    def listener_key(self) -> tuple[Any, ...]:
        """What a listening socket depends on; equal keys keep the socket open on reload."""
        return (self.listen_on_hosts, self.port, self.protocol, self.ssl_decrypt,
                self.cert_file, self.key_file, self.sni)


@dataclass(frozen=True)
class Node:
    address: str  # "host:port" as written
    host: str
    port: int
    weight: int
    state: str  # "active" | "draining" | "disabled"


@dataclass(frozen=True)
class Pool:
    name: str
    nodes: tuple[Node, ...]
    monitors: tuple[str, ...]
    max_connections_per_node: int
    node_connection_attempts: int
    passive_monitoring: bool
    node_fail_threshold: int
    node_fail_time: float
    algorithm: str
    max_idle_connections_pernode: int
    idle_timeout: float


@dataclass(frozen=True)
class Monitor:
    name: str
    type: str  # "connect" | "http"
    delay: float
    timeout: float
    failures: int
    rise: int
    path: str
    host_header: str
    status_regex: str


@dataclass(frozen=True)
class TrafficIpGroup:
    name: str
    ipaddresses: tuple[str, ...]
    machines: tuple[str, ...]
    enabled: bool
    passive_machines: tuple[str, ...] = ()
    keeptogether: bool = False


@dataclass(frozen=True)
class FaultTolerance:
    """The settings of heartbeats and failover (docs/cluster.md); times in seconds."""

    monitor_interval: float = 0.5
    monitor_timeout: float = 1.5
    child_timeout: float = 5.0
    autofailback: bool = False
    verbose: bool = False


@dataclass(frozen=True)
class Config:
    version: int
    virtual_servers: dict[str, VirtualServer]
    pools: dict[str, Pool]
    monitors: dict[str, Monitor]
    traffic_ip_groups: dict[str, TrafficIpGroup]
    workers: int  # 0: one per CPU
    fault_tolerance: FaultTolerance = FaultTolerance()


def empty_tree() -> dict[str, Any]:
    tree: dict[str, Any] = {kind: {} for kind in KINDS}
    tree["settings"] = fill_settings({})
    return tree


def normalise_tree(raw: Any, source: str = "config") -> dict[str, Any]:
    """Check a user's whole tree (from a file) and fill in defaults."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "expected a mapping of virtual_servers, pools, monitors, "
                                  "traffic_ip_groups, settings")
    for key in raw:
        if key not in (*KINDS, "settings"):
            raise ConfigError(str(key), f"unknown top-level key (known: {', '.join(KINDS)}, settings)")
    tree = empty_tree()
    for kind in KINDS:
        objects = raw.get(kind) or {}
        if not isinstance(objects, dict):
            raise ConfigError(kind, "expected a mapping of name -> {\"properties\": ...}")
        for name, document in objects.items():
            tree[kind][str(name)] = fill_document(kind, str(name), document)
    tree["settings"] = fill_settings(raw.get("settings") or {})
    return tree


def parse_config(tree: dict[str, Any], version: int) -> Config:
    """Build the typed config from a normalised tree; raise ConfigError on cross-object faults."""
    pools = {name: _pool(name, doc["properties"]) for name, doc in tree["pools"].items()}
    monitors = {name: _monitor(name, doc["properties"]) for name, doc in tree["monitors"].items()}
    vservers = {name: _vserver(name, doc["properties"])
                for name, doc in tree["virtual_servers"].items()}
    tips = {name: _tip(name, doc["properties"]) for name, doc in tree["traffic_ip_groups"].items()}
    for pool in pools.values():
        for i, monitor in enumerate(pool.monitors):
            if monitor not in monitors:
                raise ConfigError(f"pools.{pool.name}.basic.monitors[{i}]",
                                  f"no monitor named {monitor!r}")
    bound: dict[tuple[str, int], str] = {}
    for vs in vservers.values():
        if vs.pool not in pools:
            raise ConfigError(f"virtual_servers.{vs.name}.basic.pool", f"no pool named {vs.pool!r}")
        if not vs.enabled:
            continue
        for host in vs.listen_on_hosts:
            other = bound.setdefault((host, vs.port), vs.name)
            if other != vs.name:
                raise ConfigError(f"virtual_servers.{vs.name}.basic.port",
                                  f"{host}:{vs.port} is already used by virtual server {other!r}")
    return Config(version=version, virtual_servers=vservers, pools=pools, monitors=monitors,
                  traffic_ip_groups=tips, workers=int(tree["settings"]["workers"]),
                  fault_tolerance=_fault_tolerance(tree["settings"]))


def users_of(tree: dict[str, Any], kind: str, name: str) -> list[str]:
    """Objects that name ``kind``/``name`` (so deleting it would break them)."""
    if kind == "pools":
        return [f"virtual_servers.{vs}" for vs, doc in tree["virtual_servers"].items()
                if doc["properties"]["basic"]["pool"] == name]
    if kind == "monitors":
        return [f"pools.{p}" for p, doc in tree["pools"].items()
                if name in doc["properties"]["basic"]["monitors"]]
    return []


def _vserver(name: str, p: dict[str, Any]) -> VirtualServer:
    basic, ssl, conn, http = p["basic"], p["ssl"], p["connection"], p["http"]
    path = f"virtual_servers.{name}"
    if ssl["ssl_decrypt"]:
        if basic["protocol"] != "http":
            raise ConfigError(f"{path}.ssl.ssl_decrypt", "TLS offload needs protocol \"http\"")
        for key in ("cert_file", "key_file"):
            if not ssl[key]:
                raise ConfigError(f"{path}.ssl.{key}", "required when ssl_decrypt is true")
    if not basic["listen_on_hosts"]:
        raise ConfigError(f"{path}.basic.listen_on_hosts", "needs at least one address")
    return VirtualServer(
        name=name, protocol=basic["protocol"], port=basic["port"],
        listen_on_hosts=tuple(basic["listen_on_hosts"]), pool=basic["pool"],
        enabled=basic["enabled"], max_connections=basic["max_connections"],
        ssl_decrypt=ssl["ssl_decrypt"], cert_file=ssl["cert_file"], key_file=ssl["key_file"],
        sni=tuple(SniCert(s["host"], s["cert_file"], s["key_file"]) for s in ssl["sni"]),
        idle_timeout=conn["timeout"], connect_timeout=conn["connect_timeout"],
        request_timeout=conn["request_timeout"], max_header_bytes=conn["max_header_bytes"],
        add_x_forwarded_for=http["add_x_forwarded_for"],
        add_x_forwarded_proto=http["add_x_forwarded_proto"],
    )


def _pool(name: str, p: dict[str, Any]) -> Pool:
    basic, lb, conn = p["basic"], p["load_balancing"], p["connection"]
    nodes = []
    seen: set[str] = set()
    for i, row in enumerate(basic["nodes_table"]):
        path = f"pools.{name}.basic.nodes_table[{i}].node"
        host, port = split_node(path, row["node"])
        if row["node"] in seen:
            raise ConfigError(path, f"node {row['node']!r} is listed twice")
        seen.add(row["node"])
        nodes.append(Node(row["node"], host, port, row["weight"], row["state"]))
    return Pool(
        name=name, nodes=tuple(nodes), monitors=tuple(basic["monitors"]),
        max_connections_per_node=basic["max_connections_per_node"],
        node_connection_attempts=basic["node_connection_attempts"],
        passive_monitoring=basic["passive_monitoring"],
        node_fail_threshold=basic["node_fail_threshold"], node_fail_time=basic["node_fail_time"],
        algorithm=lb["algorithm"], max_idle_connections_pernode=conn["max_idle_connections_pernode"],
        idle_timeout=conn["idle_timeout"],
    )


def _monitor(name: str, p: dict[str, Any]) -> Monitor:
    basic, http = p["basic"], p["http"]
    return Monitor(name=name, type=basic["type"], delay=basic["delay"], timeout=basic["timeout"],
                   failures=basic["failures"], rise=basic["rise"], path=http["path"] or "/",
                   host_header=http["host_header"], status_regex=http["status_regex"])


def _tip(name: str, p: dict[str, Any]) -> TrafficIpGroup:
    basic = p["basic"]
    return TrafficIpGroup(name=name, ipaddresses=tuple(basic["ipaddresses"]),
                          machines=tuple(basic["machines"]), enabled=basic["enabled"],
                          passive_machines=tuple(basic.get("passive_machines", ())),
                          keeptogether=bool(basic.get("keeptogether", False)))


def _fault_tolerance(settings: dict[str, Any]) -> FaultTolerance:
    # .get: a store written before these settings existed has none of them
    filled = {**fill_settings({}), **settings}
    return FaultTolerance(monitor_interval=filled["monitor_interval"] / 1000,
                          monitor_timeout=filled["monitor_timeout"] / 1000,
                          child_timeout=filled["child_timeout"] / 1000,
                          autofailback=bool(filled["autofailback"]),
                          verbose=bool(filled["verbose"]))
