"""ConfigStore: validation naming the field, whole-config rules, atomic versions, file import."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from lockgate.runtime.config import ConfigError, ConfigNotFound, ConfigStore, read_config_file

POOL = {"properties": {"basic": {"nodes_table": [{"node": "127.0.0.1:8000"},
                                                 {"node": "[::1]:8001", "weight": 3}]}}}
VS = {"properties": {"basic": {"port": 8080, "pool": "web"}}}


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    return ConfigStore(tmp_path)


def test_empty_store(store: ConfigStore) -> None:
    assert store.version == 0
    assert store.list("pools") == []
    config = store.load()
    assert config.version == 0 and config.virtual_servers == {}


def test_put_get_fills_defaults_and_versions_grow(store: ConfigStore, tmp_path: Path) -> None:
    assert store.put("pools", "web", POOL) == 1
    assert store.put("virtual_servers", "front", VS) == 2
    doc = store.get("virtual_servers", "front")["properties"]
    assert doc["basic"]["listen_on_hosts"] == ["0.0.0.0"]
    assert doc["basic"]["protocol"] == "http"
    assert doc["connection"]["max_header_bytes"] == 65536
    assert doc["ssl"]["ssl_decrypt"] is False
    pool = store.get("pools", "web")["properties"]
    assert pool["basic"]["nodes_table"][0] == {"node": "127.0.0.1:8000", "weight": 1,
                                               "state": "active"}
    assert pool["load_balancing"]["algorithm"] == "round_robin"
    config = store.load()
    assert config.version == 2
    assert config.pools["web"].nodes[1].host == "::1" and config.pools["web"].nodes[1].port == 8001
    assert config.virtual_servers["front"].pool == "web"
    assert (tmp_path / "runtime" / "config.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("kind", "document", "field"), [
    ("pools", {"properties": {"basic": {"nodes_table": [{"node": "a:1"}, {"node": "b"}]}}},
     "pools.x.basic.nodes_table[1].node"),
    ("pools", {"properties": {"basic": {"nodes_table": [{"node": "a:1", "weight": 0}]}}},
     "pools.x.basic.nodes_table[0].weight"),
    ("pools", {"properties": {"load_balancing": {"algorithm": "fastest"}}},
     "pools.x.load_balancing.algorithm"),
    ("pools", {"properties": {"basic": {"nodez_table": []}}}, "pools.x.basic.nodez_table"),
    ("pools", {"properties": {"bassic": {}}}, "pools.x.bassic"),
    ("virtual_servers", {"properties": {"basic": {"pool": "web"}}}, "virtual_servers.x.basic.port"),
    ("virtual_servers", {"properties": {"basic": {"port": 70000, "pool": "web"}}},
     "virtual_servers.x.basic.port"),
    ("virtual_servers", {"properties": {"basic": {"port": 1, "pool": "nope"}}},
     "virtual_servers.x.basic.pool"),
    ("virtual_servers", {"properties": {"basic": {"port": 1, "pool": "web"},
                                        "ssl": {"ssl_decrypt": True}}},
     "virtual_servers.x.ssl.cert_file"),
    ("monitors", {"properties": {"http": {"status_regex": "("}}}, "monitors.x.http.status_regex"),
    ("traffic_ip_groups", {"properties": {"basic": {"ipaddresses": ["10.0.0.300"]}}},
     "traffic_ip_groups.x.basic.ipaddresses[0]"),
    ("pools", {"properties": {"basic": {"monitors": ["absent"]}}}, "pools.x.basic.monitors[0]"),
    ("pools", {"props": {}}, "pools.x"),
])
def test_invalid_objects_name_the_field_and_change_nothing(
        store: ConfigStore, kind: str, document: dict, field: str) -> None:
    store.put("pools", "web", POOL)
    before = (store.path.read_bytes(), store.version)
    with pytest.raises(ConfigError) as info:
        store.put(kind, "x", document)
    assert info.value.field == field, info.value
    assert (store.path.read_bytes(), store.version) == before


def test_two_virtual_servers_cannot_share_a_port(store: ConfigStore) -> None:
    store.put("pools", "web", POOL)
    store.put("virtual_servers", "a", VS)
    with pytest.raises(ConfigError) as info:
        store.put("virtual_servers", "b", VS)
    assert info.value.field == "virtual_servers.b.basic.port" and "'a'" in info.value.message
    disabled = {"properties": {"basic": {"port": 8080, "pool": "web", "enabled": False}}}
    store.put("virtual_servers", "b", disabled)


def test_delete_refuses_objects_in_use_and_names_the_user(store: ConfigStore) -> None:
    store.put("monitors", "ping", {"properties": {}})
    store.put("pools", "web", {"properties": {"basic": {"monitors": ["ping"]}}})
    store.put("virtual_servers", "front", VS)
    with pytest.raises(ConfigError, match=r"virtual_servers\.front") as info:
        store.delete("pools", "web")
    assert info.value.field == "pools.web"
    with pytest.raises(ConfigError, match=r"pools\.web"):
        store.delete("monitors", "ping")
    assert store.delete("virtual_servers", "front") == 4
    assert store.delete("pools", "web") == 5
    assert store.delete("monitors", "ping") == 6
    with pytest.raises(ConfigNotFound):
        store.delete("monitors", "ping")
    with pytest.raises(ConfigNotFound):
        store.get("pools", "web")
    with pytest.raises(ConfigNotFound):
        store.list("widgets")


def test_concurrent_writers_never_lose_a_version(store: ConfigStore) -> None:
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(10):
                ConfigStore(store.path.parent.parent).put(
                    "monitors", f"m{i}-{j}", {"properties": {"basic": {"delay": 1 + j}}})
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert store.version == 40 and len(store.list("monitors")) == 40
    assert not [p for p in store.path.parent.iterdir() if p.name.startswith(".config.json.")]


FILE = """
virtual_servers:
  front: {properties: {basic: {port: 8080, pool: web}}}
