"""The wizard's steps driven with scripted answers over in-memory streams, and the apply phase
on a temporary root: what gets asked, what gets stored, what happens on a failure."""

from __future__ import annotations

import datetime as dt
import io
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lockgate.errors import BadInput, Failure
from lockgate.firstboot.wizard.cli import reset_password_cmd, wizard_cmd
from lockgate.firstboot.wizard.finish import apply_all, user_data_lines
from lockgate.firstboot.wizard.flow import (
    Context,
    Stopped,
    collect_answers,
    current_timezone,
    summary_lines,
)
from lockgate.firstboot.wizard.model import Answers
from lockgate.firstboot.wizard.prompter import InteractiveAnswers, Prompter
from lockgate.passwords import verify_password
from lockgate.paths import StatePaths

PASSWORD = "correct horse"


def drive(lines: list[str], root: Path) -> tuple[Answers, str]:
    out = io.StringIO()
    prompter = Prompter(io.StringIO("".join(line + "\n" for line in lines)), out)
    ctx = Context(root=root, current_timezone="Europe/Berlin", licence_text=None,
                  already_configured=False)
    return collect_answers(InteractiveAnswers(prompter), ctx), out.getvalue()


def test_scripted_answers_become_typed_answers(tmp_path: Path) -> None:
    answers, out = drive(["", PASSWORD, PASSWORD, "accept", "", "time.example.net", "no", "",
                          ""],
                         tmp_path)
    assert answers == Answers(password=PASSWORD, timezone="Europe/Berlin",
                              ntp_server="time.example.net", ssh_intrusion_prevention=False,
                              licence_key=None)
    assert [f"Step {n} of 7" in out for n in range(1, 7)] == [True] * 6
    assert PASSWORD not in out
    assert "Ctrl-C" in out  # the welcome says how to abort


def test_too_many_bad_answers_end_the_wizard(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"^password: too many invalid answers; nothing changed$"):
        drive(["", *["abc"] * 10], tmp_path)


def test_declining_stops_with_exit_1(tmp_path: Path) -> None:
    with pytest.raises(Stopped) as caught:
        drive(["", PASSWORD, PASSWORD, "n"], tmp_path)
    assert caught.value.exit_code == 1
    assert "nothing changed" in caught.value.format_message()


def test_end_of_input_is_reported_as_eof(tmp_path: Path) -> None:
    with pytest.raises(EOFError):
        drive(["", PASSWORD], tmp_path)


def test_summary_masks_the_password() -> None:
    lines = "\n".join(summary_lines(Answers(password=PASSWORD, timezone="UTC", ntp_server=None,
                                            ssh_intrusion_prevention=True, licence_key=None)))
    assert "********" in lines and PASSWORD not in lines
    assert "Community Edition (10 Mb/s" in lines and "up to 4" in lines
    assert PASSWORD not in repr(Answers(password=PASSWORD, timezone="UTC", ntp_server=None,
                                        ssh_intrusion_prevention=True, licence_key=None))


def test_current_timezone_prefers_the_data_partition(tmp_path: Path) -> None:
    assert current_timezone(tmp_path) == "America/Los_Angeles"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/localtime").symlink_to("/usr/share/zoneinfo/Asia/Tokyo")
    assert current_timezone(tmp_path) == "Asia/Tokyo"
    (tmp_path / "etc/timezone").write_text("Not/AZone\n")  # stale: skipped
    assert current_timezone(tmp_path) == "Asia/Tokyo"
    config = StatePaths.under_root(tmp_path).config
    config.mkdir(parents=True)
    (config / "timezone").write_text("Europe/Oslo\n")
    assert current_timezone(tmp_path) == "Europe/Oslo"


def answers(key: Path | None = None) -> Answers:
    return Answers(password=PASSWORD, timezone="Europe/Madrid", ntp_server=None,
                   ssh_intrusion_prevention=True, licence_key=key)


