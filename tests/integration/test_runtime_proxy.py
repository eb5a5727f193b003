"""The HTTP proxy end to end: real backends, real `lockgate runtime serve`, real clients."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from test_runtime_support import (
    backends,
    free_port,
    get,
    pool_of,
    rss_kib,
    runtime,
    vs,
)

from lockgate.runtime.tls import generate
from lockgate.runtime.workers import notify_reload


def test_round_robin_spreads_requests_evenly_over_kept_alive_connections(tmp_path: Path) -> None:
    port = free_port()
    with backends("a", "b", "c") as nodes:
        config = {"virtual_servers": {"web": vs(port)},
                  "pools": {"web": pool_of(*(n.address for n in nodes))}}
        with runtime(tmp_path, config) as rt:
            assert f"127.0.0.1:{port}" in rt.serving_line
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            seen = Counter(get(port, conn=conn)[2].decode() for _ in range(60))
            conn.close()
            assert seen == {"a": 20, "b": 20, "c": 20}
            snap = rt.wait_status(lambda s: s["virtual_servers"]["web"]["requests"] == 60)
            web = snap["virtual_servers"]["web"]
            assert web["connections_total"] == 1 and web["errors"] == 0
            assert web["bytes_out"] > web["bytes_in"] > 0
            assert {n["requests"] for n in snap["pools"]["web"]["nodes"].values()} == {20}


def test_least_connections_sends_less_to_a_slow_node(tmp_path: Path) -> None:
    port = free_port()
    with backends("slow", "fast") as (slow, fast):
        config = {"virtual_servers": {"web": vs(port)},
                  "pools": {"web": pool_of(slow.address, fast.address,
                                           load_balancing={"algorithm": "least_connections"})}}
        with runtime(tmp_path, config) as rt:
            results: Counter[str] = Counter()
            lock = threading.Lock()

            def client() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                end = time.monotonic() + 1.5
                while time.monotonic() < end:
                    # the slow node takes 0.3 s for every request it gets
                    _, headers, _ = get(port, "/slow?0.3", conn=conn)
                    with lock:
                        results[headers["x-node"]] += 1
                conn.close()

            # Make only the slow node slow: fast answers /slow without sleeping.
            fast.RequestHandlerClass = _FastHandler
            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            # Round robin would give the slow node half; least connections sends it a
            # request only when it has nothing in flight (or ties), so ~1.5 s / 0.3 s of them.
            total = sum(results.values())
            assert total > 40 and results["slow"] <= max(10, total // 10), results
            assert rt.snapshot()["virtual_servers"]["web"]["errors"] == 0


from test_runtime_support import Handler  # noqa: E402


class _FastHandler(Handler):
    def do_GET(self) -> None:
        self.server.hit()
        self._send(self.server.name.encode())


def test_ip_hash_keeps_each_client_address_on_one_node(tmp_path: Path) -> None:
    port = free_port()
    with backends("a", "b", "c") as nodes:
        config = {"virtual_servers": {"web": vs(port)},
                  "pools": {"web": pool_of(*(n.address for n in nodes),
                                           load_balancing={"algorithm": "ip_hash"})}}
        with runtime(tmp_path, config):
            placement: dict[str, set[str]] = {}
            for i in range(2, 32):
                source = f"127.0.0.{i}"
                for _ in range(3):
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                                      source_address=(source, 0))
                    placement.setdefault(source, set()).add(get(port, conn=conn)[2].decode())
                    conn.close()
            assert all(len(v) == 1 for v in placement.values()), placement
            assert len(set().union(*placement.values())) == 3  # all nodes take some clients


def test_forwarding_headers_hop_by_hop_and_head(tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config):
            status, _, body = get(port, "/headers", headers={
                "X-Forwarded-For": "203.0.113.9", "Connection": "keep-alive, X-Drop",
                "X-Drop": "1", "Keep-Alive": "300"})
            seen = {k.lower(): v for k, v in json.loads(body).items()}
            assert status == 200
            assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
            assert seen["x-forwarded-proto"] == "http"
            assert "x-drop" not in seen and "keep-alive" not in seen
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            status, headers, body = get(port, "/", conn=conn, method="HEAD")
            assert status == 200 and body == b"" and headers["content-length"] == "1234"
            assert get(port, "/", conn=conn)[2] == b"a"  # same connection still in step


def test_chunked_request_and_response_bodies_pass_intact(tmp_path: Path) -> None:
    port = free_port()
    payload = bytes(range(256)) * 400  # 100 KiB, every byte value
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

            def pieces() -> Iterator[bytes]:
                for i in range(0, len(payload), 7777):
                    yield payload[i:i + 7777]

            conn.request("POST", "/echo", body=pieces(), encode_chunked=True,
                         headers={"Transfer-Encoding": "chunked"})
            resp = conn.getresponse()
            assert resp.getheader("Transfer-Encoding") == "chunked", (resp.status, resp.getheaders(), resp.read()[:300])
            assert resp.read() == payload
            body = get(port, "/chunked?20", conn=conn)[2]
            assert body == b"".join(f"piece-{i};".encode() for i in range(20))
            body = get(port, "/echo", conn=conn, method="PUT", body=b"x" * 5000)[2]
            assert body == b"x" * 5000
            conn.close()


def test_raw_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config), socket.create_connection(("127.0.0.1", port), 10) as s:
            s.sendall(b"GET /slow?0.2 HTTP/1.1\r\nHost: x\r\n\r\nGET /headers HTTP/1.1\r\n"
                      b"Host: x\r\n\r\nGET /chunked?2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = _read_all(s)
            assert data.count(b"HTTP/1.1 200 ") == 3
            assert data.index(b"\r\n\r\na") < data.index(b'"Host"') < data.index(b"piece-1;")


def test_expect_100_continue_and_upgrade_tunnel(tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config), socket.create_connection(("127.0.0.1", port), 10) as s:
            s.settimeout(10)
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"  # from the node, passed on
            s.sendall(b"hello")
            data = _read_until(s, b"0\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 200 ") and b"5\r\nhello\r\n" in data
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                      b"Upgrade: lockgate-test\r\n\r\nfirst\n")
            data = _read_until(s, b"echo:first\n")
            assert data.startswith(b"HTTP/1.1 101 ") and b"Upgrade: lockgate-test" in data
            s.sendall(b"second\n")
            assert _read_until(s, b"echo:second\n") == b"echo:second\n"


def test_errors_431_400_503_502(tmp_path: Path) -> None:
    port, dead_port = free_port(), free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {
            "web": vs(port, connection={"max_header_bytes": 4096}),
            "none": vs(free_port(), pool="empty"),
            "bad": vs(free_port(), pool="dead")},
            "pools": {"web": pool_of(a.address), "empty": pool_of(),
                      "dead": pool_of(f"127.0.0.1:{dead_port}",
                                      basic={"node_connection_attempts": 2})}}
        with runtime(tmp_path, config):
            status, _, _ = get(port, "/", headers={"X-Big": "y" * 8000})
            assert status == 431
            with socket.create_connection(("127.0.0.1", port), 10) as s:
                s.sendall(b"GET / HTTP/1.1\r\nBroken header line\r\n\r\n")
                assert _read_all(s).startswith(b"HTTP/1.1 400 ")
            assert get(_port_of(config, "none"), "/")[0] == 503
            assert get(_port_of(config, "bad"), "/")[0] == 502
            assert get(port, "/garbage")[0] == 502
            assert get(port, "/")[0] == 200  # still serving


def test_connect_timeout_gives_504(tmp_path: Path) -> None:
    port = free_port()
    # A listener whose accept queue is full: Linux drops further SYNs, so connecting hangs.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = []
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # the handshake runs in the background
                f.connect(full.getsockname())
            fillers.append(f)
        node = f"127.0.0.1:{full.getsockname()[1]}"
        config = {"virtual_servers": {"web": vs(port, connection={"connect_timeout": 0.5})},
                  "pools": {"web": pool_of(node, basic={"node_connection_attempts": 1})}}
        try:
            with runtime(tmp_path, config):
                start = time.monotonic()
                assert get(port, "/")[0] == 504
                assert 0.4 < time.monotonic() - start < 2.0
        finally:
            for f in fillers:
                f.close()


def test_retry_on_connect_failure_hides_a_dead_node(tmp_path: Path) -> None:
    port, dead = free_port(), free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)},
                  "pools": {"web": pool_of(f"127.0.0.1:{dead}", a.address,
                                           basic={"node_fail_threshold": 100})}}
        with runtime(tmp_path, config) as rt:
            statuses = Counter(get(port, "/")[0] for _ in range(20))
            assert statuses == {200: 20}
            snap = rt.wait_status(
                lambda s: s["pools"]["web"]["nodes"][f"127.0.0.1:{dead}"]["failures"] >= 10)
            assert snap["virtual_servers"]["web"]["errors"] == 0


def test_killed_node_leaves_rotation_within_interval_times_fall(tmp_path: Path) -> None:
    port = free_port()
    delay, fall = 0.2, 2
    with backends("a", "b") as (a, b):
        config = {"virtual_servers": {"web": vs(port)},
                  "pools": {"web": pool_of(a.address, b.address, basic={
                      "monitors": ["ping"], "passive_monitoring": False})},
                  "monitors": {"ping": {"properties": {
                      "basic": {"type": "http", "delay": delay, "timeout": 0.5, "failures": fall,
                                "rise": 1}, "http": {"path": "/", "status_regex": "^200$"}}}}}
        with runtime(tmp_path, config):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            assert {get(port, conn=conn)[2] for _ in range(4)} == {b"a", b"b"}
            b.stop()
            killed = time.monotonic()
            # Every request keeps succeeding (connect failures are retried on a)...
            moved_after = None
            for _ in range(400):
                status = get(port)[0]
                assert status == 200
                if moved_after is None and all(get(port)[1]["x-node"] == "a" for _ in range(6)):
                    moved_after = time.monotonic() - killed
                    break
            # ...and the monitor takes the node out within fall × interval (+ one timeout, slack).
            assert moved_after is not None and moved_after < delay * fall + 0.5 + 1.0, moved_after


def test_slowloris_is_closed_after_request_timeout(tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port, connection={"request_timeout": 1.0})},
                  "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config), socket.create_connection(("127.0.0.1", port), 10) as s:
            start = time.monotonic()
            s.sendall(b"GET / HTTP/1.1\r\n")
            closed_at = None
            for i in range(40):
                try:
                    s.sendall(b"X-Slow-%d: y\r\n" % i)
                except OSError:
                    closed_at = time.monotonic() - start
                    break
                s.settimeout(0.15)
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    continue
                assert data.startswith(b"HTTP/1.1 408 ") or data == b""
                closed_at = time.monotonic() - start
                break
            assert closed_at is not None and 0.9 < closed_at < 2.5, closed_at


def test_client_that_never_reads_keeps_proxy_memory_bounded(tmp_path: Path) -> None:
    port = free_port()
    with backends("big") as (big,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(big.address)}}
        with runtime(tmp_path, config) as rt:
            rt.wait_status(lambda s: "web" in s["virtual_servers"])
            (pid,) = rt.worker_pids()
            before = rss_kib(pid)
            with socket.create_connection(("127.0.0.1", port), 10) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                deadline = time.monotonic() + 10
                last, stable_since = -1, time.monotonic()
                while time.monotonic() < deadline:  # until the backend stops making progress
                    if big.big_sent != last:
                        last, stable_since = big.big_sent, time.monotonic()
                    elif time.monotonic() - stable_since > 0.7:
                        break
                    time.sleep(0.05)
                grown = rss_kib(pid) - before
                assert big.big_sent < 16 << 20, big.big_sent  # of 200 MiB: the backend is held back
                assert grown < 6 * 1024, grown  # ~0.7 MB measured (26 Nov)
                received = len(s.recv(1 << 20))
                assert received > 0  # it was a real response, just unread


def test_tls_offload_with_sni(tmp_path: Path) -> None:
    port = free_port()
    main_cert, main_key = _self_signed(tmp_path, "main.test")
    sni_cert, sni_key = _self_signed(tmp_path, "other.test")
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port, ssl={
            "ssl_decrypt": True, "cert_file": str(main_cert), "key_file": str(main_key),
            "sni": [{"host": "other.test", "cert_file": str(sni_cert), "key_file": str(sni_key)}]})},
            "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt:
            for name, cert in (("main.test", main_cert), ("other.test", sni_cert)):
                # trusting only the expected certificate proves SNI picked it
                ctx = ssl.create_default_context(cafile=str(cert))
                with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10),
                                     server_hostname=name) as s:
                    s.sendall(b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = _read_all(s)
                head, _, body = data.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                assert json.loads(body)["X-Forwarded-Proto"] == "https"
            # A client that sends no server name gets the main certificate.
            plain = ssl.create_default_context(cafile=str(main_cert))
            plain.check_hostname = False
            with plain.wrap_socket(socket.create_connection(("127.0.0.1", port), 10)) as s:
                served = s.getpeercert(binary_form=True)
            assert served == ssl.PEM_cert_to_DER_cert(main_cert.read_text())
            # A certificate renewed at the same path is served after a reload, on the
            # same listening socket (a reset here would fail the test).
            old_pem = main_cert.read_bytes()
            (tmp_path / "renewed").mkdir()
            renewed_cert, renewed_key = _self_signed(tmp_path / "renewed", "main.test")
            main_key.write_bytes(renewed_key.read_bytes())
            main_cert.write_bytes(renewed_cert.read_bytes())
            assert notify_reload(rt.state_dir)
            ctx = ssl.create_default_context(cafile=str(main_cert))
            deadline = time.monotonic() + 5
            while True:
                try:
                    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10),
                                         server_hostname="main.test"):
                        break
                except ssl.SSLCertVerificationError:
                    assert time.monotonic() < deadline, "renewed certificate never served"
                    time.sleep(0.05)  # the reload lands within ~1 s; bounded
            assert main_cert.read_bytes() != old_pem


def test_graceful_stop_finishes_the_request_in_flight(tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt:
            result: dict[str, object] = {}

            def slow() -> None:
                result["r"] = get(port, "/slow?1.0")

            t = threading.Thread(target=slow)
            t.start()
            rt.wait_status(lambda s: s["virtual_servers"]["web"]["connections_current"] == 1)
            assert rt.stop() == 0
            t.join(10)
            assert result["r"][0] == 200  # type: ignore[index]
            assert "lockgate-runtime: stopped" in rt.wait_line("lockgate-runtime: stopped", 5)


def _port_of(config: dict, name: str) -> int:
    return int(config["virtual_servers"][name]["properties"]["basic"]["port"])


def _read_until(s: socket.socket, end: bytes) -> bytes:
    """Read until ``end`` arrives; the connection closing first fails the test."""
    s.settimeout(10)
    data = b""
    while end not in data:
        piece = s.recv(65536)
        assert piece, f"closed before {end!r}; got {data!r}"
        data += piece
    return data


def _read_all(s: socket.socket) -> bytes:
    s.settimeout(10)
    data = b""
    while True:
        piece = s.recv(65536)
        if not piece:
            return data
        data += piece


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    key_pem, cert_pem = generate(name, [])
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return cert_path, key_path
