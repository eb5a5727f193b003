"""The REST API's OpenAPI 3.0 document, written by hand to match exactly what is served.

Served at ``/api/tm/1.0/openapi.json`` and checked against the live server by
schemathesis (tests/integration/test_api_schemathesis.py). The sections of each
kind's ``properties`` come from :data:`lockgate.runtime.config.schema.SCHEMA`
so the document cannot list a setting the store does not know; the per-field
rules (types, ranges, choices) are enforced by the store and reported as 422
naming the field.
"""

from __future__ import annotations

import copy
from typing import Any

from lockgate import __version__
from lockgate.runtime.config.schema import (
    HOST_HEADER_RE,
    KINDS,
    MONITOR_PATH_RE,
    NAME_RE,
    SCHEMA,
)
from lockgate.runtime.listen import MANAGEMENT_PORTS
from lockgate.runtime.system.rest import OPENAPI_PATHS as SYSTEM_PATHS
from lockgate.runtime.system.rest import PREFIX as SYSTEM

ROOT = "/api/tm/1.0"
STATS = f"{ROOT}/status/local_tm/statistics"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response = _json(_ref("Error"), description)
    if headers:
        response["headers"] = headers
    return response


COMMON_RESPONSES: dict[str, Any] = {
    "Unauthorized": _error(
        "No, wrong or not-yet-configured credentials.",
        {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}),
    "TooManyRequests": _error(
        "Too many failed logins from this client address; wait Retry-After seconds.",
        {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}, "required": True}}),
    "NotFound": _error("No such resource."),
}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    all_responses = dict(responses)
    all_responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
    all_responses["429"] = {"$ref": "#/components/responses/TooManyRequests"}
    return {"summary": summary, "responses": all_responses, **extra}


def _index(summary: str) -> dict[str, Any]:
    return {"get": _op(summary, {"200": _json(_ref("Children"), "Child resources.")})}


def _int(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def _seconds(lo: float, hi: float) -> dict[str, Any]:
    return {"type": "number", "minimum": lo, "maximum": hi, "description": "Seconds."}


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _record(required: list[str], **fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": fields}


BOOL: dict[str, Any] = {"type": "boolean"}
STRING: dict[str, Any] = {"type": "string"}


# Exactly the characters ``str.isspace()`` accepts, which the store refuses in
# host names. Spelled out because ECMA's and Python-regex ``\\s`` differ from it
# (U+001C..U+001F, U+0085); tests/unit/test_api_openapi.py checks the list.
SPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
         "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
HOST: dict[str, Any] = {"type": "string", "pattern": f"^[^{SPACE}]+$",
                        "description": "IP address or host name."}
OBJECT_NAME: dict[str, Any] = {"type": "string", "pattern": f"^{NAME_RE.pattern}$"}
PORT_RE = r"0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
NODE: dict[str, Any] = {"type": "string", "pattern": rf"^(?!\[\]:)[^{SPACE}]+:{PORT_RE}$",
                        "description": "host:port, or [IPv6]:port."}
IP: dict[str, Any] = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}

# Every setting the store accepts, with the store's own rules (schema.SCHEMA).
# tests/unit/test_api_openapi.py fails when the two lists drift apart.
FIELDS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "virtual_servers": {
        "basic": {
            "protocol": _enum("http", "tcp"),
            "port": {**_int(1, 65535), "not": {"enum": list(MANAGEMENT_PORTS)},
                     "description": "Not a management port (REST API, Admin UI, cluster "
                                    "control; also those serve was started with: 422)."},
            "listen_on_hosts": {**_array(HOST), "minItems": 1,
                                "description": "IP addresses must be on this host or be a "
                                               "traffic IP (422 otherwise); host names are "
                                               "resolved when listening."},
            "pool": OBJECT_NAME,
            "enabled": BOOL,
            "max_connections": {**_int(0, 10_000_000), "description": "0: no limit."},
        },
        "ssl": {
            "ssl_decrypt": BOOL,
            "cert_file": STRING,
            "key_file": STRING,
            "sni": _array(_record(["host", "cert_file", "key_file"], host=HOST,
                                  cert_file=STRING, key_file=STRING)),
        },
        "connection": {
            "timeout": _seconds(0.1, 86400),
            "connect_timeout": _seconds(0.1, 3600),
            "request_timeout": _seconds(0.1, 3600),
            "max_header_bytes": _int(1024, 1 << 24),
        },
        "http": {"add_x_forwarded_for": BOOL, "add_x_forwarded_proto": BOOL},
    },
    "pools": {
        "basic": {
            "nodes_table": _array(_record(["node"], node=NODE, weight=_int(1, 100),
                                          state=_enum("active", "draining", "disabled"))),
            "monitors": _array(OBJECT_NAME),
            "max_connections_per_node": {**_int(0, 10_000_000), "description": "0: no limit."},
            "node_connection_attempts": _int(1, 100),
            "passive_monitoring": BOOL,
            "node_fail_threshold": _int(1, 1000),
            "node_fail_time": _seconds(0.1, 86400),
        },
        "load_balancing": {
            "algorithm": _enum("round_robin", "weighted_round_robin", "least_connections",
                               "random", "ip_hash"),
        },
        "connection": {
            "max_idle_connections_pernode": _int(0, 100_000),
            "idle_timeout": _seconds(0.1, 86400),
        },
    },
    "monitors": {
        "basic": {
            "type": _enum("connect", "http"),
            "delay": _seconds(0.05, 86400),
            "timeout": _seconds(0.05, 3600),
            "failures": _int(1, 1000),
            "rise": _int(1, 1000),
        },
        "http": {"path": {"type": "string", "pattern": f"^{MONITOR_PATH_RE.pattern}$"},
                 "host_header": {"type": "string", "pattern": f"^{HOST_HEADER_RE.pattern}$",
                                 "description": "Host header of the check; empty: the node's "
                                                "address."},
                 # Checked with Python's re, whose dialect differs a little from ECMA's.
                 "status_regex": {"type": "string", "format": "regex",
                                  "description": "A Python regular expression."}},
    },
    "traffic_ip_groups": {
        "basic": {"ipaddresses": _array(IP), "machines": _array(HOST), "enabled": BOOL,
                  "passive_machines": _array(HOST), "keeptogether": BOOL},
    },
}