pools:
  web: {properties: {basic: {nodes_table: [{node: "127.0.0.1:8000"}]}}}
settings: {workers: 3}
"""


def test_import_rule_file_wins_only_when_it_changed(store: ConfigStore, tmp_path: Path) -> None:
    path = tmp_path / "lockgate.yaml"
    path.write_text(FILE)
    assert store.import_file(path) == 1
    assert store.load().workers == 3
    store.put("pools", "extra", {"properties": {}})  # a REST change
    assert store.import_file(path) is None  # same file: the REST change stays
    assert "extra" in store.list("pools")
    path.write_text(FILE + "\n# edited\n")
    assert store.import_file(path) == 3  # edited file wins
    assert store.list("pools") == ["web"]
    assert store.import_file(path, force=True) == 4


def test_json_file_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "c.json"
    good.write_text(json.dumps({"pools": {"p": {"properties": {}}}}))
    assert list(read_config_file(good)["pools"]) == ["p"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(bad)
    bad.write_text("poolz: {}")
    with pytest.raises(ConfigError) as info:
        read_config_file(bad)
    assert info.value.field == "poolz"
    bad.write_text(FILE.replace("8000", "80000"))
    with pytest.raises(ConfigError) as info:
        read_config_file(bad)
    assert info.value.field == "pools.web.basic.nodes_table[0].node"


def test_write_is_atomic_a_crash_leaves_the_old_file(store: ConfigStore,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("pools", "web", POOL)
    before = store.path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.put("pools", "other", POOL)
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert not [p for p in store.path.parent.iterdir() if p.name.startswith(".config.json.")]


@pytest.mark.parametrize(
    ("kind", "name", "doc", "field"),
    [
        ("traffic_ip_groups", "tig", {"properties": {"basic": {"ipaddresses": [False]}}},
         "traffic_ip_groups.tig.basic.ipaddresses[0]"),
        ("traffic_ip_groups", "tig", {"properties": {"basic": {"ipaddresses": [167772161]}}},
         "traffic_ip_groups.tig.basic.ipaddresses[0]"),
        ("pools", "p", {"properties": {"basic": {"nodes_table": [{"node": "h:٨٠"}]}}},
         "pools.p.basic.nodes_table[0].node"),
    ],
)
def test_values_of_the_wrong_type_are_refused(tmp_path: Path, kind: str, name: str,
                                              doc: dict[str, Any], field: str) -> None:
    store = ConfigStore(tmp_path)
    with pytest.raises(ConfigError) as caught:
        store.put(kind, name, doc)
    assert caught.value.field == field


def test_names_with_a_trailing_newline_are_refused(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    with pytest.raises(ConfigError):
        store.put("monitors", "ping\n", {"properties": {"basic": {"type": "connect"}}})


@pytest.mark.parametrize(("field", "value"), [
    ("host_header", "ok.test\r\nX-Injected: 1"), ("host_header", "a\x00"),
    ("host_header", "a b"), ("path", "/x HTTP/1.0\r\n"), ("path", "health")])
def test_monitor_request_fields_cannot_carry_line_breaks_or_spaces(
        tmp_path: Path, field: str, value: str) -> None:
    """A config file is checked like a REST PUT: nothing that could split the check's request."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"monitors": {"m": {"properties": {"http": {field: value}}}}}))
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert caught.value.field == f"monitors.m.http.{field}"
