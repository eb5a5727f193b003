"""Helpers for the traffic-manager tests: real backends, nginx and `lockgate runtime serve`.

Backends are threaded ``http.server`` instances on free loopback ports that
say who they are, count hits and misbehave on request (slow, chunked, echo,
huge, garbage). The runtime runs as the real command in a subprocess; tests
wait for its ``lockgate-runtime: serving`` line, never a sleep.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from lockgate.runtime.status import snapshot


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Backend

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows failures, not access logs

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Node", self.server.name)
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.server.hit()
        self.send_response(200)
        self.send_header("Content-Length", "1234")
        self.end_headers()

    def do_GET(self) -> None:
        self.server.hit()
        path, _, query = self.path.partition("?")
        if path == "/slow":
            time.sleep(float(query or "0.5"))
            self._send(self.server.name.encode())
        elif path == "/headers":
            self._send(json.dumps(dict(self.headers.items())).encode())
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(query or "5")):
                piece = f"piece-{i};".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/big":
            size = int(query or str(200 << 20))
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = b"x" * 65536
            sent = 0
            with contextlib.suppress(OSError):
                while sent < size:
                    self.wfile.write(block)
                    sent += len(block)
                    self.server.big_sent = sent
        elif path == "/ws" and self.headers.get("Upgrade"):
            self.send_response(101)
            self.send_header("Upgrade", self.headers["Upgrade"])
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while line := self.rfile.readline():  # echo lines until the client closes
                self.wfile.write(b"echo:" + line)
                self.wfile.flush()
            self.close_connection = True
        elif path == "/garbage":
            self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
            self.close_connection = True
        else:
            self._send(self.server.name.encode())

    def do_POST(self) -> None:
        self.server.hit()
        body = self._body()
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Node", self.server.name)
        self.end_headers()
        for i in range(0, len(body), 1000):
            piece = body[i:i + 1000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    do_PUT = do_POST


class Backend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), Handler)
        self.name = name
        self.hits = 0
        self.big_sent = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def hit(self) -> None:
        with self._lock:
            self.hits += 1

    def start(self) -> Backend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


@contextlib.contextmanager
def backends(*names: str) -> Iterator[list[Backend]]:
    servers = [Backend(n).start() for n in names]
    try:
        yield servers
    finally:
        for s in servers:
            with contextlib.suppress(OSError):
                s.stop()


@contextlib.contextmanager
def nginx(tmp: Path, body: str = "hello from nginx\n") -> Iterator[str]:
    """A real nginx on a free loopback port answering ``body``; yields "127.0.0.1:PORT"."""
    binary = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert binary, "nginx is not installed (apt-get install nginx-light)"
    port = free_port()
    prefix = tmp / "nginx"
    (prefix / "logs").mkdir(parents=True)
    (prefix / "html").mkdir()
    (prefix / "html" / "index.html").write_text(body)
    (prefix / "nginx.conf").write_text(f"""
daemon off; master_process off; worker_processes 1; pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
  fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
  keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}; root {prefix}/html; location / {{ index index.html; }} }}
}}
""")
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port("127.0.0.1", port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes] | None = None,
              timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.02)  # bounded readiness poll of a port we do not control
    raise AssertionError(f"{host}:{port} not listening after {timeout} s")


def vs(port: int, pool: str = "web", **sections: dict[str, Any]) -> dict[str, Any]:
    basic = {"port": port, "pool": pool, "listen_on_hosts": ["127.0.0.1"],
             **sections.pop("basic", {})}
    return {"properties": {"basic": basic, **sections}}


def pool_of(*addresses: str, **sections: dict[str, Any]) -> dict[str, Any]:
    basic = {"nodes_table": [{"node": a} for a in addresses], **sections.pop("basic", {})}
    return {"properties": {"basic": basic, **sections}}


class Runtime:
    """`lockgate runtime serve` in a subprocess, stopped by the fixture."""

    def __init__(self, tmp: Path, config: dict[str, Any], workers: int = 1,
                 extra: list[str] | None = None) -> None:
        self.tmp = tmp
        self.state_dir = tmp / "state"
        self.config_file = tmp / "lockgate.yaml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.lines: queue.Queue[str] = queue.Queue()
        self.argv = [sys.executable, "-m", "lockgate", "runtime", "serve", "--config",
                     str(self.config_file), "--state-dir", str(self.state_dir), "--workers",
                     str(workers), "--no-management", "--grace", "3", *(extra or [])]
        self.proc: subprocess.Popen[str] | None = None
        self.serving_line = ""

    def start(self, timeout: float = 30.0) -> Runtime:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._collect, args=(self.proc.stderr,), daemon=True).start()
        self.serving_line = self.wait_line("lockgate-runtime: serving", timeout)
        return self

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def _collect(self, stream: Any) -> None:
        for line in stream:
            self.stderr_lines.append(line)

    def wait_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} line; stderr: {''.join(self.stderr_lines)}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                assert self.proc is not None
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(f"serve exited {self.proc.returncode}: "
                                         f"{''.join(self.stderr_lines)}") from None
                continue
            if line.startswith(prefix):
                return line

    def worker_pids(self) -> list[int]:
        folder = self.state_dir / "runtime" / "run"
        pids = []
        for path in folder.glob("worker-*.json"):
            with contextlib.suppress(ValueError, FileNotFoundError):
                pids.append(int(json.loads(path.read_text())["pid"]))
        return pids

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self.state_dir)

    def wait_status(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.snapshot()
            with contextlib.suppress(KeyError):
                if predicate(snap):
                    return snap
            time.sleep(0.05)  # status files are rewritten every second; bounded
        raise AssertionError(f"status never matched: {self.snapshot()}")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@contextlib.contextmanager
def runtime(tmp: Path, config: dict[str, Any], workers: int = 1,
            extra: list[str] | None = None) -> Iterator[Runtime]:
    rt = Runtime(tmp, config, workers, extra).start()
    try:
        yield rt
    finally:
        rt.stop()


def get(port: int, path: str = "/", headers: dict[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None, method: str = "GET",
        body: Any = None, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        resp = c.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        if own:
            c.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")