def _properties_schema(kind: str) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    required_sections: list[str] = []
    for section, fields in SCHEMA[kind].items():
        required = [name for name, spec in fields.items() if spec.required]
        sections[section] = {"type": "object", "additionalProperties": False,
                             "properties": FIELDS[kind][section]}
        if required:
            sections[section]["required"] = required
            required_sections.append(section)
    properties: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                  "properties": sections}
    if required_sections:
        properties["required"] = required_sections
    return {"type": "object", "additionalProperties": False, "required": ["properties"],
            "properties": {"properties": properties}}


NAME_PARAM = {"name": "name", "in": "path", "required": True,
              "description": "Object name: letters, digits and . _ ~ - (up to 128).",
              "schema": {"type": "string", "pattern": f"^{NAME_RE.pattern}$"}}


def _config_paths(kind: str) -> dict[str, Any]:
    doc = f"{kind.title().replace('_', '')}Document"
    base = f"{ROOT}/config/active/{kind}"
    item = {
        "parameters": [NAME_PARAM],
        "get": _op(f"Read one of {kind}", {
            "200": _json(_ref(doc), "The object with every default filled in."),
            "404": {"$ref": "#/components/responses/NotFound"}}),
        "put": _op(f"Create or replace one of {kind}", {
            "200": _json(_stored(kind), "Replaced; the stored object."),
            "201": _json(_stored(kind), "Created; the stored object."),
            "400": _error("The body is not JSON."),
            "413": _error("The body is over 1 MiB."),
            "415": _error("The body is not Content-Type: application/json."),
            "409": _error("The object is valid on its own but does not fit the rest of the "
                          "configuration (e.g. names a missing pool, a port already in use, "
                          "TLS offload without a certificate); error_info.field names the "
                          "setting. Nothing was stored."),
            "422": _error("The object is invalid (unknown setting, wrong type, out of range, "
                          "required setting missing; for a virtual server also a management "
                          "port or an IP address this host does not have); error_info.field "
                          "names the setting. Nothing was stored.")},
            requestBody={"required": True,
                         "content": {"application/json": {"schema": _ref(doc)}}}),
        "delete": _op(f"Delete one of {kind}", {
            "204": {"description": "Deleted."},
            "404": {"$ref": "#/components/responses/NotFound"},
            "409": _error("Still used by another object, named in error_text and "
                          "error_info.field.")}),
    }
    listing = {"get": _op(f"List {kind}", {"200": _json(_ref("Children"), "Names and links.")})}
    return {base: listing, f"{base}/{{name}}": item}


def _stored(kind: str) -> dict[str, Any]:
    """A PUT's answer: the stored document, plus warnings when there are any."""
    schema = _properties_schema(kind)
    schema["properties"] = {**schema["properties"], "warnings": {
        "type": "array", "items": {"type": "string"},
        "description": "Accepted, but not in effect on this host yet (e.g. a traffic IP "
                       "not raised here)."}}
    return schema


def _stats_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {STATS: _index("Kinds with statistics.")}
    for kind, schema in (("virtual_servers", "VirtualServerStatistics"),
                         ("pools", "PoolStatistics")):
        paths[f"{STATS}/{kind}"] = _index(f"{kind} with statistics.")
        paths[f"{STATS}/{kind}/{{name}}"] = {
            "parameters": [NAME_PARAM],
            "get": _op(f"Counters of one of {kind}", {
                "200": _json({"type": "object", "required": ["statistics"],
                              "properties": {"statistics": _ref(schema)}}, "Counters."),
                "404": {"$ref": "#/components/responses/NotFound"}})}
    return paths


