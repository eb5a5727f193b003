"""The licence in a real ``lockgate runtime serve``: nothing is proxied until it is
accepted (REST and /metrics say why), acceptance is picked up without a restart,
the Community Edition's 10 Mb/s is kept on a real transfer (HTTP and TCP), and
expired or invalid keys fall back to the Community Edition with a message.

The serve process gets an environment without ``LOCKGATE_LICENCE_DEV`` (which the
suite's conftest sets for every other test) and its own trusted licence-key folder.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_api_support import PASSWORD, basic, write_users
from test_runtime_support import free_port, pool_of, vs

from lockgate.firstboot.apply.licence import accept_licence
from lockgate.runtime.licence import DEV_ENV, NOT_ACCEPTED, key_file, sign_licence

BODY = 5 * 1024 * 1024  # at 10 Mb/s: ~4.2 s per transfer, so each is measured over > 3 s
CAP_BYTES_S = 10_000_000 / 8
LICENCE_PATH = "/api/tm/1.0/status/local_tm/licence"


class BigHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(BODY))
        self.end_headers()
        chunk = b"x" * 65536
        for _ in range(BODY // len(chunk)):
            self.wfile.write(chunk)


def send_body(conn: socket.socket) -> None:
    with conn:
        try:
            conn.sendall(b"y" * BODY)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # wait for the proxy to close
        except OSError:
            pass


def tcp_source(sock: socket.socket) -> None:
    """Each connection gets BODY bytes (in its own thread), then the end of the stream."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return  # the test closed the listening socket
        conn.settimeout(30)  # a stuck proxy cannot keep the thread forever
        threading.Thread(target=send_body, args=(conn,), daemon=True).start()