def test_apply_all_writes_every_setting(tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    key.write_bytes(b"KEY-BYTES")
    root = tmp_path / "root"
    steps: list[str] = []
    apply_all(root, answers(key), steps.append)
    assert len(steps) == 7
    config = StatePaths.under_root(root).config
    users = json.loads((config / "users.json").read_text())["users"]
    assert verify_password(PASSWORD, users["admin"]["hash"])
    assert json.loads((config / "licence.json").read_text())["accepted"] is True
    assert (config / "timezone").read_text() == "Europe/Madrid\n"
    assert json.loads((config / "security.json").read_text()) == {"ssh_intrusion_prevention": True}
    assert (config / "licence.key").read_bytes() == b"KEY-BYTES"
    assert stat.S_IMODE((config / "licence.key").stat().st_mode) == 0o600

    apply_all(root, answers(None), steps.append)  # a re-run back to the Community Edition
    assert not (config / "licence.key").exists()


def test_a_failing_step_says_what_was_and_was_not_applied(tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = StatePaths.under_root(root).config
    (config / "security.json").mkdir(parents=True)  # a directory in the way: the write fails
    with pytest.raises(Failure) as caught:
        apply_all(root, answers(), lambda _line: None)
    message = caught.value.format_message()
    assert message.startswith("applying security failed: ")
    assert "Already applied: admin password, timezone, time sync." in message
    assert ("Not applied: security, licence key, Services Director registration, "
            "licence acceptance.") in message
    assert PASSWORD not in message
    assert not (config / "licence.json").exists()  # never marked configured half-way


def make_cert(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lockgate-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_cluster_user_data_carries_the_admin_cert_fingerprint(tmp_path: Path) -> None:
    cert = StatePaths.under_root(tmp_path).tls / "admin.crt"
    make_cert(cert)
    openssl = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha1", "-in", str(cert)],
                             capture_output=True, text=True, check=True, timeout=10)
    expected = openssl.stdout.strip().split("=", 1)[1].upper()
    text = "\n".join(user_data_lines(tmp_path, answers()))
    assert f"cluster_fingerprint={expected} password={PASSWORD}" in text
    assert ":9090 " in text
    assert "lockgate runtime fingerprint" not in text


def test_replay_through_the_command(tmp_path: Path) -> None:
    root, replay, record = tmp_path / "root", tmp_path / "in.txt", tmp_path / "out.txt"
    replay.write_text(f"password={PASSWORD}\naccept_license=Yes\ntimezone=UTC\n")
    replay.chmod(0o644)
    result = CliRunner().invoke(wizard_cmd, ["--root", str(root), "--replay-from", str(replay),
                                             "--record-to", str(record)])
    assert result.exit_code == 0, result.output
    assert "others can read it" in result.output  # the warning about the 0644 replay file
    assert "Press return" not in result.output
    # Unattended runs are logged (CI, cloud-init, a unit's journal): the password the
    # replay file already holds is not printed again.
    assert PASSWORD not in result.output
    assert "password=<as in the replay file> timezone=UTC accept_license=y" in result.output
    assert record.read_text().splitlines()[2:] == [
        f"password={PASSWORD}", "accept_license=y", "timezone=UTC", "ntp_server=",
        "ssh_intrusion_prevention=y", "license_key=",
    ]


@pytest.mark.parametrize(
    ("replay", "message", "code"),
    [
        ("password=abc\naccept_license=y\n",
         "error: password: the password must be at least 6 characters long", 2),
        (f"password={PASSWORD}\naccept_license=y\ntimezone=Nowhere/Land\n",
         "error: timezone: unknown timezone 'Nowhere/Land'", 2),
        (f"password={PASSWORD}\n", "error: licence: the replay file has no 'accept_license=' line", 2),
        (f"password={PASSWORD}\nsecret=x\n", "error: replay file: line 2: unknown key 'secret'", 2),
        (f"password={PASSWORD}\naccept_license=no\n", "licence not accepted: nothing changed", 1),
    ],
)
def test_bad_replay_files_change_nothing(tmp_path: Path, replay: str, message: str,
                                         code: int) -> None:
    root, path = tmp_path / "root", tmp_path / "in.txt"
    path.write_text(replay)
    path.chmod(0o600)
    result = CliRunner().invoke(wizard_cmd, ["--root", str(root), "--replay-from", str(path)])
    assert result.exit_code == code
    assert result.stderr.startswith(message)
    assert result.stdout == ""  # failed before any output: no summary, no user-data
    assert not root.exists()


def test_reset_password_stdin_refuses_bad_users(tmp_path: Path) -> None:
    result = CliRunner().invoke(reset_password_cmd, ["--root", str(tmp_path), "--user", "a b",
                                                     "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: user: 'a b' is not a valid user name")
    assert not StatePaths.under_root(tmp_path).users.exists()


def test_reset_password_reports_a_damaged_users_file(tmp_path: Path) -> None:
    users = StatePaths.under_root(tmp_path).users
    users.parent.mkdir(parents=True)
    users.write_text('{"not": "users"}')
    result = CliRunner().invoke(reset_password_cmd, ["--root", str(tmp_path), "--password-stdin"],
                                input=PASSWORD + "\n")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot update the users file under ")
    assert PASSWORD not in result.output


def test_wizard_repairs_a_damaged_licence_record(tmp_path: Path) -> None:
    licence = StatePaths.under_root(tmp_path).licence
    licence.parent.mkdir(parents=True)
    licence.write_text("{not json")
    replay = tmp_path / "in.txt"
    replay.write_text(f"password={PASSWORD}\naccept_license=y\n")
    replay.chmod(0o600)
    result = CliRunner().invoke(wizard_cmd, ["--root", str(tmp_path), "--replay-from", str(replay)])
    assert result.exit_code == 0, result.output
    assert "warning: cannot read the licence record" in result.stderr
    assert json.loads(licence.read_text())["accepted"] is True


def test_yes_skips_the_confirmation(tmp_path: Path) -> None:
    typed = ["", PASSWORD, PASSWORD, "y", "UTC", "", "", "", ""]
    result = CliRunner().invoke(wizard_cmd, ["--root", str(tmp_path), "--yes"],
                                input="".join(t + "\n" for t in typed))
    assert result.exit_code == 0, result.output
    assert "Apply these settings now?" not in result.output
    assert json.loads(StatePaths.under_root(tmp_path).licence.read_text())["accepted"] is True


def test_an_unwritable_record_file_changes_nothing(tmp_path: Path) -> None:
    root, replay = tmp_path / "root", tmp_path / "in.txt"
    replay.write_text(f"password={PASSWORD}\naccept_license=y\n")
    replay.chmod(0o600)
    result = CliRunner().invoke(wizard_cmd, ["--root", str(root), "--replay-from", str(replay),
                                             "--record-to", str(tmp_path / "no/such/dir/out.txt")])
    assert result.exit_code == 1
    assert "error: cannot write replay file" in result.stderr
    assert not root.exists()


def test_unreadable_state_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("")  # the data partition is not a folder: nothing readable
    replay = tmp_path / "in.txt"
    replay.write_text(f"password={PASSWORD}\naccept_license=y\n")
    replay.chmod(0o600)
    proc = subprocess.run([str(Path(sys.executable).with_name("z-initial-config")), "--root",
                           str(tmp_path), "--replay-from", str(replay)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: applying admin password failed")


def test_services_director_registration_is_asked_and_sent_at_finish(tmp_path: Path) -> None:
    """Step 6's Services Director choice: the same validators as user-data's sd_address and
    sd_cert, and Finish sends first boot's own registration request."""
    from test_firstboot_apply_register import make_cert, sd_server

    cert = make_cert()
    with sd_server(cert, tmp_path) as (address, received):
        answers, out = drive(["", PASSWORD, PASSWORD, "accept", "", "", "y", "y",
                              "no-port.example", address, "policy 7", "policy-7",
                              "-----BEGIN CERTIFICATE-----", cert.sd_cert],
                             tmp_path / "root")
        assert "Register with a Services Director" in out and "port" in out
        assert "without the BEGIN/END lines" in out
        assert (answers.sd_address, answers.sd_registration_key, answers.licence_key) == (
            address, "policy-7", None)
        assert answers.sd_cert == cert.sd_cert
        assert "registered with the Services Director at " + address in "\n".join(
            summary_lines(answers))
        root = tmp_path / "root"
        apply_all(root, answers, lambda _line: None)
        assert len(received.requests) == 1
        method, path, body = received.requests[0]
        assert (method, path, body["registration_policy"]) == (
            "POST", "/api/tmcm/2.9/instance/register", "policy-7")
        config = StatePaths.under_root(root).config
        assert json.loads((config / "services_director.json").read_text())["registered"]
        assert not (config / "licence.key").exists()

    # A Services Director that refuses: Finish stops before the appliance counts as
    # configured, naming the reason, so the user can correct it or choose another option.
    with sd_server(cert, tmp_path, status=403) as (address, received):
        root = tmp_path / "root2"
        refused = Answers(password=PASSWORD, timezone="UTC", ntp_server=None,
                          ssh_intrusion_prevention=True, licence_key=None, sd_address=address,
                          sd_registration_key="wrong", sd_cert=cert.sd_cert)
        with pytest.raises(Failure, match="refused the registration"):
            apply_all(root, refused, lambda _line: None)
        assert not StatePaths.under_root(root).licence.exists()