def _system_paths() -> dict[str, Any]:
    """lockgate.runtime.system.rest's fragment, with this document's errors and shapes."""
    paths: dict[str, Any] = {SYSTEM: _index("Upgrade, rollback and installed versions.")}
    paths[SYSTEM]["get"]["responses"]["404"] = _error("Not an A/B appliance.")
    for path, item in copy.deepcopy(SYSTEM_PATHS).items():
        for method, op in item.items():
            responses = op["responses"]
            for status, response in responses.items():
                if "content" in response:
                    continue
                if int(status) >= 400:
                    responses[status] = _error(response["description"])
                else:
                    shape = _array({"type": "object"}) if path.endswith("/versions") \
                        else {"type": "object"}
                    responses[status] = _json(shape, response["description"])
            # Every system resource answers 404 on a host that is not an A/B appliance.
            responses.setdefault("404", _error("Not an A/B appliance."))
            if method in ("put", "post"):
                responses.setdefault("400", _error("Bad request (not JSON, wrong field type)."))
            if path.endswith("/upgrade") and method == "put":
                responses.setdefault("408", _error(
                    "The body stopped arriving at 64 KiB/s (averaged over 10 s)."))
                responses.setdefault("409", _error("Another upgrade is in progress."))
            item[method] = _op(op["summary"], responses,
                               **{k: v for k, v in op.items()
                                  if k not in ("summary", "responses")})
        paths[path] = item
    return paths


