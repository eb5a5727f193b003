"""The management plane under abuse: slow clients, connection floods, pipelining non-readers.

Issue 10's findings, scaled down so they run in seconds: limits are passed small
(``running(limits=...)`` or ``management.json`` for the real ``serve``), the
attack shapes are the ones that locked the admin out or grew the supervisor.
Attackers use other loopback addresses (127.0.0.2 ...) as other client IPs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest
from test_api_support import PASSWORD, Running, basic, running, write_users

from lockgate.runtime.api.http import Limits

SERVING = re.compile(r"admin=https://[^ ]+:(?P<admin>\d+) rest=https://[^ ]+:(?P<rest>\d+)")


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_within(sock: socket.socket, seconds: float, dribble: bytes, every: float) -> float:
    """Send ``dribble`` a byte every ``every`` s until the server closes; the time it took.

    Fails if the server still holds the connection after ``seconds``."""
    began = time.monotonic()
    for byte in dribble:
        if time.monotonic() - began > seconds:
            break
        try:
            sock.sendall(bytes([byte]))
            sock.settimeout(every)
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return time.monotonic() - began
        if not data or b" 408 " in data:
            return time.monotonic() - began
    pytest.fail(f"server still holds a dribbling connection after {seconds} s")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    write_users(tmp_path)
    return tmp_path


def _tls(run: Running, sock: socket.socket) -> ssl.SSLSocket:
    return run.context.wrap_socket(sock, server_hostname="lockgate")


def _admin_get(run: Running, port: int, source: str = "127.0.0.1",
               conn: ssl.SSLSocket | None = None) -> int:
    """One authenticated request (REST: Basic; Admin UI: a login); 200 when it worked."""
    tls = conn or _tls(run, _connect(port, source))
    if port == run.rest_port:
        tls.sendall(f"GET /api/tm/1.0/config/active HTTP/1.1\r\nHost: lockgate\r\n"
                    f"Authorization: {basic('admin', PASSWORD)}\r\n\r\n".encode())
    else:
        form = urlencode({"username": "admin", "password": PASSWORD}).encode()
        tls.sendall(b"POST /login HTTP/1.1\r\nHost: lockgate\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(form), form))
    response = http.client.HTTPResponse(tls)
    response.begin()
    response.read()
    if conn is None:
        tls.close()
    # The Admin UI answers a good login with a redirect and a session cookie.
    if response.status == 303 and response.getheader("Set-Cookie"):
        return 200
    return response.status


def test_dribbled_request_head_is_cut_at_the_header_deadline(state: Path) -> None:
    # A byte every 0.2 s used to restart the idle timer forever.
    limits = Limits(header_timeout=1.0, idle_timeout=30.0)
    with running(state, limits=limits) as run:
        for port in (run.rest_port, run.admin_port):
            tls = _tls(run, _connect(port))
            tls.sendall(b"GET / HTTP/1.1\r\n")
            took = _closed_within(tls, 4.0, b"X-Slow: " + b"a" * 200, every=0.2)
            tls.close()
            assert took < 3.0


def test_dribbled_tls_handshake_is_cut_at_the_header_deadline(state: Path) -> None:
    # The deadline starts at accept: a ClientHello sent a byte at a time counts.
    limits = Limits(header_timeout=1.0, idle_timeout=30.0)
    with running(state, limits=limits) as run:
        sock = _connect(run.rest_port)
        took = _closed_within(sock, 4.0, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20,
                              every=0.2)
        sock.close()
        assert took < 3.0


_ANY_CERT = ssl.create_default_context()
_ANY_CERT.check_hostname = False
_ANY_CERT.verify_mode = ssl.CERT_NONE  # attackers do not care whom they talk to


@contextmanager
def _slow_clients(port: int, sources: list[str], each: int,
                  tls: bool = True) -> Iterator[list[socket.socket]]:
    """``each`` connections from every source, each holding a half-sent request head
    (after a full TLS handshake), or with ``tls=False`` a half-sent ClientHello."""
    with ExitStack() as stack:
        socks: list[socket.socket] = []
        for source in sources:
            for _ in range(each):
                try:
                    sock: socket.socket = stack.enter_context(_connect(port, source))
                    if tls:
                        sock = stack.enter_context(_ANY_CERT.wrap_socket(sock))
                        sock.sendall(b"GET / HTTP/1.1\r\n")
                    else:
                        sock.sendall(b"\x16")  # the first byte of a ClientHello, no more
                except OSError:
                    continue  # refused or evicted at once: that is fine too
                socks.append(sock)
        yield socks


def test_slow_clients_cannot_lock_the_admin_out(state: Path) -> None:
    # Long deadlines: only the connection caps and eviction can save the admin here.
    limits = Limits(header_timeout=60.0, idle_timeout=60.0, max_connections=12,
                    max_connections_per_ip=4)
    attackers = [f"127.0.0.{n}" for n in range(2, 8)]
    with running(state, limits=limits) as run:
        for port in (run.rest_port, run.admin_port):
            with _slow_clients(port, [*attackers, "127.0.0.1"], 8):
                # Another IP, and the attackers' own IP.
                assert _admin_get(run, port, "127.0.0.20") == 200
                assert _admin_get(run, port, "127.0.0.2") == 200
                assert _admin_get(run, port, "127.0.0.1") == 200
                # Once authenticated, a connection is not evicted by a later flood.
                kept = _tls(run, _connect(port, "127.0.0.2"))
                assert _admin_get(run, port, conn=kept) == 200
                with _slow_clients(port, attackers, 8):
                    assert _admin_get(run, port, conn=kept) == 200
                kept.close()
                assert len(run.mgmt.rest.connections if port == run.rest_port
                           else run.mgmt.admin.connections) <= limits.max_connections


def _closed_by_server(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:  # reset, or a TLS record cut short
        return True


def test_per_ip_cap_evicts_the_oldest_unauthenticated(state: Path) -> None:
    limits = Limits(header_timeout=60.0, max_connections=100, max_connections_per_ip=3)
    with running(state, limits=limits) as run, \
            _slow_clients(run.rest_port, ["127.0.0.3"], 10) as socks:
        assert sum(1 for c in run.mgmt.rest.connections if c.client == "127.0.0.3") <= 3
        assert run.mgmt.rest.counters["evicted"] >= 7
        assert _closed_by_server(socks[0], 5.0)  # the oldest went
        assert not _closed_by_server(socks[-1], 0.3)  # the newest stays


# --- write-side flow control and a memory bound, on the real ``serve`` --------------

def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _settled(pid: int, timeout: float) -> None:
    """Wait until ``pid`` used no CPU for 0.5 s (bounded)."""
    deadline = time.monotonic() + timeout
    last = _cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu_ticks(pid)
        if now == last:
            return
        last = now


@contextmanager
def _serve(state_dir: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    argv = [sys.executable, "-m", "lockgate", "runtime", "serve", "--state-dir", str(state_dir),
            "--workers", "1", "--grace", "1", "--management-host", "127.0.0.1",
            "--rest-port", "0", "--admin-port", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            match = SERVING.search(line)
            if match:
                yield proc, int(match["rest"]), int(match["admin"])
                return
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _pipeline_without_reading(port: int, context: ssl.SSLContext, request: bytes,
                              count: int, seconds: float) -> int:
    """Send ``count`` pipelined requests, never reading; how many the server took."""
    tls = context.wrap_socket(_connect(port), server_hostname="lockgate")
    tls.settimeout(1.0)
    batch = request * 500
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while sent < count and time.monotonic() < deadline:
            try:
                tls.sendall(batch)
            except TimeoutError:
                break  # the server stopped reading: what it should do
            sent += 500
    finally:
        # Held open (unread) while the caller measures; closed by the caller's exit.
        _HELD.append(tls)
    return sent


_HELD: list[ssl.SSLSocket] = []


@pytest.mark.timeout(120)
def test_pipelining_client_that_never_reads_does_not_grow_the_supervisor(tmp_path: Path) -> None:
    write_users(tmp_path)
    (tmp_path / "config" / "management.json").write_text(json.dumps(
        {"write_buffer_high": 65536, "header_timeout": 30, "idle_timeout": 60}))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test needs bytes through, not the pinning
    # 404s with a 1.3 KiB page each: 40,000 of them unread would be ~60 MiB.
    request = b"GET /nowhere HTTP/1.1\r\nHost: lockgate\r\n\r\n"
    with _serve(tmp_path) as (proc, _rest, admin):
        warm = context.wrap_socket(_connect(admin), server_hostname="lockgate")
        warm.sendall(request * 20)
        time.sleep(0.5)
        warm.close()
        _settled(proc.pid, 10)
        before = _rss_kib(proc.pid)
        try:
            _pipeline_without_reading(admin, context, request, 40000, seconds=30)
            _settled(proc.pid, 30)
            grown_mib = (_rss_kib(proc.pid) - before) / 1024
            # Still serving others while the non-reader sits there.
            other = context.wrap_socket(_connect(admin), server_hostname="lockgate")
            other.sendall(b"GET /login HTTP/1.1\r\nHost: lockgate\r\nConnection: close\r\n\r\n")
            response = http.client.HTTPResponse(other)
            response.begin()
            assert response.status == 200
            other.close()
        finally:
            while _HELD:
                _HELD.pop().close()
        assert grown_mib < 4.0, f"supervisor RSS grew {grown_mib:.1f} MiB"


def _read_until_closed(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_half_sent_head_gets_408_and_half_sent_body_too(state: Path) -> None:
    limits = Limits(header_timeout=0.5, body_timeout=0.5)
    with running(state, limits=limits) as run:
        tls = _tls(run, _connect(run.rest_port))
        tls.sendall(b"GET /api/tm/1.0 HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        answer = _read_until_closed(tls, 5.0)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"http.request_timeout" in answer
        assert time.monotonic() - began < 3.0
        tls.close()
        tls = _tls(run, _connect(run.rest_port))
        tls.sendall(b"PUT /api/tm/1.0/config/active/pools/p HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 100\r\n\r\n{\"prop")
        answer = _read_until_closed(tls, 5.0)
        assert answer.startswith(b"HTTP/1.1 408 ")
        tls.close()
        assert run.mgmt.rest.counters["timeout_head"] == 1
        assert run.mgmt.rest.counters["timeout_body"] == 1


def test_a_connection_whose_answers_sit_unread_is_closed(state: Path) -> None:
    limits = Limits(idle_timeout=1.0, write_buffer_high=4096)
    with running(state, limits=limits) as run:
        tls = _tls(run, _connect(run.admin_port))
        tls.settimeout(1.0)
        with contextlib.suppress(TimeoutError):
            for _ in range(200):  # ~1.3 KiB answers: far past 4 KiB plus the socket buffers
                tls.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
        time.sleep(2.5)  # the stall limit (1 s) and some: the server has given up by now
        received = 0
        tls.settimeout(1.0)
        try:
            while chunk := tls.recv(65536):
                received += len(chunk)
        except TimeoutError:
            pytest.fail("the server still holds a connection whose answers sit unread")
        except OSError:
            pass  # reset: also closed
        tls.close()
        assert run.mgmt.admin.counters["timeout_write"] == 1
        assert received < 20000 * 1000  # it stopped answering long before the last request


def test_an_admin_ui_session_counts_as_authenticated(state: Path) -> None:
    limits = Limits(header_timeout=60.0, max_connections=50, max_connections_per_ip=2)
    with running(state, limits=limits) as run:
        login = run.request("POST", "/login", "username=admin&password=" + PASSWORD,
                            port=run.admin_port,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        cookie = login.headers["set-cookie"].split(";")[0]
        kept = _tls(run, _connect(run.admin_port))
        request = f"GET / HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode()
        kept.sendall(request)
        first = http.client.HTTPResponse(kept)
        first.begin()
        assert first.status == 200 and b"Log out" in first.read()
        with _slow_clients(run.admin_port, ["127.0.0.1"], 6):
            kept.sendall(request)
            again = http.client.HTTPResponse(kept)
            again.begin()
            assert again.status == 200
            again.read()
        kept.close()


def test_the_issues_520_slow_tls_clients_with_the_default_limits(state: Path) -> None:
    # Issue 10 as reported: 512 slow TLS clients locked the admin out of both ports.
    with running(state) as run, _slow_clients(run.rest_port, ["127.0.0.2"], 520):
        assert len(run.mgmt.rest.connections) <= Limits().max_connections_per_ip
        assert _admin_get(run, run.rest_port, "127.0.0.9") == 200
        assert _admin_get(run, run.rest_port, "127.0.0.2") == 200


def test_a_request_followed_by_close_notify_is_answered(state: Path) -> None:
    with running(state) as run:
        tls = _tls(run, _connect(run.rest_port))
        tls.sendall(f"GET /api/tm/1.0 HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: {basic('admin', PASSWORD)}\r\n\r\n".encode())
        # close_notify right behind the request; unwrap() then waits for the server's.
        # The answer arriving first is what shows the request was served (a server that
        # dropped it would just send its own close_notify, and unwrap() would succeed).
        with pytest.raises(ssl.SSLError, match="APPLICATION_DATA_AFTER_CLOSE_NOTIFY"):
            tls.unwrap()
        tls.close()
