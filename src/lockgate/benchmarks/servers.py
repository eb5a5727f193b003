"""The processes under test: an nginx backend, HAProxy and lockgate, all on loopback.

Each is a long-lived child started by :func:`start_long_lived` (the one place
this package uses ``subprocess.Popen``; short programs go through
:mod:`lockgate.proc`) and always stopped by its context manager.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lockgate import proc
from lockgate.errors import Failure

#: The backend's answer: exactly 100 bytes, the size BENCHMARKING.md's figures use.
BODY = (b"lockgate bench backend: a fixed 100-byte body so every proxy moves the same bytes."
        .ljust(99, b".") + b"\n")
assert len(BODY) == 100
LOOPBACK = "127.0.0.1"
REQUIRED_TOOLS = {"haproxy": "haproxy", "nginx": "nginx-light", "wrk": "wrk",
                  "taskset": "util-linux"}


def missing_tools(tools: Sequence[str] = tuple(REQUIRED_TOOLS)) -> list[str]:
    """``"program (apt-get install package)"`` for every tool that is not installed."""
    return [f"{t} (apt-get install {REQUIRED_TOOLS[t]})" for t in tools if proc.which(t) is None]


def nofile_hard_limit() -> int:
    """The hard RLIMIT_NOFILE children can raise themselves to (containers cap it)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else int(hard)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A long-lived child process with its output kept (last lines) for error messages."""

    name: str
    popen: subprocess.Popen[bytes]
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=50))
    seen: threading.Condition = field(default_factory=threading.Condition)
    reader: threading.Thread | None = None
    on_line: Callable[[str], None] | None = None  # e.g. progress for long builds

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace").rstrip()
            with self.seen:
                self.lines.append(line)
                self.seen.notify_all()
            if self.on_line is not None:
                self.on_line(line)
        with self.seen:
            self.seen.notify_all()

    def tail(self) -> str:
        with self.seen:
            return " | ".join(list(self.lines)[-6:]) or "no output"

    def wait_exit(self, timeout: float) -> int:
        """Wait for the child to end by itself; stop it and fail after ``timeout`` s."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise Failure(f"{self.name}: not finished after {timeout:g} s; stopped") from None
        if self.reader is not None:
            self.reader.join(timeout=5)
        return code

    def output(self) -> str:
        with self.seen:
            return "\n".join(self.lines)

    def wait_for_line(self, marker: str, timeout: float) -> None:
        """Wait until a line starting with ``marker`` appears; fail if it exits or times out."""
        deadline = time.monotonic() + timeout
        with self.seen:
            while True:
                if any(line.startswith(marker) for line in self.lines):
                    return
                if self.popen.poll() is not None:
                    raise Failure(f"{self.name} exited with {self.popen.returncode} before "
                                  f"'{marker}': {' | '.join(list(self.lines)[-6:])}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"{self.name}: no '{marker}' within {timeout:g} s")
                self.seen.wait(min(left, 0.5))

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait ``grace`` s, then SIGKILL its own process group."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)  # the group we created for it
                self.popen.wait(timeout=10)
        # Workers that outlived their parent would keep ports and CPU: end the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self.reader is not None:
            self.reader.join(timeout=5)


def start_long_lived(name: str, argv: Sequence[str], env: dict[str, str] | None = None,
                     *, cwd: Path | None = None, keep_lines: int = 50,
                     on_line: Callable[[str], None] | None = None) -> Child:
    """Start a server (or a long build/boot) in its own session, so it and its
    workers can be stopped as a group; its output lines are kept and passed to ``on_line``."""
    program = argv[0] if os.sep in argv[0] else proc.which(argv[0])
    if program is None:
        raise Failure(f"{argv[0]}: not found")
    popen = subprocess.Popen([program, *argv[1:]], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})}, cwd=cwd,
                             start_new_session=True)
    child = Child(name, popen, deque(maxlen=keep_lines), on_line=on_line)
    child.reader = threading.Thread(target=child._read, name=f"bench-{name}-out", daemon=True)
    child.reader.start()
    return child


def wait_port(child: Child, port: int, timeout: float = 20.0) -> None:
    """Wait until ``port`` accepts connections (bounded; fails early if the child exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if child.popen.poll() is not None:
            raise Failure(f"{child.name} exited with {child.popen.returncode}: {child.tail()}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise Failure(f"{child.name}: port {port} not accepting after {timeout:g} s: "
                              f"{child.tail()}") from None
            time.sleep(0.05)  # nothing to wait on for a foreign server's listen()


def fetch(port: int, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check_serves_body(name: str, port: int) -> None:
    """The path under test answers 200 with the backend's exact body, or the bench stops."""
    try:
        status, body = fetch(port)
    except OSError as exc:
        raise Failure(f"{name} on port {port}: no answer ({exc})") from None
    if status != 200 or body != BODY:
        raise Failure(f"{name} on port {port}: got {status} with {len(body)} bytes, "
                      f"expected 200 with the backend's {len(BODY)}-byte body")


# --- nginx: the backend ------------------------------------------------------------

