"""The management certificate: generated once, reused, key private, fingerprint as openssl says."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from lockgate.proc import output
from lockgate.runtime.tls import ensure_certificate, fingerprint, fingerprint_command


def openssl_fingerprint(cert: Path) -> str:
    line = output(["openssl", "x509", "-noout", "-fingerprint", "-sha1", "-in", str(cert)])
    # "sha1 Fingerprint=AA:BB:..." (older openssl: "SHA1 Fingerprint=")
    return line.split("=", 1)[1].strip()


def test_generated_once_with_private_key_and_reused(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path, hostname="lockgate-test")
    assert first.created
    tls_dir = first.cert_path.parent
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.cert_path.stat().st_mode) == 0o644
    again = ensure_certificate(tmp_path)
    assert not again.created
    assert again.fingerprint == first.fingerprint


def test_loose_key_mode_is_tightened(tmp_path: Path) -> None:
    cert = ensure_certificate(tmp_path)
    os.chmod(cert.key_path, 0o644)
    ensure_certificate(tmp_path)
    assert stat.S_IMODE(cert.key_path.stat().st_mode) == 0o600


def test_certificate_contents(tmp_path: Path) -> None:
    cert_file = ensure_certificate(tmp_path, hostname="appliance-7").cert_path
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == "appliance-7"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "appliance-7" in san.get_values_for_type(x509.DNSName)
    assert any(str(ip) == "127.0.0.1" for ip in san.get_values_for_type(x509.IPAddress))
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime >= datetime.timedelta(days=3650)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    other = x509.load_pem_x509_certificate(
        ensure_certificate(tmp_path / "other").cert_path.read_bytes())
    assert other.serial_number != cert.serial_number


def test_fingerprint_matches_openssl(tmp_path: Path) -> None:
    cert = ensure_certificate(tmp_path)
    expected = openssl_fingerprint(cert.cert_path)
    assert cert.fingerprint == expected
    pem = cert.cert_path.read_bytes()
    assert fingerprint(pem) == expected
    assert fingerprint(x509.load_pem_x509_certificate(pem)) == expected
    assert len(expected.split(":")) == 20 and expected == expected.upper()


def test_cli_prints_fingerprint_and_says_when_it_generated(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(fingerprint_command, ["--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "generated a new certificate" in result.stderr
    printed = result.stdout.strip()
    assert printed == openssl_fingerprint(tmp_path / "tls" / "admin.crt")
    again = runner.invoke(fingerprint_command, ["--state-dir", str(tmp_path)])
    assert again.stdout.strip() == printed and again.stderr == ""


def test_installed_command_prints_the_same(tmp_path: Path) -> None:
    cert = ensure_certificate(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "lockgate", "runtime", "fingerprint",
                           "--state-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == openssl_fingerprint(cert.cert_path)


def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(fingerprint_command, ["--state-dir", str(blocker / "state")])
    assert result.exit_code == 1
    assert "cannot write the management certificate" in result.output


def _break(kind: str, tmp_path: Path) -> tuple[Path, Path]:
    good = ensure_certificate(tmp_path, hostname="broken-pair")
    other = ensure_certificate(tmp_path / "other", hostname="other")
    if kind == "garbage cert":
        good.cert_path.write_bytes(b"garbage\n")
    elif kind == "empty key":
        good.key_path.write_bytes(b"")
    else:  # a key that belongs to another certificate
        good.key_path.write_bytes(other.key_path.read_bytes())
    return good.cert_path, good.key_path


@pytest.mark.parametrize("kind", ["garbage cert", "empty key", "mismatched key"])
def test_unusable_pair_is_replaced_so_the_management_plane_can_start(tmp_path: Path,
                                                                     kind: str) -> None:
    """A pair TLS cannot load would make every start fail (Restart=on-failure forever)."""
    cert_path, key_path = _break(kind, tmp_path)
    broken = cert_path.read_bytes(), key_path.read_bytes()
    again = ensure_certificate(tmp_path)
    assert again.created
    again.server_context()  # loads: the REST API and Admin UI can start
    assert again.fingerprint == openssl_fingerprint(again.cert_path)
    assert stat.S_IMODE(again.key_path.stat().st_mode) == 0o600
    kept_key = list(key_path.parent.glob("admin.key.unusable-*"))
    kept_cert = list(cert_path.parent.glob("admin.crt.unusable-*"))
    assert len(kept_key) == 1 and len(kept_cert) == 1
    assert (kept_cert[0].read_bytes(), kept_key[0].read_bytes()) == broken
    assert stat.S_IMODE(kept_key[0].stat().st_mode) == 0o600


def test_fingerprint_refuses_bytes_that_are_no_certificate() -> None:
    with pytest.raises(ValueError):
        fingerprint(b"garbage\n")


def test_certificate_addresses_never_resolve_the_host_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cloud's host name may be unknown to any DNS the appliance can reach: a lookup
    there held the runtime's first start for minutes (emulated EC2/GCE/Azure boots)."""
    import socket

    from lockgate.runtime import tls

    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("local_addresses() asked DNS")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    addresses = tls.local_addresses()
    assert addresses[:2] == ["127.0.0.1", "::1"]
