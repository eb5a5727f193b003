"""The OpenAPI document: valid, in step with the store's schema, and every operation routed.

Routing is checked without sockets: the REST handler is called with requests
built for each documented path and method, and must answer with a documented
status (the live schemathesis run is tests/integration/test_api_schemathesis.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import schemathesis

from lockgate.passwords import hash_password
from lockgate.runtime.api.auth import Authenticator
from lockgate.runtime.api.http import Request
from lockgate.runtime.api.openapi import FIELDS, SPACE, document
from lockgate.runtime.api.routes import RestApi
from lockgate.runtime.config.schema import SCHEMA
from lockgate.runtime.config.store import ConfigStore


def test_document_loads_in_schemathesis() -> None:
    schema = schemathesis.openapi.from_dict(document())
    results = list(schema.get_all_operations())
    errors = [r for r in results if not isinstance(r, schemathesis.core.result.Ok)]
    assert errors == []
    assert len(results) >= 25


def test_every_store_setting_is_documented_and_nothing_else() -> None:
    for kind, sections in SCHEMA.items():
        assert set(FIELDS[kind]) == set(sections), kind
        for section, fields in sections.items():
            assert set(FIELDS[kind][section]) == set(fields), f"{kind}.{section}"
    assert set(FIELDS) == set(SCHEMA)


def test_space_class_is_exactly_python_whitespace() -> None:
    python_space = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    assert python_space == SPACE


def test_every_documented_operation_is_routed(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": {"admin": {"hash": hash_password("pw"),
                                                     "role": "admin"}}}))
    store = ConfigStore(tmp_path)
    store.put("pools", "web", {"properties": {}})
    snapshot = {"virtual_servers": {"web": {"requests": 1}}, "pools": {"web": {"nodes": {}}}}
    doc = document()
    api = RestApi(store, Authenticator(users), lambda: snapshot, doc)
    auth = {"authorization": "Basic YWRtaW46cHc="}  # admin:pw

    async def call(method: str, path: str, body: bytes = b"") -> int:
        headers = {**auth, "content-type": "application/json"} if body else auth
        response = await api(Request(method, path, path, "", headers, body, "127.0.0.1"))
        return response.status

    async def check_all() -> list[str]:
        problems = []
        for template, item in doc["paths"].items():
            path = template.replace("{name}", "web")
            for method, op in item.items():
                if method == "parameters":
                    continue
                body = json.dumps({"properties": {}}).encode() if method == "put" else b""
                if "virtual_servers" in path and method == "put":
                    body = json.dumps({"properties": {"basic": {"port": 80, "pool": "web"}}}
                                      ).encode()
                got = await call(method.upper(), path, body)
                if str(got) not in op["responses"] or got == 415:
                    problems.append(f"{method.upper()} {path}: {got}")
        return problems

    assert asyncio.run(check_all()) == []


def test_error_and_children_shapes_are_referenced() -> None:
    text = json.dumps(document())
    for name in ("Children", "Error", "Unauthorized", "TooManyRequests"):
        assert re.search(rf'"#/components/(schemas|responses)/{name}"', text)


def _walk(node: Any) -> list[Any]:
    out = [node]
    if isinstance(node, dict):
        for value in node.values():
            out += _walk(value)
    elif isinstance(node, list):
        for value in node:
            out += _walk(value)
    return out


def test_every_ref_resolves() -> None:
    doc = document()
    for node in _walk(doc):
        if isinstance(node, dict) and "$ref" in node:
            target: Any = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            assert target


def test_host_checks_and_management_ports_are_in_the_document() -> None:
    """What the store refuses on its own, the document says, so generated valid data passes."""
    from lockgate.runtime.config.schema import HOST_HEADER_RE, MONITOR_PATH_RE
    from lockgate.runtime.listen import MANAGEMENT_PORTS

    http = FIELDS["monitors"]["http"]
    assert http["host_header"]["pattern"] == f"^{HOST_HEADER_RE.pattern}$"
    assert http["path"]["pattern"] == f"^{MONITOR_PATH_RE.pattern}$"
    for value in ("a\r\nb", "a b", "", "x.test:80", "[::1]"):
        assert bool(re.fullmatch(HOST_HEADER_RE, value)) == bool(
            re.search(http["host_header"]["pattern"], value)), value
    port = FIELDS["virtual_servers"]["basic"]["port"]
    assert port["not"] == {"enum": list(MANAGEMENT_PORTS)}
    put = document()["paths"]["/api/tm/1.0/config/active/pools/{name}"]["put"]["responses"]
    assert "415" in put and "warnings" in put["201"]["content"]["application/json"][
        "schema"]["properties"]
