"""Pinned TLS: one trusted certificate (sd_cert) and SHA-1 fingerprint pins (cluster join),
against a real loopback HTTPS server with a freshly generated self-signed certificate."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lockgate.http import (
    PinMismatch,
    UrlError,
    fingerprint_matches,
    fingerprint_pinned_request,
    normalize_fingerprint,
    peer_fingerprint,
    pinned_context,
    read_url,
    sha1_fingerprint,
)

pytestmark = pytest.mark.timeout(30)


@dataclass
class Cert:
    pem: bytes
    der: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        return ":".join(f"{b:02X}" for b in hashlib.sha1(self.der).digest())


def make_cert(name: str) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Cert(
        cert.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.DER),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    )


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server_cert() -> Cert:
    return make_cert("lockgate-test-server")


@pytest.fixture(scope="module")
def other_cert() -> Cert:
    return make_cert("somebody-else")


@pytest.fixture
def https_url(server_cert: Cert, tmp_path: Path) -> Iterator[str]:
    (tmp_path / "c.pem").write_bytes(server_cert.pem)
    (tmp_path / "k.pem").write_bytes(server_cert.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    # A failed handshake is what several tests want; keep its traceback out of the output.
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_pinned_context_trusts_exactly_that_certificate(https_url: str,
                                                        server_cert: Cert) -> None:
    resp = read_url(https_url, ssl_context=pinned_context(server_cert.pem))
    assert resp.body == b"hello"


def test_pinned_context_accepts_der_and_the_bare_sd_cert_body(https_url: str,
                                                              server_cert: Cert) -> None:
    body = "".join(line for line in server_cert.pem.decode().splitlines()
                   if not line.startswith("-----"))
    assert read_url(https_url, ssl_context=pinned_context(body)).body == b"hello"
    assert read_url(https_url, ssl_context=pinned_context(server_cert.der)).body == b"hello"
    assert base64.b64decode(body) == server_cert.der


def test_pinned_context_refuses_another_certificate_without_retrying(
        https_url: str, other_cert: Cert) -> None:
    began = time.monotonic()
    with pytest.raises(UrlError) as err:
        read_url(https_url, ssl_context=pinned_context(other_cert.pem), deadline=20)
    assert time.monotonic() - began < 2
    assert err.value.tries == 1
    assert "certificate verify failed" in str(err.value)


def test_default_context_refuses_self_signed(https_url: str) -> None:
    with pytest.raises(UrlError, match="certificate verify failed"):
        read_url(https_url, deadline=5)


def test_fingerprint_pin_right_passes(https_url: str, server_cert: Cert) -> None:
    assert fingerprint_pinned_request(https_url, server_cert.fingerprint).body == b"hello"
    plain_hex = server_cert.fingerprint.replace(":", "").lower()
    assert read_url(https_url, pin_sha1=plain_hex).body == b"hello"


def test_fingerprint_pin_wrong_fails_fast(https_url: str, server_cert: Cert,
                                          other_cert: Cert) -> None:
    began = time.monotonic()
    with pytest.raises(PinMismatch) as err:
        fingerprint_pinned_request(https_url, other_cert.fingerprint, deadline=20)
    assert time.monotonic() - began < 2
    assert server_cert.fingerprint in str(err.value)
    assert other_cert.fingerprint in str(err.value)


def test_unsafe_accepts_any_certificate(https_url: str) -> None:
    assert fingerprint_pinned_request(https_url, "UNSAFE").body == b"hello"


def test_peer_fingerprint_reads_the_server_certificate(https_url: str,
                                                       server_cert: Cert) -> None:
    port = int(https_url.rsplit(":", 1)[1].strip("/"))
    assert peer_fingerprint("127.0.0.1", port) == server_cert.fingerprint


def test_fingerprint_helpers(server_cert: Cert) -> None:
    assert sha1_fingerprint(server_cert.der) == server_cert.fingerprint
    assert fingerprint_matches(server_cert.der, server_cert.fingerprint.lower())
    assert not fingerprint_matches(server_cert.der, "00" * 20)
    assert normalize_fingerprint("ab" * 20) == ":".join(["AB"] * 20)
    with pytest.raises(ValueError, match="40 hex digits"):
        normalize_fingerprint("AB:CD")
    with pytest.raises(ValueError, match="neither PEM"):
        pinned_context("not a certificate!")
