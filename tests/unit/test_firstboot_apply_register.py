"""Services Director registration against a real loopback HTTPS server with a self-signed cert."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lockgate.firstboot.apply.base import ApplyContext, Outcome
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.apply.register import REGISTER_PATH, apply_register
from lockgate.firstboot.settings import Settings
from lockgate.paths import StatePaths
from lockgate.runtime.tls import generate

SECRET = "owner-secret-XYZ-987"


@dataclass
class Cert:
    pem: str
    key_pem: str

    @property
    def sd_cert(self) -> str:
        """As user-data carries it: the PEM body, no header lines, no newlines."""
        return "".join(line for line in self.pem.splitlines() if not line.startswith("-----"))


def make_cert(name: str = "sd.example") -> Cert:
    key_pem, cert_pem = generate(name, [])
    return Cert(cert_pem.decode(), key_pem.decode())


@dataclass
class Received:
    status: int = 201
    requests: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)


@contextmanager
def sd_server(cert: Cert, tmp: Path, status: int = 201) -> Iterator[tuple[str, Received]]:
    received = Received(status)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            received.requests.append((self.command, self.path, body))
            self.send_response(received.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass  # keep test output clean

    (tmp / "sd.pem").write_text(cert.pem)
    (tmp / "sd.key").write_text(cert.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "sd.pem", tmp / "sd.key")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def settings(address: str, sd_cert: str) -> Settings:
    return Settings(sd_address=address, sd_cert=sd_cert, registration_policy="policy-1",
                    owner="team-a", owner_secret=SECRET)


def ctx(root: Path) -> ApplyContext:
    return ApplyContext(root, Console(str(root / "console")), instance_id="i-0123456789abcdef0",
                        platform="ec2", metadata={"hostname": "ip-10-0-0-5"}, timeout=2.0)


def test_pinned_registration_succeeds_and_sends_the_contract_body(tmp_path: Path) -> None:
    appliance = make_cert("appliance")
    tls = StatePaths.under_root(tmp_path).tls
    tls.mkdir(parents=True)
    (tls / "admin.crt").write_text(appliance.pem)
    sd = make_cert()
    with sd_server(sd, tmp_path) as (address, received):
        result = apply_register(ctx(tmp_path), settings(address, sd.sd_cert))
    assert result.result is Outcome.OK, result.message
    assert SECRET not in result.message
    [(method, path, body)] = received.requests
    assert (method, path) == ("POST", REGISTER_PATH)
    fingerprint = body.pop("fingerprint")
    assert isinstance(fingerprint, str) and len(fingerprint) == 59
    assert body == {"registration_policy": "policy-1", "owner": "team-a",
                    "owner_secret": SECRET, "hostname": "ip-10-0-0-5",
                    "instance_id": "i-0123456789abcdef0"}


def test_wrong_certificate_is_a_warning_and_nothing_is_sent(tmp_path: Path) -> None:
    with sd_server(make_cert(), tmp_path) as (address, received):
        result = apply_register(ctx(tmp_path), settings(address, make_cert().sd_cert))
    assert result.result is Outcome.WARNING
    assert "certificate" in result.message.lower() or "ssl" in result.message.lower()
    assert SECRET not in result.message
    assert received.requests == []


def test_server_error_is_a_warning(tmp_path: Path) -> None:
    sd = make_cert()
    with sd_server(sd, tmp_path, status=500) as (address, received):
        result = apply_register(ctx(tmp_path), settings(address, sd.sd_cert))
    assert result.result is Outcome.WARNING
    assert "500" in result.message
    assert SECRET not in result.message
    assert 1 <= len(received.requests) <= 3  # retried, but bounded


def test_refusal_is_a_warning(tmp_path: Path) -> None:
    sd = make_cert()
    with sd_server(sd, tmp_path, status=403) as (address, _):
        result = apply_register(ctx(tmp_path), settings(address, sd.sd_cert))
    assert result.result is Outcome.WARNING
    assert "403" in result.message


def test_garbage_sd_cert_is_a_warning(tmp_path: Path) -> None:
    result = apply_register(ctx(tmp_path), settings("127.0.0.1:1", "not-a-certificate!"))
    assert result.result is Outcome.WARNING
    assert "sd_cert" in result.message


def test_no_sd_address_skips(tmp_path: Path) -> None:
    assert apply_register(ctx(tmp_path), Settings()).result is Outcome.SKIPPED


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
