"""`lockgate runtime serve` with the management plane: the console line, pinned HTTPS, no secrets."""

from __future__ import annotations

import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from test_api_support import PASSWORD, basic, write_users

from lockgate.runtime.tls import fingerprint

SERVING = re.compile(r"^lockgate-runtime: serving .*admin=https://(?P<admin_host>[^ ]+):"
                     r"(?P<admin>\d+) rest=https://(?P<rest_host>[^ ]+):(?P<rest>\d+) "
                     r"fingerprint=(?P<fp>(?:[0-9A-F]{2}:){19}[0-9A-F]{2})$")


def _pump(stream: IO[str], lines: queue.Queue[str], keep: list[str]) -> None:
    for line in stream:
        keep.append(line)
        lines.put(line.rstrip("\n"))


def test_serve_prints_the_console_line_and_serves_rest_and_admin(tmp_path: Path) -> None:
    write_users(tmp_path)
    argv = [sys.executable, "-m", "lockgate", "runtime", "serve", "--state-dir", str(tmp_path),
            "--workers", "1", "--grace", "1", "--management-host", "127.0.0.1",
            "--rest-port", "0", "--admin-port", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []
    err: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    threading.Thread(target=_pump, args=(proc.stdout, lines, out), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, queue.Queue(), err), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        serving = None
        while serving is None:
            assert time.monotonic() < deadline, f"no serving line; stderr: {''.join(err)}"
            assert proc.poll() is None, f"serve exited {proc.returncode}: {''.join(err)}"
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith("lockgate-runtime: serving"):
                serving = line
        match = SERVING.match(serving)
        assert match, serving
        cert_file = tmp_path / "tls" / "admin.crt"
        assert match["fp"] == fingerprint(cert_file.read_bytes())
        rest_port, admin_port = int(match["rest"]), int(match["admin"])
        assert match["rest_host"] == match["admin_host"] == "127.0.0.1"
        peer = ssl.get_server_certificate(("127.0.0.1", rest_port), timeout=10)
        assert fingerprint(peer.encode()) == match["fp"]

        import http.client
        context = ssl.create_default_context(cafile=str(cert_file))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", rest_port, context=context, timeout=20)
        conn.request("PUT", "/api/tm/1.0/config/active/pools/web",
                     body=b'{"properties": {"basic": {"nodes_table": [{"node": "127.0.0.1:9"}]}}}',
                     headers={"Authorization": basic("admin", PASSWORD),
                              "Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 201, reply.read()
        reply.read()
        conn.close()
        admin = http.client.HTTPSConnection("127.0.0.1", admin_port, context=context, timeout=20)
        admin.request("GET", "/login")
        page = admin.getresponse()
        assert page.status == 200 and b"password" in page.read()
        admin.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    everything = "".join(out) + "".join(err)
    assert PASSWORD not in everything
    assert basic("admin", PASSWORD).split()[1] not in everything