class Serve:
    def __init__(self, tmp: Path, workers: int = 1) -> None:
        self.root = tmp / "root"
        self.state = self.root / "var/lib/lockgate"
        self.keys = tmp / "licence-keys"
        self.keys.mkdir()
        self.signer = Ed25519PrivateKey.generate()
        (self.keys / "issuer.pub").write_bytes(self.signer.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.http_backend = ThreadingHTTPServer(("127.0.0.1", 0), BigHandler)
        self.http_backend.daemon_threads = True
        threading.Thread(target=self.http_backend.serve_forever, daemon=True).start()
        self.tcp_backend = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=tcp_source, args=(self.tcp_backend,), daemon=True).start()
        self.http_port, self.tcp_port = free_port(), free_port()
        self.rest_port = free_port()
        http_node = f"127.0.0.1:{self.http_backend.server_address[1]}"
        tcp_node = f"127.0.0.1:{self.tcp_backend.getsockname()[1]}"
        config = {"pools": {"web": pool_of(http_node), "raw": pool_of(tcp_node)},
                  "virtual_servers": {
                      "web": vs(self.http_port, "web"),
                      "raw": vs(self.tcp_port, "raw", basic={"protocol": "tcp"})}}
        conf = tmp / "lockgate.yaml"
        conf.write_text(yaml.safe_dump(config))
        write_users(self.state)
        env = {k: v for k, v in os.environ.items() if k != DEV_ENV}
        env["LOCKGATE_LICENCE_KEYS_DIR"] = str(self.keys)
        argv = [sys.executable, "-m", "lockgate", "runtime", "serve", "--config", str(conf),
                "--state-dir", str(self.state), "--workers", str(workers), "--grace", "1",
                "--management-host", "127.0.0.1", "--rest-port", str(self.rest_port),
                "--admin-port", str(free_port()), "--control-port", str(free_port())]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr or ()),
                         daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, f"serve exited: {''.join(self.stderr)}"
                assert time.monotonic() < deadline, "serve did not start"
                continue
            if line.startswith("lockgate-runtime: serving"):
                break

    def _pump(self) -> None:
        for line in self.proc.stdout or ():
            self.lines.put(line)

    def rest(self, path: str) -> tuple[int, bytes]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # loopback, the appliance's self-signed certificate
        req = urllib.request.Request(f"https://127.0.0.1:{self.rest_port}{path}",
                                     headers={"Authorization": basic("admin", PASSWORD)})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as reply:
            return reply.status, reply.read()

    def licence(self) -> dict[str, Any]:
        status, body = self.rest(LICENCE_PATH)
        assert status == 200
        doc: dict[str, Any] = json.loads(body)["licence"]
        return doc

    def wait_licence(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.licence()
            if predicate(doc):
                return doc
            assert time.monotonic() < deadline, f"licence never matched: {doc}"
            time.sleep(0.1)

    def install_key(self, licence: dict[str, Any], signer: Ed25519PrivateKey | None = None) -> None:
        path = key_file(self.state)
        path.write_bytes(sign_licence(signer or self.signer, licence))
        path.chmod(0o600)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.http_backend.shutdown()
        self.http_backend.server_close()
        self.tcp_backend.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    running = Serve(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def serve_two_workers(tmp_path: Path) -> Iterator[Serve]:
    running = Serve(tmp_path, workers=2)
    try:
        yield running
    finally:
        running.stop()


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, f"port {port} never opened"
            time.sleep(0.1)


def receive_all(port: int, request: bytes) -> tuple[int, float]:
    """Bytes received until the proxy ends the stream, and the seconds from the first
    byte to the last (the rate is measured over the steady transfer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        if request:
            sock.sendall(request)
        total = 0
        first = last = 0.0
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            now = time.monotonic()
            if not total:
                first = now
            total += len(data)
            last = now
    return total, last - first


def http_get(_port: int) -> bytes:
    return b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def test_nothing_proxied_until_accepted_then_ce_rate(serve: Serve) -> None:
    # Not accepted: the listeners are not open, REST and /metrics say why.
    doc = serve.licence()
    assert doc["accepted"] is False and doc["proxying"] is False
    assert NOT_ACCEPTED in doc["message"]
    for port in (serve.http_port, serve.tcp_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    _, metrics = serve.rest("/metrics")
    assert b"lockgate_licence_accepted 0" in metrics
    assert NOT_ACCEPTED.encode() in metrics
    deadline = time.monotonic() + 10
    while True:  # the workers write their status about once a second
        try:
            _, stats = serve.rest("/api/tm/1.0/status/local_tm/statistics/virtual_servers/web")
            break
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and time.monotonic() < deadline
            time.sleep(0.2)
    web = json.loads(stats)["statistics"]
    assert web["state"] == "error" and NOT_ACCEPTED in (web["error"] or "")

    # Accepted later (as the wizard does): picked up without a restart.
    accept_licence(serve.root, True)
    wait_listening(serve.http_port)
    wait_listening(serve.tcp_port)
    doc = serve.licence()
    assert doc["accepted"] is True and doc["edition"] == "community"
    assert doc["bandwidth_mbit_s"] == 10 and doc["max_cluster_size"] == 4

    # Community Edition: 10 Mb/s in total, on a real transfer through each kind.
    for port, request, minimum in ((serve.http_port, http_get(serve.http_port), BODY),
                                   (serve.tcp_port, b"", BODY)):
        size, seconds = receive_all(port, request)
        assert size >= minimum
        rate = size / seconds
        print(f"port {port}: {size} bytes in {seconds:.2f} s = {rate * 8 / 1e6:.2f} Mb/s")
        assert seconds >= 3.0
        assert 0.9 * CAP_BYTES_S <= rate <= 1.1 * CAP_BYTES_S, rate * 8 / 1e6


def test_keys_expired_invalid_and_unlimited(serve: Serve) -> None:
    accept_licence(serve.root, True)
    wait_listening(serve.http_port)
    base = {"serial": "L-1", "licensee": "Test", "bandwidth_mbit_s": 0,
            "max_cluster_size": 16, "expires": "2099-12-31"}

    serve.install_key({**base, "expires": "2020-01-31"})
    doc = serve.wait_licence(lambda d: "expired" in d["message"])
    assert doc["edition"] == "community" and doc["bandwidth_mbit_s"] == 10
    assert "expired on 2020-01-31" in doc["message"] and "Community Edition" in doc["message"]

    serve.install_key(base, signer=Ed25519PrivateKey.generate())  # not our issuer
    doc = serve.wait_licence(lambda d: "signature" in d["message"])
    assert doc["edition"] == "community" and "Community Edition" in doc["message"]

    key_file(serve.state).write_text("not a key\n")
    doc = serve.wait_licence(lambda d: "not JSON" in d["message"])
    assert doc["edition"] == "community"

    # A valid key without a bandwidth limit: the worker drops the throttle (~1 s poll).
    serve.install_key(base)
    doc = serve.wait_licence(lambda d: d["edition"] == "licensed")
    assert doc["bandwidth_mbit_s"] == 0 and doc["max_cluster_size"] == 16 and not doc["message"]
    deadline = time.monotonic() + 10
    while True:
        status = json.loads((serve.state / "runtime/run/worker-0.json").read_text())
        if status.get("licence", {}).get("edition") == "licensed":
            break
        assert time.monotonic() < deadline, status.get("licence")
        time.sleep(0.1)
    size, seconds = receive_all(serve.http_port, http_get(serve.http_port))
    assert size >= BODY
    assert size / seconds > 5 * CAP_BYTES_S  # far above 10 Mb/s on loopback


def test_two_workers_share_the_cap(serve_two_workers: Serve) -> None:
    """The workers share one bucket: four parallel TCP downloads, however the kernel
    spreads them over the two workers, get 10 Mb/s in total, no more and not half.

    A worker reads up to 256 KB at a time and the bucket lets a read through before
    it pauses the socket, so over a few seconds the bytes come in steps of a read per
    connection. The bound checked is therefore the bucket's own guarantee, bytes by
    time T <= cap * T + each worker's burst + one read per connection, over T = 6 s."""
    serve = serve_two_workers
    accept_licence(serve.root, True)
    wait_listening(serve.tcp_port)
    period = 6.0
    received = [0] * 4
    start = time.monotonic()

    def download(index: int) -> None:
        with socket.create_connection(("127.0.0.1", serve.tcp_port), timeout=10) as sock:
            sock.settimeout(0.2)
            while time.monotonic() < start + period:
                try:
                    data = sock.recv(1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    break
                if time.monotonic() < start + period:
                    received[index] += len(data)

    threads = [threading.Thread(target=download, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    total = sum(received)
    rate = total / period
    print(f"two workers, four downloads over {period:g} s: {rate * 8 / 1e6:.2f} Mb/s in "
          f"total {received}")
    assert total <= CAP_BYTES_S * period + 2 * 64 * 1024 + 4 * 256 * 1024
    assert total >= 0.8 * CAP_BYTES_S * period  # the whole cap, not one worker's half