def nginx_conf(prefix: Path, port: int) -> str:
    body = BODY.decode().rstrip("\n")
    temp = "\n".join(f"    {d} {prefix}/{d.split('_')[0]};" for d in (
        "client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path",
        "uwsgi_temp_path", "scgi_temp_path"))
    return f"""# lockgate bench backend (generated)
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile {min(nofile_hard_limit(), 65536)};
events {{ worker_connections {min(nofile_hard_limit() // 2, 16384)}; }}
http {{
    access_log off;
{temp}
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {{
        listen {LOOPBACK}:{port} reuseport backlog=4096;
        default_type text/plain;
        location / {{ return 200 "{body}\\n"; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_backend(workdir: Path) -> Iterator[tuple[Child, int]]:
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port))
    proc.run(["nginx", "-t", "-q", "-p", str(prefix), "-e", str(prefix / "error.log"),
              "-c", str(conf)], timeout=30)
    child = start_long_lived("nginx", ["nginx", "-p", str(prefix), "-e",
                                       str(prefix / "error.log"), "-c", str(conf)])
    try:
        wait_port(child, port)
        check_serves_body("nginx backend", port)
        yield child, port
    finally:
        child.stop()


# --- the proxies -------------------------------------------------------------------

@dataclass(frozen=True)
class ProxyPorts:
    http: int
    tcp: int


def haproxy_conf(threads: int, ports: ProxyPorts, backend_port: int) -> str:
    # Same work as lockgate's defaults: keep-alive both sides, X-Forwarded-For/-Proto
    # added, idle/connect/request timeouts of the same order, no logging.
    # HAProxy refuses to start when it cannot raise its FD limit to ~2 x maxconn.
    maxconn = max(1000, min(40000, (nofile_hard_limit() - 200) // 2))
    return f"""# lockgate bench peer (generated)
global
    nbthread {threads}
    maxconn {maxconn}
    tune.bufsize 16384
defaults
    mode http
    timeout connect 10s
    timeout client 40s
    timeout server 40s
    timeout http-request 30s
    timeout http-keep-alive 40s
    option http-keep-alive
frontend bench_http
    bind {LOOPBACK}:{ports.http}
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    default_backend nginx_http
backend nginx_http
    http-reuse safe
    server nginx {LOOPBACK}:{backend_port}
frontend bench_tcp
    mode tcp
    bind {LOOPBACK}:{ports.tcp}
    default_backend nginx_tcp
backend nginx_tcp
    mode tcp
    server nginx {LOOPBACK}:{backend_port}
"""


def lockgate_config(workers: int, ports: ProxyPorts, backend_port: int) -> dict[str, object]:
    def vs(protocol: str, port: int) -> dict[str, object]:
        return {"properties": {"basic": {"protocol": protocol, "port": port, "pool": "nginx",
                                         "listen_on_hosts": [LOOPBACK]}}}

    return {
        "virtual_servers": {"bench-http": vs("http", ports.http), "bench-tcp": vs("tcp", ports.tcp)},
        "pools": {"nginx": {"properties": {"basic": {
            "nodes_table": [{"node": f"{LOOPBACK}:{backend_port}", "weight": 1}]}}}},
        "settings": {"workers": workers},
    }


def lockgate_argv() -> list[str]:
    script = Path(sys.executable).with_name("lockgate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lockgate"]


def lockgate_available() -> str | None:
    """None when ``lockgate runtime serve`` exists here, else why not."""
    result = proc.run([*lockgate_argv(), "runtime", "serve", "--help"], check=False,
                      capture=True, timeout=60)
    if result.returncode != 0:
        err = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        return f"'lockgate runtime serve' is not available ({err[-1] if err else 'no output'})"
    return None


@contextlib.contextmanager
def haproxy(workdir: Path, threads: int, backend_port: int) -> Iterator[tuple[Child, ProxyPorts]]:
    ports = ProxyPorts(free_port(), free_port())
    conf = workdir / f"haproxy-{threads}.cfg"
    conf.write_text(haproxy_conf(threads, ports, backend_port))
    proc.run(["haproxy", "-c", "-q", "-f", str(conf)], timeout=30)
    child = start_long_lived("haproxy", ["haproxy", "-db", "-f", str(conf)])
    try:
        for port in (ports.http, ports.tcp):
            wait_port(child, port)
            check_serves_body(f"haproxy nbthread {threads}", port)
        yield child, ports
    finally:
        child.stop()


@contextlib.contextmanager
def lockgate_proxy(workdir: Path, workers: int,
                   backend_port: int) -> Iterator[tuple[Child, ProxyPorts]]:
    ports = ProxyPorts(free_port(), free_port())
    state = workdir / f"lockgate-state-{workers}-{ports.http}"
    conf = workdir / f"lockgate-{workers}.json"
    conf.write_text(json.dumps(lockgate_config(workers, ports, backend_port), indent=2))
    child = start_long_lived("lockgate", [
        *lockgate_argv(), "runtime", "serve", "--config", str(conf), "--state-dir", str(state),
        "--workers", str(workers), "--no-management", "--grace", "2"])
    try:
        child.wait_for_line("lockgate-runtime: serving", timeout=60)
        for port in (ports.http, ports.tcp):
            wait_port(child, port)
            check_serves_body(f"lockgate {workers} worker(s)", port)
        yield child, ports
    finally:
        child.stop()
