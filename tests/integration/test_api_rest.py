"""The REST API over real HTTPS on loopback, with clients pinned to the generated certificate."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api_support import PASSWORD, Running, basic, running, write_users

from lockgate.paths import StatePaths
from lockgate.runtime import status
from lockgate.runtime.api.auth import FailureLimiter

CONFIG = "/api/tm/1.0/config/active"
POOL = {"properties": {"basic": {"nodes_table": [{"node": "127.0.0.1:8080", "weight": 2}]}}}
VSERVER = {"properties": {"basic": {"port": 18080, "pool": "web"}}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    write_users(tmp_path)
    with running(tmp_path) as srv:
        yield srv


def store_bytes(state_dir: Path) -> bytes | None:
    path = StatePaths(state_dir).runtime / "config.json"
    return path.read_bytes() if path.exists() else None


# ---- authentication ---------------------------------------------------------------------

def test_no_or_wrong_auth_is_401_with_challenge(server: Running) -> None:
    reply = server.request("GET", f"{CONFIG}/pools")
    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Basic realm=")
    assert reply.json()["error_id"] == "auth.required"
    reply = server.request("GET", f"{CONFIG}/pools", auth=basic("admin", "wrong"))
    assert reply.status == 401 and reply.json()["error_id"] == "auth.invalid"
    reply = server.request("GET", f"{CONFIG}/pools", auth=basic("nobody", PASSWORD))
    assert reply.status == 401
    assert server.request("GET", f"{CONFIG}/pools", auth=basic("admin", PASSWORD)).status == 200


def test_unconfigured_appliance_says_so(tmp_path: Path) -> None:
    with running(tmp_path) as srv:  # no users file yet
        reply = srv.request("GET", f"{CONFIG}/pools", auth=basic("admin", "anything"))
    assert reply.status == 401
    assert "initial configuration is not finished" in reply.json()["error_text"]


def test_repeated_failures_lock_out_then_recover(tmp_path: Path) -> None:
    write_users(tmp_path)
    lockout = 1.5
    with running(tmp_path, FailureLimiter(max_failures=3, window=60, lockout=lockout)) as srv:
        good, bad = basic("admin", PASSWORD), basic("admin", "guess")
        assert srv.request("GET", CONFIG, auth=good).status == 200
        assert [srv.request("GET", CONFIG, auth=bad).status for _ in range(2)] == [401, 401]
        locked_at = time.monotonic()
        third = srv.request("GET", CONFIG, auth=bad)
        assert third.status == 429
        assert 1 <= int(third.headers["retry-after"]) <= 2
        assert srv.request("GET", CONFIG, auth=good).status == 429  # whole client waits
        # The lockout is a time rule, so waiting for it is the behaviour under test.
        deadline = time.monotonic() + 10
        while (status_code := srv.request("GET", CONFIG, auth=good).status) == 429:
            assert time.monotonic() < deadline, "lockout never ended"
            time.sleep(0.2)
        assert status_code == 200
        assert time.monotonic() - locked_at >= lockout - 0.1


def test_success_stays_fast_thanks_to_the_cache(server: Running) -> None:
    conn = server.connect(server.rest_port)
    auth = {"Authorization": basic("admin", PASSWORD)}
    try:
        started = time.monotonic()
        for _ in range(100):  # keep-alive: all on one connection
            conn.request("GET", f"{CONFIG}/pools", headers=auth)
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 200
        elapsed = time.monotonic() - started
    finally:
        conn.close()
    assert elapsed < 5, f"100 authenticated requests took {elapsed:.1f} s"


# ---- configuration round trips ----------------------------------------------------------

def test_put_get_delete_round_trip_survives_restart(tmp_path: Path) -> None:
    write_users(tmp_path)
    with running(tmp_path) as srv:
        assert srv.api("GET", CONFIG).json()["children"][1] == {
            "name": "pools", "href": f"{CONFIG}/pools"}
        created = srv.api("PUT", f"{CONFIG}/pools/web", POOL)
        assert created.status == 201
        assert created.json()["properties"]["basic"]["nodes_table"][0]["weight"] == 2
        assert created.json()["properties"]["load_balancing"]["algorithm"] == "round_robin"
        replaced = srv.api("PUT", f"{CONFIG}/pools/web", POOL)
        assert replaced.status == 200
        assert srv.api("PUT", f"{CONFIG}/virtual_servers/site", VSERVER).status == 201
        assert srv.api("GET", f"{CONFIG}/pools").json() == {
            "children": [{"name": "web", "href": f"{CONFIG}/pools/web"}]}
    with running(tmp_path) as srv:  # a new server reads the same store
        assert srv.api("GET", f"{CONFIG}/pools/web").json() == created.json()
        in_use = srv.api("DELETE", f"{CONFIG}/pools/web")
        assert in_use.status == 409
        assert "virtual_servers.site" in in_use.json()["error_text"]
        assert srv.api("DELETE", f"{CONFIG}/virtual_servers/site").status == 204
        deleted = srv.api("DELETE", f"{CONFIG}/pools/web")
        assert deleted.status == 204 and deleted.body == b""
        assert srv.api("GET", f"{CONFIG}/pools/web").status == 404
        assert srv.api("DELETE", f"{CONFIG}/pools/web").status == 404
    with running(tmp_path) as srv:
        assert srv.api("GET", f"{CONFIG}/pools").json() == {"children": []}


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, None),
    (b"NaN", 400, None),
    (b"[1, 2]", 422, "pools.web.properties"),
    (b"{}", 422, "pools.web.properties"),
    (json.dumps({"properties": {"basic": {"nodes_tabel": []}}}).encode(), 422,
     "pools.web.basic.nodes_tabel"),
    (json.dumps({"properties": {"basic": {"nodes_table": [{"node": "a:1"}, {"node": "b"}]}}})
     .encode(), 422, "pools.web.basic.nodes_table[1].node"),
    (json.dumps({"properties": {"basic": {"node_fail_threshold": "3"}}}).encode(), 422,
     "pools.web.basic.node_fail_threshold"),
    (json.dumps({"properties": {"extra": {}}}).encode(), 422, "pools.web.extra"),
    (json.dumps({"properties": {}, "more": 1}).encode(), 422, "pools.web"),
])
def test_bad_documents_are_refused_and_nothing_stored(
        server: Running, body: bytes, status: int, field: str | None) -> None:
    assert server.api("PUT", f"{CONFIG}/pools/web", POOL).status == 201
    before = store_bytes(server.state_dir)
    reply = server.request("PUT", f"{CONFIG}/pools/web", body, auth=basic("admin", PASSWORD))
    assert reply.status == status, reply.body
    error = reply.json()
    assert error["error_id"] and error["error_text"]
    if field is not None:
        assert error["error_info"]["field"] == field
        assert field in error["error_text"]
    assert store_bytes(server.state_dir) == before


def test_conflicts_with_the_rest_of_the_config_are_409(server: Running) -> None:
    before = store_bytes(server.state_dir)
    reply = server.api("PUT", f"{CONFIG}/virtual_servers/site", VSERVER)  # pool "web" missing
    assert reply.status == 409
    assert reply.json()["error_info"]["field"] == "virtual_servers.site.basic.pool"
    assert store_bytes(server.state_dir) == before


def test_bad_names_unknown_paths_and_methods(server: Running) -> None:
    reply = server.api("PUT", f"{CONFIG}/pools/bad%20name", POOL)
    assert reply.status == 422 and reply.json()["error_info"]["field"] == "pools.bad name"
    assert server.api("PUT", f"{CONFIG}/pools/..%2Fescape", POOL).status == 404
    assert server.api("GET", f"{CONFIG}/pools/nope").status == 404
    missing = server.api("GET", "/api/tm/1.0/nothing/here")
    assert missing.status == 404 and missing.json()["error_id"] == "resource.not_found"
    assert server.api("GET", f"{CONFIG}/widgets").status == 404
    wrong = server.api("POST", f"{CONFIG}/pools/web", POOL)
    assert wrong.status == 405 and "PUT" in wrong.headers["allow"]


def test_body_over_limit_is_413(server: Running) -> None:
    big = b'{"properties": {"basic": {"monitors": [' + b'"m",' * 400_000 + b'"m"]}}}'
    before = store_bytes(server.state_dir)
    reply = server.request("PUT", f"{CONFIG}/pools/big", big, auth=basic("admin", PASSWORD))
    assert reply.status == 413
    assert store_bytes(server.state_dir) == before


def test_garbage_on_the_wire_is_400_not_a_crash(server: Running) -> None:
    raw = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
    with server.context.wrap_socket(raw) as tls:
        tls.sendall(b"BLAH\x01 / HTTP/1.1\r\n\r\n")
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert server.api("GET", CONFIG).status == 200  # and the server carries on


def test_certificate_is_the_pinned_one(server: Running) -> None:
    stranger = ssl.create_default_context()  # system CAs only: must refuse
    raw = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        stranger.wrap_socket(raw, server_hostname="127.0.0.1")
    raw.close()


# ---- status and metrics -----------------------------------------------------------------

def _seed_status(state_dir: Path) -> None:
    status.run_folder(state_dir).mkdir(parents=True, exist_ok=True)
    status.write_worker_status(state_dir, 0, {
        "virtual_servers": {"site": {"requests": 5, "bytes_in": 100, "bytes_out": 900,
                                     "connections_current": 1, "connections_total": 5,
                                     "errors": 0}},
        "pools": {"web": {"nodes": {"127.0.0.1:8080": {"state": "dead", "connections": 0,
                                                        "requests": 0, "failures": 3}}}}})
    status.write_worker_status(state_dir, 1, {
        "virtual_servers": {"site": {"requests": 2, "bytes_in": 10, "bytes_out": 90}},
        "pools": {}})


def test_statistics_tree(server: Running) -> None:
    _seed_status(server.state_dir)
    base = "/api/tm/1.0/status/local_tm/statistics"
    assert [c["name"] for c in server.api("GET", base).json()["children"]] == [
        "virtual_servers", "pools"]
    assert server.api("GET", f"{base}/virtual_servers").json()["children"][0]["name"] == "site"
    stats = server.api("GET", f"{base}/virtual_servers/site").json()["statistics"]
    assert stats["requests"] == 7 and stats["bytes_out"] == 990
    nodes = server.api("GET", f"{base}/pools/web").json()["statistics"]["nodes"]
    assert nodes["127.0.0.1:8080"]["state"] == "dead"
    assert server.api("GET", f"{base}/pools/nope").status == 404


def test_metrics_need_auth_and_parse(server: Running) -> None:
    _seed_status(server.state_dir)
    assert server.api("PUT", f"{CONFIG}/pools/web", POOL).status == 201
    assert server.request("GET", "/metrics").status == 401
    reply = server.api("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.body.decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.split()[1] in ("HELP", "TYPE")
            continue
        name_labels, value = line.rsplit(" ", 1)
        samples[name_labels] = float(value)
    assert samples['lockgate_requests_total{virtual_server="site"}'] == 7
    assert samples['lockgate_bytes_total{virtual_server="site",direction="in"}'] == 110
    assert samples['lockgate_connections_current{virtual_server="site"}'] == 1
    assert samples['lockgate_node_up{pool="web",node="127.0.0.1:8080"}'] == 0
    assert samples['lockgate_pool_nodes_alive{pool="web"}'] == 0
    assert samples["lockgate_config_version"] == 1


def test_openapi_document_is_served(server: Running) -> None:
    document = server.api("GET", "/api/tm/1.0/openapi.json").json()
    assert document["openapi"].startswith("3.0")
    assert f"{CONFIG}/pools/{{name}}" in document["paths"]


# ---- access log -------------------------------------------------------------------------

class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_access_log_has_one_line_per_request_and_no_secrets(server: Running) -> None:
    collector = Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    access = logging.getLogger("lockgate.runtime.access")
    try:
        before = len(collector.lines)
        server.api("PUT", f"{CONFIG}/pools/web", POOL)
        server.request("GET", f"{CONFIG}/pools?secret=query", auth=basic("admin", "hunter2-x"))
        server.api("GET", f"{CONFIG}/pools/web")
        access_lines = [line for line in collector.lines[before:] if "rest 127.0.0.1" in line]
    finally:
        root.removeHandler(collector)
        root.setLevel(old_level)
    assert access.name == "lockgate.runtime.access"
    assert len(access_lines) == 3, access_lines
    assert " PUT /api/tm/1.0/config/active/pools/web 201 " in access_lines[0]
    assert " GET /api/tm/1.0/config/active/pools 401 " in access_lines[1]
    text = "\n".join(collector.lines)
    for secret in (PASSWORD, "hunter2-x", basic("admin", PASSWORD).split()[1], "secret=query",
                   "127.0.0.1:8080"):
        assert secret not in text


# ---- HTTP details -----------------------------------------------------------------------

def _raw(server: Running) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
    return server.context.wrap_socket(raw)


def _read_all(sock: ssl.SSLSocket, until: bytes, count: int) -> bytes:
    data = b""
    deadline = time.monotonic() + 10
    while data.count(until) < count:
        assert time.monotonic() < deadline, data
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_pipelined_requests_are_answered_in_order(server: Running) -> None:
    auth = basic("admin", PASSWORD)
    requests = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode()
        for path in (f"{CONFIG}/pools", "/nowhere", f"{CONFIG}/monitors"))
    with _raw(server) as tls:
        tls.sendall(requests)
        data = _read_all(tls, b"HTTP/1.1 ", 3)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"404", b"200"]


def test_head_has_no_body(server: Running) -> None:
    reply = server.request("HEAD", f"{CONFIG}/pools", auth=basic("admin", PASSWORD))
    assert reply.status == 200 and reply.body == b""
    assert int(reply.headers["content-length"]) > 0


def test_connections_over_the_cap_are_refused(server: Running) -> None:
    # Full of authenticated connections: a newcomer is refused (strangers would be
    # evicted instead: tests/integration/test_mgmt_abuse.py).
    server.mgmt.rest.limits = dataclasses.replace(server.mgmt.rest.limits, max_connections=2)
    held = [_raw(server) for _ in range(2)]
    try:
        # Make sure both are registered (and authenticated) before the third arrives.
        for sock in held:
            sock.sendall(f"GET {CONFIG}/pools HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: {basic('admin', PASSWORD)}\r\n\r\n".encode())
            assert _read_all(sock, b"HTTP/1.1 200", 1)
        refused = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
        with pytest.raises(OSError), server.context.wrap_socket(refused) as tls:
            tls.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            if not tls.recv(100):
                raise ConnectionError("closed without an answer")
    finally:
        for sock in held:
            sock.close()