def _nullable(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    out = {**schema, "nullable": True}
    if description:
        out["description"] = description
    return out


_STRINGS = _array(STRING)
CLUSTER_MEMBER: dict[str, Any] = {
    "type": "object",
    "required": ["name", "address", "fingerprint", "this", "state", "alive", "last_heard_s",
                 "role", "groups", "holding"],
    "properties": {
        "name": STRING, "address": STRING, "admin_port": _int(1, 65535),
        "control_port": _int(1, 65535),
        "fingerprint": {"type": "string", "description": "SHA-1 of its Admin certificate."},
        "location": _nullable(STRING),
        "this": {"type": "boolean", "description": "The member that answered."},
        "state": {**_enum("self", "alive", "dead", "leaving", "not_heard", "unknown"),
                  "description": "dead: silent for monitor_timeout; leaving: said it stops "
                                 "(or its guard did, the runtime having died); not_heard: "
                                 "silent since this runtime started; unknown: this runtime "
                                 "is not running."},
        "alive": _nullable(BOOL, "null: unknown (the runtime is not running)."),
        "last_heard_s": _nullable({"type": "number", "minimum": 0},
                                  "Seconds since its last good heartbeat."),
        "role": {**_enum("active", "passive", "none"),
                 "description": "In any traffic IP group's machines (active), only in "
                                "passive_machines (passive), or in none."},
        "groups": _STRINGS,
        "serving": {**_STRINGS, "description": "Groups it says it can serve now."},
        "holding": {**_STRINGS, "description": "Traffic IPs raised on it now."}}}
CLUSTER_STATUS: dict[str, Any] = {
    "type": "object",
    "required": ["clustered", "member", "epoch", "running", "members", "traffic_ip_groups"],
    "properties": {
        "clustered": {"type": "boolean", "description": "false: stand-alone."},
        "member": _nullable(STRING, "This member's name."),
        "epoch": _nullable({"type": "integer", "minimum": 0},
                           "Membership version (up by one per change)."),
        "running": {"type": "boolean",
                    "description": "The fault-tolerance service runs (liveness is known)."},
        "age_s": _nullable({"type": "number", "minimum": 0}),
        "last_written_s": {"type": "number", "minimum": 0},
        "healthy": _nullable(BOOL, "false: this member serves no traffic IP group "
                                   "(workers or all pools down)."),
        "settings": _nullable({"type": "object", "properties": {
            "monitor_interval": {"type": "number"}, "monitor_timeout": {"type": "number"},
            "child_timeout": {"type": "number"}, "autofailback": BOOL}}),
        "members": _array(CLUSTER_MEMBER),
        "traffic_ip_groups": _array({
            "type": "object", "required": ["name", "ips"], "properties": {
                "name": STRING, "enabled": BOOL, "keeptogether": BOOL,
                "machines": _STRINGS, "passive_machines": _STRINGS,
                "ips": _array({"type": "object", "required": ["ip", "held_by", "holders"],
                               "properties": {
                                   "ip": STRING,
                                   "held_by": _nullable(STRING, "null: nobody, or several "
                                                                "(see holders)."),
                                   "holders": _STRINGS}})}}),
        "dropped_packets": {"type": "object",
                            "additionalProperties": {"type": "integer", "minimum": 0},
                            "description": "Heartbeats ignored, by reason."}}}


def _count(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "description": description}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/tm": _index("API versions."),
        ROOT: _index("Top-level resources."),
        f"{ROOT}/config": _index("Configuration sets (only 'active')."),
        f"{ROOT}/config/active": _index("Object kinds."),
    }
    for kind in KINDS:
        paths.update(_config_paths(kind))
    paths[f"{ROOT}/status"] = _index("Status sources.")
    paths[f"{ROOT}/status/local_tm"] = _index("This traffic manager's status.")
    paths.update(_stats_paths())
    paths[f"{ROOT}/status/local_tm/licence"] = {"get": _op("The licence in force.", {
        "200": _json({"type": "object", "required": ["licence"], "properties": {"licence": {
            "type": "object", "properties": {
                "accepted": {"type": "boolean", "description": "false: nothing is proxied"},
                "proxying": {"type": "boolean"},
                "edition": {"type": "string"},
                "bandwidth_mbit_s": _count("Total proxied throughput allowed; 0: no limit."),
                "max_cluster_size": _count("Cluster members allowed; 0: no limit."),
                "expires": {"type": "string", "nullable": True},
                "serial": {"type": "string", "nullable": True},
                "message": {"type": "string", "description": "Why (empty: all is well)."}}}}},
            "The licence, its limits and why.")})}
    paths[f"{ROOT}/status/cluster"] = {"get": _op(
        "Fault tolerance: the members, whether each is heard from, who holds each traffic IP.",
        {"200": _json({"type": "object", "required": ["cluster"],
                       "properties": {"cluster": _ref("ClusterStatus")}},
                      "The cluster as this traffic manager sees it.")})}
    paths.update(_system_paths())
    paths[f"{ROOT}/openapi.json"] = {"get": _op("This document.", {
        "200": _json({"type": "object"}, "OpenAPI 3.0 document.")})}
    paths["/metrics"] = {"get": _op("Prometheus metrics (text format 0.0.4).", {
        "200": {"description": "Metrics.",
                "content": {"text/plain": {"schema": {"type": "string"}}}}})}

    schemas: dict[str, Any] = {
        "Children": {"type": "object", "required": ["children"], "properties": {
            "children": {"type": "array", "items": {
                "type": "object", "required": ["name", "href"],
                "properties": {"name": {"type": "string"}, "href": {"type": "string"}}}}}},
        "Error": {"type": "object", "required": ["error_id", "error_text"], "properties": {
            "error_id": {"type": "string"},
            "error_text": {"type": "string"},
            "error_info": {"type": "object", "properties": {"field": {"type": "string"}}}}},
        "VirtualServerStatistics": {"type": "object", "properties": {
            "requests": _count("Requests (HTTP) or connections (TCP) handled."),
            "bytes_in": _count("Bytes from clients."),
            "bytes_out": _count("Bytes to clients."),
            "connections_current": _count("Connections open now."),
            "connections_total": _count("Connections accepted."),
            "errors": _count("Requests or connections that failed."),
            "state": {"type": "string", "enum": ["ok", "warning", "error", "disabled"],
                      "description": "ok: every listener open; warning: open, but a newer "
                                     "certificate could not be loaded; error: a listener is "
                                     "not open (address not on the host, certificate that "
                                     "cannot be loaded, management port)."},
            "error": {"type": "string", "nullable": True,
                      "description": "Why, when state is warning or error."},
            "listeners": _count("Listeners open (in every worker)."),
            "listeners_failed": _count("Listeners that could not be opened.")}},
        "PoolStatistics": {"type": "object", "required": ["nodes"], "properties": {
            "nodes": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {
                    "state": {"type": "string", "enum": ["alive", "draining", "dead"]},
                    "connections": _count("Connections made to the node."),
                    "requests": _count("Requests sent to the node."),
                    "failures": _count("Failed connections or checks.")}}}}},
    }
    schemas["ClusterStatus"] = CLUSTER_STATUS
    for kind in KINDS:
        schemas[f"{kind.title().replace('_', '')}Document"] = _properties_schema(kind)

    return {
        "openapi": "3.0.3",
        "info": {"title": "lockgate traffic manager REST API", "version": __version__,
                 "description": "Configuration and status of one lockgate traffic manager. "
                                "HTTPS on port 9070, HTTP Basic auth (the appliance's admin "
                                "users). Bodies are JSON, at most 1 MiB (except an upgrade "
                                "bundle's, streamed to disk). A trailing slash on any path is "
                                "accepted."},
        "servers": [{"url": "/"}],
        "security": [{"basic": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "responses": COMMON_RESPONSES,
            "schemas": schemas,
        },
    }
