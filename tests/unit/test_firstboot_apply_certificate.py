"""The first-boot ``certificate`` step: the runtime's certificate, made before registration."""

from __future__ import annotations

import threading
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from lockgate.firstboot.apply.access import remember_host_name
from lockgate.firstboot.apply.base import ApplyContext, Outcome
from lockgate.firstboot.apply.certificate import apply_certificate
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.apply.register import admin_cert_fingerprint, registration_body
from lockgate.firstboot.settings import Settings
from lockgate.paths import StatePaths
from lockgate.runtime.tls import Certificate, ensure_certificate


def context(root: Path) -> ApplyContext:
    return ApplyContext(root, Console(str(root / "console")), instance_id="i-0abc",
                        platform="ec2", metadata={"local-hostname": "ip-10-0-0-5.ec2.internal"})


def test_step_makes_the_runtime_certificate_and_registration_sends_its_fingerprint(
        tmp_path: Path) -> None:
    remember_host_name(tmp_path, "ip-10-0-0-5.ec2.internal")
    assert admin_cert_fingerprint(tmp_path) is None
    result = apply_certificate(context(tmp_path), Settings())
    assert result.result is Outcome.OK, result.message

    # The runtime, started later on the same state directory, finds and keeps it.
    served = ensure_certificate(StatePaths.under_root(tmp_path).base)
    assert not served.created
    assert served.fingerprint in result.message
    assert served.fingerprint in (tmp_path / "console").read_text()
    assert registration_body(context(tmp_path), Settings())["fingerprint"] == served.fingerprint
    cert = x509.load_pem_x509_certificate(served.cert_path.read_bytes())
    [cn] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert cn.value == "ip-10-0-0-5.ec2.internal"  # the cloud's name, not the build host's

    again = apply_certificate(context(tmp_path), Settings())
    assert again.result is Outcome.OK and "kept" in again.message
    assert served.fingerprint in again.message


def test_unwritable_state_is_a_warning_not_a_failed_boot(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the data partition should be")
    result = apply_certificate(context(tmp_path), Settings())
    assert result.result is Outcome.WARNING
    assert "cannot write the management certificate" in result.message


def test_first_boot_and_runtime_at_once_end_with_one_pair(tmp_path: Path) -> None:
    # Without the folder lock each caller wrote its own key and certificate, and the
    # survivor could be one caller's key with the other's certificate.
    got: list[Certificate] = []
    barrier = threading.Barrier(4)

    def make() -> None:
        barrier.wait(timeout=10)
        got.append(ensure_certificate(tmp_path, "racer"))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(got) == 4
    assert sum(c.created for c in got) == 1
    assert len({c.fingerprint for c in got}) == 1
    got[0].server_context()  # the key on disk belongs to the certificate on disk
