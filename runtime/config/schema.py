"""The configuration's shape: kinds, sections, fields, defaults and checks.

Documents look like the reference product's REST objects, so users' scripts
translate: ``{"properties": {"basic": {...}, "<section>": {...}}}``. This
module only knows shapes and single-field rules; cross-object rules (a
virtual server naming a missing pool) live in :mod:`.model`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ("virtual_servers", "pools", "monitors", "traffic_ip_groups")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")  # use fullmatch


class ConfigError(ValueError):
    """A configuration a user must fix. ``field`` is a dotted path such as
    ``pools.web.basic.nodes_table[1].node``; the REST layer names it in its 4xx."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


Check = Callable[[str, Any], Any]  # (field path, value) -> normalised value, or raise


@dataclass(frozen=True)
class Field:
    default: Any
    check: Check
    required: bool = False


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {value!r}")
    return value


def _int(lo: int, hi: int) -> Check:
    def check(path: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected a whole number, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(path, f"must be between {lo} and {hi}, got {value}")
        return value
    return check


def _number(lo: float, hi: float) -> Check:
    def check(path: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number of seconds, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(path, f"must be between {lo} and {hi}, got {value}")
        return float(value)
    return check


def _str(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {value!r}")
    return value


def _choice(*choices: str) -> Check:
    def check(path: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(choices)}; got {value!r}")
        return str(value)
    return check


def _list(item: Check) -> Check:
    def check(path: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {value!r}")
        return [item(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return check


def _name(path: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ConfigError(path, f"expected an object name (letters, digits, . _ ~ -), got {value!r}")
    return value


def _host(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(path, f"expected an IP address or host name, got {value!r}")
    return value


def _ip(path: str, value: Any) -> str:
    # ip_address() also takes ints (and so bools): JSON false must not become 0.0.0.0
    if not isinstance(value, str):
        raise ConfigError(path, f"expected an IP address, got {value!r}")
    try:
        return str(ipaddress.ip_address(value))
    except (ValueError, TypeError):
        raise ConfigError(path, f"expected an IP address, got {value!r}") from None


def split_node(path: str, value: Any) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    if not isinstance(value, str):
        raise ConfigError(path, f"expected \"host:port\", got {value!r}")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(path, f"expected \"host:port\" with a port 1-65535, got {value!r}")
    _host(path, host)
    return host, int(port)


def _node(path: str, value: Any) -> str:
    split_node(path, value)
    return str(value)


def _regex(path: str, value: Any) -> str:
    _str(path, value)
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(path, f"not a valid regular expression: {exc}") from None
    return str(value)


# A Host header value (RFC 9110 7.2: uri-host [":" port]): the characters of a
# reg-name, an IPv4 address or a bracketed IPv6 literal. Nothing that could end
# the header line (CR, LF), or that a node could read differently (NUL, spaces,
# quotes, "/", "@").
HOST_HEADER_RE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%:\[\]-]*")
# A monitor's request target in origin form: "/" then visible ASCII, no spaces.
MONITOR_PATH_RE = re.compile(r"(/[!-~]*)?")


def _pattern(regex: re.Pattern[str], expected: str) -> Check:
    def check(path: str, value: Any) -> str:
        _str(path, value)
        if not regex.fullmatch(value):
            raise ConfigError(path, f"expected {expected}, got {value!r}")
        return str(value)
    return check


def _record(fields: dict[str, Field]) -> Check:
    """A list item that is itself an object (nodes_table rows, sni entries)."""
    def check(path: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected an object, got {value!r}")
        return fill_section(path, fields, value)
    return check


def fill_section(path: str, fields: dict[str, Field], given: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in given:
        if key not in fields:
            raise ConfigError(f"{path}.{key}", f"unknown setting (known: {', '.join(fields)})")
    for key, spec in fields.items():
        if key in given:
            out[key] = spec.check(f"{path}.{key}", given[key])
        elif spec.required:
            raise ConfigError(f"{path}.{key}", "required")
        else:
            default = spec.default
            out[key] = list(default) if isinstance(default, list) else default
    return out


NODE_ROW = {
    "node": Field(None, _node, required=True),
    "weight": Field(1, _int(1, 100)),
    "state": Field("active", _choice("active", "draining", "disabled")),
}
SNI_ROW = {
    "host": Field(None, _host, required=True),
    "cert_file": Field(None, _str, required=True),
    "key_file": Field(None, _str, required=True),
}

SCHEMA: dict[str, dict[str, dict[str, Field]]] = {
    "virtual_servers": {
        "basic": {
            "protocol": Field("http", _choice("http", "tcp")),
            "port": Field(None, _int(1, 65535), required=True),
            "listen_on_hosts": Field(["0.0.0.0"], _list(_host)),
            "pool": Field(None, _name, required=True),
            "enabled": Field(True, _bool),
            "max_connections": Field(0, _int(0, 10_000_000)),  # 0: no limit
        },
        "ssl": {
            "ssl_decrypt": Field(False, _bool),
            "cert_file": Field("", _str),
            "key_file": Field("", _str),
            "sni": Field([], _list(_record(SNI_ROW))),
        },
        "connection": {
            "timeout": Field(40.0, _number(0.1, 86400)),  # idle, like vTM's default
            "connect_timeout": Field(10.0, _number(0.1, 3600)),
            "request_timeout": Field(30.0, _number(0.1, 3600)),  # to receive a request's head
            "max_header_bytes": Field(65536, _int(1024, 1 << 24)),
        },
        "http": {
            "add_x_forwarded_for": Field(True, _bool),
            "add_x_forwarded_proto": Field(True, _bool),
        },
    },
    "pools": {
        "basic": {
            "nodes_table": Field([], _list(_record(NODE_ROW))),
            "monitors": Field([], _list(_name)),
            "max_connections_per_node": Field(0, _int(0, 10_000_000)),  # 0: no limit
            "node_connection_attempts": Field(3, _int(1, 100)),
            "passive_monitoring": Field(True, _bool),
            "node_fail_threshold": Field(3, _int(1, 1000)),  # consecutive failures
            "node_fail_time": Field(10.0, _number(0.1, 86400)),  # rest before a retry
        },
        "load_balancing": {
            "algorithm": Field("round_robin", _choice(
                "round_robin", "weighted_round_robin", "least_connections", "random", "ip_hash")),
        },
        "connection": {
            "max_idle_connections_pernode": Field(50, _int(0, 100_000)),
            "idle_timeout": Field(20.0, _number(0.1, 86400)),
        },
    },
    "monitors": {
        "basic": {
            "type": Field("connect", _choice("connect", "http")),
            "delay": Field(3.0, _number(0.05, 86400)),
            "timeout": Field(3.0, _number(0.05, 3600)),
            "failures": Field(3, _int(1, 1000)),
            "rise": Field(2, _int(1, 1000)),
        },
        "http": {
            "path": Field("/", _pattern(MONITOR_PATH_RE, 'a path starting with "/", '
                                                         "visible ASCII without spaces")),
            "host_header": Field("", _pattern(HOST_HEADER_RE, "a host name or address with an "
                                                              "optional :port (no spaces or "
                                                              "control characters)")),
            "status_regex": Field("^[234][0-9][0-9]$", _regex),
        },
    },
    "traffic_ip_groups": {
        "basic": {
            "ipaddresses": Field([], _list(_ip)),
            "machines": Field([], _list(_host)),
            "enabled": Field(True, _bool),
            # members that raise the IPs only while every member of "machines" is down
            "passive_machines": Field([], _list(_host)),
            "keeptogether": Field(False, _bool),  # all the group's IPs on one member
        },
    },
}

SETTINGS: dict[str, Field] = {
    "workers": Field(0, _int(0, 256)),  # 0: one per CPU
    # Fault tolerance (the reference product's flipper! settings; docs/cluster.md):
    # heartbeat period and the silence after which a member counts as failed, in ms.
    "monitor_interval": Field(500, _int(50, 60000)),
    "monitor_timeout": Field(1500, _int(100, 600000)),
    "child_timeout": Field(5000, _int(100, 600000)),  # ms a dead worker may go unreplaced
    "autofailback": Field(False, _bool),
    "verbose": Field(False, _bool),
}


def fill_document(kind: str, name: str, document: Any) -> dict[str, Any]:
    """Check one ``{"properties": ...}`` document and fill in every default."""
    path = f"{kind}.{name}"
    if kind not in SCHEMA:
        raise ConfigError(kind, f"unknown kind (known: {', '.join(KINDS)})")
    _name(path, name)
    if not isinstance(document, dict) or set(document) - {"properties"}:
        raise ConfigError(path, 'expected {"properties": {...}}')
    props = document.get("properties", {})
    if not isinstance(props, dict):
        raise ConfigError(f"{path}.properties", "expected an object of sections")
    sections = SCHEMA[kind]
    out: dict[str, Any] = {}
    for section in props:
        if section not in sections:
            raise ConfigError(f"{path}.{section}",
                              f"unknown section (known: {', '.join(sections)})")
    for section, fields in sections.items():
        given = props.get(section, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{path}.{section}", "expected an object")
        out[section] = fill_section(f"{path}.{section}", fields, given)
    return {"properties": out}


def fill_settings(given: Any) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise ConfigError("settings", "expected an object")
    return fill_section("settings", SETTINGS, given)
