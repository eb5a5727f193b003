"""The management plane's self-signed certificate and its SHA-1 fingerprint.

Generated once, on first start, into ``StatePaths(state_dir).tls`` and reused
afterwards, so the fingerprint printed on the console (and pinned by peers in
``cluster_fingerprint``) stays the same across restarts and upgrades. The
private key is written 0600 inside a 0700 directory and never leaves it.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import logging
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lockgate.errors import Failure
from lockgate.files import atomic_write, set_aside
from lockgate.paths import STATE_DIR, StatePaths

log = logging.getLogger(__name__)

CERT_NAME = "admin.crt"
KEY_NAME = "admin.key"
VALIDITY = datetime.timedelta(days=3652)  # ten years: an appliance outlives a short cert


@dataclass(frozen=True)
class Certificate:
    cert_path: Path
    key_path: Path
    created: bool  # True when this call generated it

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_path.read_bytes())

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context (TLS 1.2+) serving this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


def fingerprint(cert: bytes | x509.Certificate) -> str:
    """SHA-1 over the DER encoding, as ``AA:BB:...`` (upper case, 20 pairs).

    ``cert`` is a loaded certificate or its PEM/DER bytes.
    """
    if isinstance(cert, bytes):
        der = _to_der(cert)
    else:
        der = cert.public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _to_der(data: bytes) -> bytes:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    x509.load_der_x509_certificate(data)  # ValueError for bytes that are no certificate
    return data


def ensure_certificate(state_dir: Path, hostname: str | None = None) -> Certificate:
    """Return the management certificate, generating it on first use.

    First boot calls this too (so Services Director registration can send the
    fingerprint) and the runtime may start beside it: an exclusive lock on the
    TLS folder keeps two callers from writing a key of one pair and the
    certificate of another.
    """
    tls_dir = StatePaths(state_dir).tls
    try:
        tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(tls_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise Failure(f"cannot write the management certificate in {tls_dir}: "
                      f"{exc.strerror or exc}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_certificate(tls_dir, hostname)
    finally:
        os.close(lock)  # releases the lock


def _ensure_certificate(tls_dir: Path, hostname: str | None) -> Certificate:
    cert_path, key_path = tls_dir / CERT_NAME, tls_dir / KEY_NAME
    if cert_path.exists() and key_path.exists():
        _check_key_mode(key_path)
        problem = _unusable(cert_path, key_path)
        if problem is None:
            return Certificate(cert_path, key_path, created=False)
        # A pair TLS cannot load (truncated by a disk problem, edited by hand) would
        # fail every start of the management plane; keep it for inspection and make
        # a new one. Peers that pinned the old fingerprint must be given the new one.
        try:
            kept = set_aside([cert_path, key_path], "unusable")
        except OSError as exc:
            raise Failure(f"{cert_path}: unusable ({problem}) and cannot be replaced: "
                          f"{exc.strerror or exc}") from exc
        log.warning("%s and %s cannot be used (%s); kept as %s; generating a new "
                    "certificate: the fingerprint changes", cert_path, key_path, problem,
                    ", ".join(str(k) for k in kept))
    try:
        tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(tls_dir, 0o700)
        key_pem, cert_pem = generate(hostname or socket.gethostname(), local_addresses())
        atomic_write(key_path, key_pem, 0o600)  # created 0600: never briefly readable
        atomic_write(cert_path, cert_pem, 0o644)
    except OSError as exc:
        raise Failure(f"cannot write the management certificate in {tls_dir}: "
                      f"{exc.strerror or exc}") from exc
    log.info("generated management certificate %s", cert_path)
    return Certificate(cert_path, key_path, created=True)


def generate(hostname: str, addresses: list[str]) -> tuple[bytes, bytes]:
    """A new EC P-256 key and self-signed certificate (PEM), CN = hostname."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "lockgate")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname)] if hostname else []
    for addr in addresses:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(addr)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
        .not_valid_before(now - datetime.timedelta(minutes=5))  # small clock skew
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # A leaf, not a CA: browsers refuse a CA certificate used as a server's.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def local_addresses() -> list[str]:
    """Loopback plus the default route's source address, as the kernel has them.

    Never a DNS lookup of the host name: first boot gives the appliance the cloud's
    name (``ip-10-0-0-5.ec2.internal``), which only the cloud's DNS knows, and a
    resolver that cannot answer held the runtime's start for minutes.
    """
    found = ["127.0.0.1", "::1"]
    primary = primary_address()
    if primary and primary not in found:
        found.append(primary)
    return found


def primary_address() -> str | None:
    """The source address of the default route (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only selects a route
        except OSError:
            return None
        addr: str = probe.getsockname()[0]
    return None if addr.startswith("0.") else addr


def _unusable(cert_path: Path, key_path: Path) -> str | None:
    """Why TLS cannot serve this pair, or None when it can."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:  # an OSError (unreadable) is a real error, not "replace it"
        return exc.reason or str(exc)
    return None


def _check_key_mode(key_path: Path) -> None:
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was mode %o; tightening to 600", key_path, mode)
        os.chmod(key_path, 0o600)


@click.command("fingerprint")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=STATE_DIR, show_default=True, help="The appliance's state directory.")
def fingerprint_command(state_dir: Path) -> None:
    """Print the SHA-1 fingerprint of the Admin UI / REST API certificate."""
    certificate = ensure_certificate(state_dir)
    if certificate.created:
        click.echo(f"generated a new certificate: {certificate.cert_path}", err=True)
    click.echo(certificate.fingerprint)
