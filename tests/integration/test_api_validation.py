"""REST refusals for objects that cannot work on this host, and for bodies that are not JSON.

Over real HTTPS on loopback (the harness of test_api_rest.py). Each refused
PUT must leave the store exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api_support import PASSWORD, Running, basic, running, write_users

from lockgate.paths import StatePaths
from lockgate.runtime import status
from lockgate.runtime.listen import save_reserved_ports

CONFIG = "/api/tm/1.0/config/active"
POOL = {"properties": {"basic": {"nodes_table": [{"node": "127.0.0.1:8080"}]}}}
NOT_ON_HOST = "192.0.2.1"  # TEST-NET-1


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    write_users(tmp_path)
    with running(tmp_path) as srv:
        assert srv.api("PUT", f"{CONFIG}/pools/web", POOL).status == 201
        yield srv


def store_bytes(state_dir: Path) -> bytes:
    return (StatePaths(state_dir).runtime / "config.json").read_bytes()


def vserver(port: int, *hosts: str) -> dict:
    basic_section: dict = {"port": port, "pool": "web"}
    if hosts:
        basic_section["listen_on_hosts"] = list(hosts)
    return {"properties": {"basic": basic_section}}


def refused(server: Running, path: str, document: dict, field: str, says: str) -> None:
    before = store_bytes(server.state_dir)
    reply = server.api("PUT", path, document)
    assert reply.status == 422, reply.body
    error = reply.json()
    assert error["error_id"] == "config.invalid"
    assert error["error_info"]["field"] == field
    assert says in error["error_text"], error
    assert store_bytes(server.state_dir) == before


@pytest.mark.parametrize("port", [9070, 9080, 9090])
def test_management_ports_are_refused_naming_the_field(server: Running, port: int) -> None:
    refused(server, f"{CONFIG}/virtual_servers/site", vserver(port),
            "virtual_servers.site.basic.port", f"{port} is a management port")


def test_the_ports_serve_was_started_with_are_refused_too(server: Running) -> None:
    save_reserved_ports(server.state_dir, [9070, 9080, 9090, 18443, 18444])  # as serve does
    refused(server, f"{CONFIG}/virtual_servers/site", vserver(18444),
            "virtual_servers.site.basic.port", "18444 is a management port")
    assert server.api("PUT", f"{CONFIG}/virtual_servers/site", vserver(18445)).status == 201


def test_an_address_not_on_the_host_is_refused(server: Running) -> None:
    refused(server, f"{CONFIG}/virtual_servers/site", vserver(18080, "127.0.0.1", NOT_ON_HOST),
            "virtual_servers.site.basic.listen_on_hosts[1]",
            f"{NOT_ON_HOST} is not an address of this host")
    refused(server, f"{CONFIG}/virtual_servers/site", vserver(18080, "2001:db8::1"),
            "virtual_servers.site.basic.listen_on_hosts[0]", "not an address of this host")
    # wildcards, addresses the host has, and host names (resolved by the workers) pass
    for hosts in (("0.0.0.0",), ("::",), ("127.0.0.1", "::1"), ("localhost",)):
        reply = server.api("PUT", f"{CONFIG}/virtual_servers/site", vserver(18080, *hosts))
        assert reply.status in (200, 201), (hosts, reply.body)
        assert "warnings" not in reply.json()


def test_a_traffic_ip_not_raised_here_is_accepted_with_a_warning(server: Running) -> None:
    tip = {"properties": {"basic": {"ipaddresses": [NOT_ON_HOST]}}}
    assert server.api("PUT", f"{CONFIG}/traffic_ip_groups/front", tip).status == 201
    reply = server.api("PUT", f"{CONFIG}/virtual_servers/site", vserver(18080, NOT_ON_HOST))
    assert reply.status == 201, reply.body
    document = reply.json()
    (warning,) = document["warnings"]
    assert warning.startswith("virtual_servers.site.basic.listen_on_hosts[0]: 192.0.2.1 is a "
                              "traffic IP not raised on this traffic manager")
    stored = server.api("GET", f"{CONFIG}/virtual_servers/site").json()
    assert "warnings" not in stored  # a note on the answer, never part of the object
    assert stored["properties"]["basic"]["listen_on_hosts"] == [NOT_ON_HOST]


@pytest.mark.parametrize("host_header", ["a\r\nX-Injected: 1", "a\nb", "a\x00b", "a b",
                                         "a/b", "user@host", "\u00e9.test"])
def test_monitor_host_header_with_control_or_non_token_characters_is_422(
        server: Running, host_header: str) -> None:
    refused(server, f"{CONFIG}/monitors/check",
            {"properties": {"basic": {"type": "http"}, "http": {"host_header": host_header}}},
            "monitors.check.http.host_header", "expected a host name or address")


def test_monitor_host_header_and_path_that_are_fine(server: Running) -> None:
    for host_header, path in (("", "/"), ("www.example.com", "/health?full=1"),
                              ("10.0.0.1:8080", "/a%20b"), ("[2001:db8::1]:80", "")):
        reply = server.api("PUT", f"{CONFIG}/monitors/check", {"properties": {
            "basic": {"type": "http"}, "http": {"host_header": host_header, "path": path}}})
        assert reply.status in (200, 201), reply.body


def test_monitor_path_with_spaces_or_line_breaks_is_422(server: Running) -> None:
    refused(server, f"{CONFIG}/monitors/check",
            {"properties": {"http": {"path": "/ HTTP/1.1\r\nHost: evil"}}},
            "monitors.check.http.path", 'expected a path starting with "/"')


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", None])
def test_bodies_that_are_not_declared_json_are_415(server: Running,
                                                   content_type: str | None) -> None:
    before = store_bytes(server.state_dir)
    headers = {} if content_type is None else {"Content-Type": content_type}
    conn = server.connect(server.rest_port)
    try:
        conn.putrequest("PUT", f"{CONFIG}/pools/other")
        conn.putheader("Authorization", basic("admin", PASSWORD))
        for name, value in headers.items():
            conn.putheader(name, value)
        body = json.dumps(POOL).encode()
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        reply = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 415, reply
    assert reply["error_id"] == "http.unsupported_media_type"
    assert "application/json" in reply["error_text"]
    assert store_bytes(server.state_dir) == before


def test_json_with_parameters_is_accepted(server: Running) -> None:
    reply = server.request("PUT", f"{CONFIG}/pools/other", json.dumps(POOL),
                           auth=basic("admin", PASSWORD),
                           headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert reply.status == 201, reply.body


def test_a_virtual_server_that_cannot_listen_shows_in_statistics_and_metrics(
        server: Running) -> None:
    reason = f"virtual_servers.site: cannot listen on {NOT_ON_HOST}:80: Cannot assign"
    status.run_folder(server.state_dir).mkdir(parents=True, exist_ok=True)
    status.write_worker_status(server.state_dir, 0, {"virtual_servers": {
        "site": {"requests": 0, "state": "error", "error": reason, "listeners": 0,
                 "listeners_failed": 1},
        "ok": {"requests": 5, "state": "ok", "error": None, "listeners": 1,
               "listeners_failed": 0}}, "pools": {}})
    stats = server.api("GET", "/api/tm/1.0/status/local_tm/statistics/virtual_servers/site")
    assert stats.status == 200
    assert stats.json()["statistics"].items() >= {"state": "error", "error": reason,
                                                  "listeners": 0, "listeners_failed": 1}.items()
    metrics = server.api("GET", "/metrics").body.decode()
    assert 'lockgate_virtual_server_up{virtual_server="site"} 0' in metrics
    assert 'lockgate_listeners_failed{virtual_server="site"} 1' in metrics
    assert 'lockgate_virtual_server_up{virtual_server="ok"} 1' in metrics
