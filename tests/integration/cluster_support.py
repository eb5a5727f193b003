"""Cluster members as real ``lockgate runtime serve`` processes (loopback or a network
namespace), a pinned REST client for them, and the ``lockgate runtime join`` command."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from test_api_support import PASSWORD, write_users

CONFIG = "/api/tm/1.0/config/active"
AUTH = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()


def pool(*nodes: str) -> dict[str, Any]:
    return {"properties": {"basic": {"nodes_table": [{"node": n} for n in nodes]}}}


@dataclass
class Member:
    """One ``lockgate runtime serve`` (REST, Admin, control ports fixed by the test)."""

    name: str
    state_dir: Path
    address: str = "127.0.0.1"
    rest_port: int = 9070
    admin_port: int = 9090
    control_port: int = 9080
    prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", "ns1"]
    proc: subprocess.Popen[str] | None = None
    fingerprint: str = ""
    stderr: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        write_users(self.state_dir)

    def start(self, timeout: float = 30.0) -> Member:
        argv = [*self.prefix, sys.executable, "-m", "lockgate", "runtime", "serve",
                "--state-dir", str(self.state_dir), "--workers", "1", "--grace", "1",
                "--management-host", self.address, "--rest-port", str(self.rest_port),
                "--admin-port", str(self.admin_port), "--control-port", str(self.control_port),
                "--member-name", self.name]
        env = {**os.environ, "LOCKGATE_PURE_PYTHON": "1"}
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines.put), daemon=True).start()
        threading.Thread(target=_pump, args=(self.proc.stderr, self.stderr.append),
                         daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited: {''.join(self.stderr)}") from None
                continue
            found = re.search(r"fingerprint=(\S+)", line)
            if line.startswith("lockgate-runtime: serving") and found:
                self.fingerprint = found.group(1)
                return self
        raise AssertionError(f"{self.name} did not start: {''.join(self.stderr)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    # ---- REST --------------------------------------------------------------------------------
    def request(self, method: str, path: str, document: Any = None,
                headers: dict[str, str] | None = None, port: int | None = None
                ) -> tuple[int, dict[str, str], Any]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # test client; the tests check pins elsewhere
        conn = http.client.HTTPSConnection(self.address, port or self.rest_port,
                                           context=context, timeout=10)
        send = {"Authorization": AUTH, **(headers or {})}
        body = None
        if document is not None:
            body = json.dumps(document)
            send["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=send)
            reply = conn.getresponse()
            data = reply.read()
            heads = {k.lower(): v for k, v in reply.getheaders()}
        finally:
            conn.close()
        return reply.status, heads, json.loads(data) if data else None

    def put_pool(self, name: str, *nodes: str, headers: dict[str, str] | None = None) -> int:
        return self.request("PUT", f"{CONFIG}/pools/{name}", pool(*nodes), headers)[0]

    def pool_nodes(self, name: str) -> list[str] | None:
        status, _, doc = self.request("GET", f"{CONFIG}/pools/{name}")
        if status != 200:
            return None
        return [row["node"] for row in doc["properties"]["basic"]["nodes_table"]]

    def cluster(self) -> dict[str, Any]:
        status, _, doc = self.request("GET", "/api/tm/1.0/cluster")
        assert status == 200, doc
        return dict(doc)

    # ---- join --------------------------------------------------------------------------------
    def join(self, target: Member, fingerprint: str, *extra: str,
             password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        secret = self.state_dir.parent / f"{self.name}.password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        argv = [*self.prefix, sys.executable, "-m", "lockgate", "runtime", "join",
                f"{target.address}:{target.admin_port}", "--fingerprint", fingerprint,
                "--password-file", str(secret), "--name", self.name,
                "--admin-port", str(self.admin_port), "--control-port", str(self.control_port),
                "--state-dir", str(self.state_dir), *extra]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                               env={**os.environ, "LOCKGATE_PURE_PYTHON": "1"})


def _pump(stream: Any, sink: Callable[[str], None]) -> None:
    for line in stream:
        sink(line)


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Poll ``check`` until true; returns the seconds it took (AssertionError on timeout)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start
