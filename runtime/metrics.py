"""Prometheus text exposition (format 0.0.4) of the traffic manager's counters.

Built from :func:`lockgate.runtime.status.snapshot` and the configuration
version. A node counts as up (``lockgate_node_up 1``) unless the health checks
mark it ``dead``; ``lockgate_pool_nodes_alive`` counts nodes in state ``alive``
(a draining node is up but takes no new connections). A virtual server is up
(``lockgate_virtual_server_up 1``) when every listener it asks for is open in
every worker; ``lockgate_listeners_failed`` counts those that are not (address
not on the host, certificate that cannot be loaded, management port...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            number = str(int(value)) if float(value).is_integer() else repr(float(value))
            yield f"{self.name}{_labels(labels)} {number}"


def render(snapshot: Mapping[str, Any], config_version: int) -> str:
    requests = _Family("lockgate_requests_total", "counter",
                       "Requests (HTTP) or connections (TCP) handled per virtual server.")
    nbytes = _Family("lockgate_bytes_total", "counter",
                     "Bytes received from clients (in) and sent to them (out).")
    current = _Family("lockgate_connections_current", "gauge",
                      "Client connections open now.")
    conns = _Family("lockgate_connections_total", "counter", "Client connections accepted.")
    errors = _Family("lockgate_errors_total", "counter",
                     "Requests or connections that ended in an error.")
    vs_up = _Family("lockgate_virtual_server_up", "gauge",
                    "1 when every listener of the virtual server is open; 0 when one is "
                    "not (see the REST status for why) or it is disabled.")
    failed = _Family("lockgate_listeners_failed", "gauge",
                     "Listeners of the virtual server that could not be opened.")
    node_up = _Family("lockgate_node_up", "gauge", "1 unless health checks mark the node dead.")
    node_failures = _Family("lockgate_node_failures_total", "counter",
                            "Failed connections or checks per node.")
    alive = _Family("lockgate_pool_nodes_alive", "gauge", "Nodes in state alive per pool.")
    version = _Family("lockgate_config_version", "gauge",
                      "Version of the configuration store (increases on every change).")
    lic_accepted = _Family("lockgate_licence_accepted", "gauge",
                           "1 when the licence is accepted; 0: nothing is proxied (see "
                           "lockgate_licence_info's message).")
    lic_bandwidth = _Family("lockgate_licence_bandwidth_limit_bits_per_second", "gauge",
                            "Total proxied throughput the licence allows; 0: no limit.")
    lic_info = _Family("lockgate_licence_info", "gauge",
                       "The licence in force: edition and why (message).")

    for name, c in sorted((snapshot.get("virtual_servers") or {}).items()):
        requests.add(c.get("requests", 0), virtual_server=name)
        nbytes.add(c.get("bytes_in", 0), virtual_server=name, direction="in")
        nbytes.add(c.get("bytes_out", 0), virtual_server=name, direction="out")
        current.add(c.get("connections_current", 0), virtual_server=name)
        conns.add(c.get("connections_total", 0), virtual_server=name)
        errors.add(c.get("errors", 0), virtual_server=name)
        vs_up.add(1 if c.get("state", "ok") in ("ok", "warning") else 0, virtual_server=name)
        failed.add(c.get("listeners_failed", 0), virtual_server=name)
    for pool, data in sorted((snapshot.get("pools") or {}).items()):
        count = 0
        for node, n in sorted((data.get("nodes") or {}).items()):
            state = n.get("state", "alive")
            node_up.add(0 if state == "dead" else 1, pool=pool, node=node)
            node_failures.add(n.get("failures", 0), pool=pool, node=node)
            count += state == "alive"
        alive.add(count, pool=pool)
    version.add(config_version)
    licence = snapshot.get("licence")
    if licence:
        lic_accepted.add(1 if licence.get("accepted") else 0)
        lic_bandwidth.add(int(licence.get("bandwidth_mbit_s", 0)) * 1_000_000)
        lic_info.add(1, edition=str(licence.get("edition", "")),
                     message=str(licence.get("message", "")))

    families = (requests, nbytes, current, conns, errors, vs_up, failed, node_up, node_failures,
                alive, version, *((lic_accepted, lic_bandwidth, lic_info)
                                  if snapshot.get("licence") else ()))
    return "\n".join(line for family in families for line in family.lines()) + "\n"
