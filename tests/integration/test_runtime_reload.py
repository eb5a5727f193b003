"""Hitless reload, bad config refusal, worker restarts and TCP mode, with nginx and wrk."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_runtime_support import (
    backends,
    free_port,
    get,
    nginx,
    pool_of,
    rss_kib,
    runtime,
    vs,
)

from lockgate.runtime.config import ConfigStore
from lockgate.runtime.workers import notify_reload

WRK = shutil.which("wrk")


def run_wrk(url: str, seconds: int, connections: int = 10) -> subprocess.Popen[str]:
    assert WRK
    return subprocess.Popen([WRK, "-t1", f"-c{connections}", f"-d{seconds}s", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=60)
    match = re.search(r"(\d+) requests in", out)
    assert match, out
    return int(match.group(1)), out


@pytest.mark.skipif(WRK is None, reason="wrk not installed (apt-get install wrk)")
def test_reload_under_load_drops_nothing(tmp_path: Path) -> None:
    port, port2 = free_port(), free_port()
    with nginx(tmp_path / "n1", "one\n") as n1, nginx(tmp_path / "n2", "two\n") as n2:
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(n1)}}
        with runtime(tmp_path, config, workers=2) as rt:
            load = run_wrk(f"http://127.0.0.1:{port}/", 4)
            store = ConfigStore(rt.state_dir)
            rt.wait_status(lambda s: s["virtual_servers"]["web"]["requests"] > 100)
            # 1: REST-style change of the pool (add a node, switch the algorithm)
            store.put("pools", "web", pool_of(n1, n2, load_balancing={
                "algorithm": "least_connections"}))
            assert notify_reload(rt.state_dir)
            rt.wait_status(lambda s: n2 in s["pools"]["web"]["nodes"]
                           and s["pools"]["web"]["nodes"][n2]["requests"] > 0)
            # 2: a new listener next to the old one, plus a virtual-server setting change
            store.put("virtual_servers", "extra", vs(port2))
            store.put("virtual_servers", "web", vs(port, connection={"timeout": 30}))
            os.kill(rt.proc.pid, signal.SIGHUP)
            # 3: a node drained out of the pool entirely while traffic flows
            store.put("pools", "web", pool_of(n2))
            notify_reload(rt.state_dir)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    if get(port2, "/")[2] == b"two\n":
                        break
                except OSError:
                    time.sleep(0.05)  # the new listener is opening; bounded by the deadline
            assert get(port2, "/")[2] == b"two\n"
            total, out = wrk_result(load)
            assert total > 500, out
            assert "Non-2xx" not in out and "Socket errors" not in out, out
            assert get(port, "/")[2] == b"two\n"
            assert rt.snapshot()["virtual_servers"]["web"]["errors"] == 0


def test_bad_config_file_is_refused_naming_the_field_and_old_config_keeps_serving(
        tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt:
            bad = dict(config, pools={"web": {"properties": {"basic": {"nodes_table": [
                {"node": a.address}, {"node": "127.0.0.1:99999"}]}}}})
            bad_file = tmp_path / "bad.yaml"
            bad_file.write_text(yaml.safe_dump(bad))
            version = ConfigStore(rt.state_dir).version
            result = subprocess.run(
                [sys.executable, "-m", "lockgate", "runtime", "reload", "--config", str(bad_file),
                 "--state-dir", str(rt.state_dir)], capture_output=True, text=True, timeout=60)
            assert result.returncode == 2
            assert result.stderr.startswith(
                "error: pools.web.basic.nodes_table[1].node: "), result.stderr
            assert result.stdout == ""
            assert ConfigStore(rt.state_dir).version == version
            assert get(port, "/")[2] == b"a"
            # and a good file through the same command is applied
            good = dict(config, virtual_servers={"web": vs(port, http={
                "add_x_forwarded_proto": False})})
            bad_file.write_text(yaml.safe_dump(good))
            result = subprocess.run(
                [sys.executable, "-m", "lockgate", "runtime", "reload", "--config", str(bad_file),
                 "--state-dir", str(rt.state_dir)], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0 and "sent to the running workers" in result.stdout


def test_serve_refuses_a_bad_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("virtual_servers:\n  web: {properties: {basic: {port: 8080, pool: nope}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "lockgate", "runtime", "serve", "--config", str(path),
         "--state-dir", str(tmp_path / "s"), "--no-management"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "error: virtual_servers.web.basic.pool: no pool named 'nope'\n"


def test_crashed_worker_is_restarted_and_node_state_survives_reload(tmp_path: Path) -> None:
    port, dead = free_port(), free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)},
                  "pools": {"web": pool_of(a.address, f"127.0.0.1:{dead}", basic={
                      "monitors": ["ping"], "passive_monitoring": False})},
                  "monitors": {"ping": {"properties": {"basic": {
                      "delay": 0.1, "timeout": 0.3, "failures": 1}}}}}
        with runtime(tmp_path, config, workers=2) as rt:
            rt.wait_status(lambda s: s["pools"]["web"]["nodes"][f"127.0.0.1:{dead}"]["state"]
                           == "dead")
            for _ in range(10):
                assert get(port, "/")[0] == 200
            # Reload with a much slower monitor: the node must stay dead (state carried over),
            # not start alive and take traffic until the monitor catches up.
            store = ConfigStore(rt.state_dir)
            store.put("monitors", "ping", {"properties": {"basic": {
                "delay": 30, "timeout": 0.3, "failures": 1}}})
            store.put("virtual_servers", "web", vs(port, connection={"timeout": 20}))
            notify_reload(rt.state_dir)
            rt.wait_status(lambda s: True)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            assert all(get(port, "/", conn=conn)[0] == 200 for _ in range(20))
            before = rt.snapshot()["pools"]["web"]["nodes"][f"127.0.0.1:{dead}"]["failures"]
            assert before == 0  # no request was sent to it, not even one retried
            victim = sorted(rt.worker_pids())[0]
            os.kill(victim, signal.SIGKILL)
            rt.wait_status(lambda s: victim not in rt.worker_pids() and len(rt.worker_pids()) == 2,
                           timeout=15)
            for _ in range(20):
                assert get(port, "/")[0] == 200


def test_tcp_relay_with_flow_control(tmp_path: Path) -> None:
    port = free_port()
    with backends("big") as (big,):
        config = {"virtual_servers": {"raw": vs(port, basic={"protocol": "tcp"})},
                  "pools": {"raw": pool_of(big.address)}}
        config["virtual_servers"]["raw"]["properties"]["basic"]["pool"] = "raw"
        with runtime(tmp_path, config) as rt:
            status, _, body = get(port, "/chunked?3")
            assert status == 200 and body == b"piece-0;piece-1;piece-2;"
            status, _, body = get(port, "/big?3000000")
            assert status == 200 and len(body) == 3000000
            rt.wait_status(lambda s: s["virtual_servers"]["raw"]["bytes_out"] > 3000000)
            (pid,) = rt.worker_pids()
            before = rss_kib(pid)
            big.big_sent = 0
            with socket.create_connection(("127.0.0.1", port), 10) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                last, stable_since = -1, time.monotonic()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    if big.big_sent != last:
                        last, stable_since = big.big_sent, time.monotonic()
                    elif time.monotonic() - stable_since > 0.7:
                        break
                    time.sleep(0.05)
                # Kernel buffers hold ~8-11 MB here; the proxy itself ~0.1-0.4 MB (with
                # writes queued a whole loop turn, before FLUSH_BYTES: 12-14 MB and 4.5-8 MB).
                assert big.big_sent < 16 << 20, big.big_sent
                assert rss_kib(pid) - before < 4 * 1024


def test_tcp_relay_passes_half_closes_after_the_bytes_before_them(tmp_path: Path) -> None:
    """Half-closes both ways, end to end (the write order itself: tests/unit/test_proxy_tcp.py)."""
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"raw": vs(port, basic={"protocol": "tcp", "pool": "raw"})},
                  "pools": {"raw": pool_of(a.address)}}
        with runtime(tmp_path, config):
            for target, size in (("/big?327680", 327680), ("/", 1)):  # /big sends 64 KiB blocks
                with socket.create_connection(("127.0.0.1", port), 10) as s:
                    # the request and the client's FIN in one go; HTTP/1.0: the node answers,
                    # then closes, so its last bytes and its FIN also arrive together
                    s.sendall(f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(10)
                    data = b""
                    while piece := s.recv(65536):
                        data += piece
                    head, _, body = data.partition(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.") and b" 200 " in head, head[:80]
                    assert len(body) == size, (target, len(body))


def test_half_closed_client_still_gets_its_answer(tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config), socket.create_connection(("127.0.0.1", port), 10) as s:
            s.sendall(b"GET /slow?0.2 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)  # like `printf ... | nc`: both requests still answered
            s.settimeout(10)
            data = b""
            while piece := s.recv(65536):
                data += piece
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\na")
            assert data.count(b"HTTP/1.1 200 ") == 2


def test_wrk_keepalive_load_has_no_errors(tmp_path: Path) -> None:
    if WRK is None:
        pytest.skip("wrk not installed (apt-get install wrk)")
    port = free_port()
    with nginx(tmp_path / "n") as n:
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(n)}}
        with runtime(tmp_path, config):
            total, out = wrk_result(run_wrk(f"http://127.0.0.1:{port}/", 2, connections=50))
            assert total > 1000 and "Non-2xx" not in out and "Socket errors" not in out, out


def test_moving_a_listener_keeps_established_connections(tmp_path: Path) -> None:
    port, new_port = free_port(), free_port()
    with backends("a", "b") as (a, b):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt:
            kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            assert get(port, "/", conn=kept)[2] == b"a"
            store = ConfigStore(rt.state_dir)
            store.put("pools", "web", pool_of(b.address))
            store.put("virtual_servers", "web", vs(new_port))
            notify_reload(rt.state_dir)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                except ConnectionRefusedError:
                    break  # the old listener is closed
                time.sleep(0.05)  # the reload is applied within ~1 s; bounded
            else:
                raise AssertionError("old listener still open after reload")
            assert get(new_port, "/")[2] == b"b"
            # the connection accepted on the old listener still works, with the new pool
            assert get(port, "/", conn=kept)[2] == b"b"
            kept.close()
