"""Helpers for the management-plane tests: run the real servers, talk to them pinned.

The servers run on their own asyncio loop in a thread (as they would next to
the proxy), on free loopback ports; clients are plain ``http.client`` with an
SSL context that trusts only the generated certificate.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from lockgate.passwords import hash_password
from lockgate.paths import StatePaths
from lockgate.runtime.api import Management, start_management
from lockgate.runtime.api.auth import FailureLimiter
from lockgate.runtime.api.http import Limits

PASSWORD = "correct horse battery"


def write_users(state_dir: Path, users: dict[str, str] | None = None) -> None:
    path = StatePaths(state_dir).users
    path.parent.mkdir(parents=True, exist_ok=True)
    users = users if users is not None else {"admin": PASSWORD}
    doc = {"users": {u: {"hash": hash_password(p), "role": "admin"} for u, p in users.items()}}
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Running:
    mgmt: Management
    state_dir: Path
    context: ssl.SSLContext

    @property
    def rest_port(self) -> int:
        return self.mgmt.rest.port

    @property
    def admin_port(self) -> int:
        return self.mgmt.admin.port

    def connect(self, port: int) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", port, context=self.context, timeout=30)

    def request(self, method: str, path: str, body: bytes | str | None = None,
                auth: str | None = None, port: int | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        all_headers = dict(headers or {})
        if auth is not None:
            all_headers["Authorization"] = auth
        if body is not None and "Content-Type" not in all_headers:
            all_headers["Content-Type"] = "application/json"
        conn = self.connect(port or self.rest_port)
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            conn.close()

    def api(self, method: str, path: str, document: Any = None) -> Reply:
        body = None if document is None else json.dumps(document)
        return self.request(method, path, body, auth=basic("admin", PASSWORD))


def pinned_context(cert_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert_path))
    context.check_hostname = False  # pinned: the one certificate is the only trust anchor
    return context


@contextmanager
def running(state_dir: Path, limiter: FailureLimiter | None = None,
            limits: Limits | None = None) -> Iterator[Running]:
    """Start REST + Admin on free loopback ports in a thread; stop them on exit."""
    loop = uvloop.new_event_loop()  # as in ``lockgate runtime serve``
    thread = threading.Thread(target=loop.run_forever, name="mgmt-loop", daemon=True)
    thread.start()
    try:
        future = asyncio.run_coroutine_threadsafe(
            start_management(state_dir, "127.0.0.1", 0, 0, login_limits=limiter,
                             limits=limits), loop)
        mgmt = future.result(timeout=30)
        try:
            yield Running(mgmt, state_dir, pinned_context(mgmt.certificate.cert_path))
        finally:
            asyncio.run_coroutine_threadsafe(mgmt.close(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
