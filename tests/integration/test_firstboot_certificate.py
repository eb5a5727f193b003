"""First boot makes the management certificate, so Services Director registration sends its
fingerprint; the runtime then serves that very certificate.

Real processes throughout: ``lockgate firstboot run`` with ``sd_address`` pointing at a
fake Services Director (HTTPS on loopback, pinned by ``sd_cert``), then ``lockgate runtime
serve`` on the same state directory. The fingerprint first boot prints on the console, the
one Services Director received and the ones served on the REST API and Admin UI ports must
be one and the same.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from lockgate.paths import StatePaths
from lockgate.runtime.tls import fingerprint, generate

LOCKGATE = str(Path(sys.executable).with_name("lockgate"))
FP = r"(?:[0-9A-F]{2}:){19}[0-9A-F]{2}"
SECRET = "Owner-Secret-771"
PASSWORD = "Register-Pw-42"


@contextmanager
def services_director(tmp: Path) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """A loopback HTTPS server answering the registration call; yields (address, sd_cert,
    the request bodies it received)."""
    key_pem, cert_pem = generate("sd.example", ["127.0.0.1"])
    (tmp / "sd.crt").write_bytes(cert_pem)
    (tmp / "sd.key").write_bytes(key_pem)
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append({"path": self.path, **json.loads(self.rfile.read(length))})
            self.send_response(201)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass  # keep the test output to what matters

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "sd.crt", tmp / "sd.key")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    body = "".join(line for line in cert_pem.decode().splitlines()
                   if not line.startswith("-----"))
    try:
        yield f"127.0.0.1:{server.server_address[1]}", body, received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _pump(stream: IO[str], lines: queue.Queue[str], keep: list[str]) -> None:
    for line in stream:
        keep.append(line)
        lines.put(line.rstrip("\n"))


@contextmanager
def serve(state_dir: Path) -> Iterator[str]:
    """``lockgate runtime serve`` on kernel-chosen loopback ports; yields its serving line."""
    argv = [LOCKGATE, "runtime", "serve", "--state-dir", str(state_dir), "--workers", "1",
            "--grace", "1", "--management-host", "127.0.0.1", "--rest-port", "0",
            "--admin-port", "0", "--control-port", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []
    err: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    threading.Thread(target=_pump, args=(proc.stdout, lines, out), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, queue.Queue(), err), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, f"no serving line; stderr: {''.join(err)}"
            assert proc.poll() is None, f"serve exited {proc.returncode}: {''.join(err)}"
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith("lockgate-runtime: serving"):
                break
        yield line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_registration_console_and_served_certificate_share_one_fingerprint(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    console = tmp_path / "console"
    with services_director(tmp_path) as (address, sd_cert, received):
        user_data = tmp_path / "user-data"
        user_data.write_text(f"password={PASSWORD} accept_license=Yes sd_address={address} "
                             f"sd_cert={sd_cert} registration_policy=policy-7 owner=team-b "
                             f"owner_secret={SECRET}\n")
        proc = subprocess.run(
            [LOCKGATE, "firstboot", "run", "--source", f"file:{user_data}", "--root", str(root),
             "--console", str(console), "--timeout", "10"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "LOCKGATE_PURE_PYTHON": "1"})
    assert proc.returncode == 0, proc.stderr
    status = json.loads((root / "run/lockgate/firstboot.json").read_text())
    steps = {s["name"]: s["result"] for s in status["steps"]}
    assert steps["certificate"] == "ok" and steps["register"] == "ok", status

    console_fps = re.findall(rf"certificate SHA-1 fingerprint: ({FP})", console.read_text())
    assert len(console_fps) == 1, console.read_text()
    [printed] = console_fps
    [registration] = received
    assert registration["path"] == "/api/tmcm/2.9/instance/register"
    assert registration["fingerprint"] == printed

    state_dir = StatePaths.under_root(root).base
    cert_file = StatePaths(state_dir).tls / "admin.crt"
    assert fingerprint(cert_file.read_bytes()) == printed
    with serve(state_dir) as serving:
        match = re.search(rf"admin=https://127\.0\.0\.1:(\d+) rest=https://127\.0\.0\.1:(\d+) "
                          rf"fingerprint=({FP})", serving)
        assert match, serving
        admin_port, rest_port, served_line_fp = int(match[1]), int(match[2]), match[3]
        assert served_line_fp == printed
        for port in (admin_port, rest_port):
            pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
            assert fingerprint(pem.encode()) == printed, port
    everything = proc.stdout + proc.stderr + console.read_text()
    assert SECRET not in everything
