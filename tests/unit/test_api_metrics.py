"""Prometheus text format 0.0.4 from a status snapshot, checked line by line against the grammar."""

from __future__ import annotations

import re

from lockgate.runtime.metrics import render

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{({LABEL}(?:,{LABEL})*)\}})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")
HELP = re.compile(rf"^# HELP ({NAME}) .*$")


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict reader: every line must be HELP, TYPE or a sample of a declared family."""
    assert text.endswith("\n")
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if m := TYPE.match(line):
            assert m.group(1) not in types, f"TYPE twice: {line}"
            types[m.group(1)] = m.group(2)
            families[m.group(1)] = []
        elif HELP.match(line):
            continue
        else:
            m = SAMPLE.match(line)
            assert m, f"not a valid sample line: {line!r}"
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            assert name in types, f"sample before its TYPE: {line}"
            pairs = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
            families[name].append((pairs, float(value)))
    return families


SNAPSHOT = {
    "virtual_servers": {
        "web": {"requests": 12, "bytes_in": 3400, "bytes_out": 99000, "connections_current": 2,
                "connections_total": 7, "errors": 1},
    },
    "pools": {
        "app": {"nodes": {"10.0.0.1:80": {"state": "alive", "connections": 3, "requests": 9,
                                          "failures": 0},
                          "10.0.0.2:80": {"state": "dead", "connections": 0, "requests": 0,
                                          "failures": 4},
                          "[::1]:80": {"state": "draining", "connections": 1, "requests": 1,
                                       "failures": 0}}},
    },
}


def value(families: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:
    matches = [v for lbl, v in families[name] if lbl == labels]
    assert len(matches) == 1, (name, labels, families[name])
    return matches[0]


def test_required_metrics_and_values() -> None:
    families = parse(render(SNAPSHOT, 42))
    assert value(families, "lockgate_requests_total", virtual_server="web") == 12
    assert value(families, "lockgate_bytes_total", virtual_server="web", direction="in") == 3400
    assert value(families, "lockgate_bytes_total", virtual_server="web", direction="out") == 99000
    assert value(families, "lockgate_connections_current", virtual_server="web") == 2
    assert value(families, "lockgate_node_up", pool="app", node="10.0.0.1:80") == 1
    assert value(families, "lockgate_node_up", pool="app", node="10.0.0.2:80") == 0
    assert value(families, "lockgate_node_up", pool="app", node="[::1]:80") == 1
    assert value(families, "lockgate_pool_nodes_alive", pool="app") == 1
    assert value(families, "lockgate_config_version") == 42
    assert value(families, "lockgate_virtual_server_up", virtual_server="web") == 1
    assert value(families, "lockgate_listeners_failed", virtual_server="web") == 0


def test_a_virtual_server_that_cannot_listen_is_down_with_its_failed_listeners() -> None:
    snap = {"virtual_servers": {
        "bad": {"requests": 0, "state": "error", "listeners": 1, "listeners_failed": 2,
                "error": "virtual_servers.bad: cannot listen on 192.0.2.1:80: Cannot assign"},
        "renewing": {"state": "warning", "listeners": 1, "listeners_failed": 0},
        "off": {"state": "disabled", "listeners": 0, "listeners_failed": 0}}, "pools": {}}
    families = parse(render(snap, 3))
    assert value(families, "lockgate_virtual_server_up", virtual_server="bad") == 0
    assert value(families, "lockgate_listeners_failed", virtual_server="bad") == 2
    assert value(families, "lockgate_virtual_server_up", virtual_server="renewing") == 1
    assert value(families, "lockgate_virtual_server_up", virtual_server="off") == 0


def test_empty_snapshot_still_has_version() -> None:
    families = parse(render({"virtual_servers": {}, "pools": {}}, 0))
    assert value(families, "lockgate_config_version") == 0
    assert families["lockgate_requests_total"] == []


def test_label_values_are_escaped() -> None:
    snap = {"virtual_servers": {'we"ird\\name\n': {"requests": 1}}, "pools": {}}
    text = render(snap, 1)
    families = parse(text)
    assert families["lockgate_requests_total"][0][0]["virtual_server"] == 'we\\"ird\\\\name\\n'
