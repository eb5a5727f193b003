"""``lockgate firstboot parse`` through the real CLI: CliRunner and the installed script."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lockgate.cli import root

REPO = Path(__file__).resolve().parents[2]
LOCKGATE = REPO / ".venv" / "bin" / "lockgate"

CONTRACT_KEYS = [
    "password",
    "accept_license",
    "timezone",
    "user",
    "cluster_host",
    "cluster_port",
    "cluster_fingerprint",
    "cluster_location",
    "join_tips",
    "sd_address",
    "sd_cert",
    "registration_policy",
    "owner",
    "owner_secret",
    "cfn",
    "unknown",
]
FP = "FB:1F:9F:5C:FC:CF:58:83:5C:99:4F:00:0B:B5:3A:20:E7:3D:8E:7D"
FULL = (
    "password=pw=1 accept_license=Yes timezone=Europe/London cluster_host=tm1:9000 user=ops "
    f"join_tips=y cluster_fingerprint={FP.replace(':', '').lower()} cluster_location=dc1 "
    "sd_address=sd:8100 registration_policy=pol owner=acme owner_secret=os=2 "
    "cfn_stack=st cfn_resource=Res cfn_region=us-east-1 extra_opt=1"
)


def invoke(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(root, ["firstboot", "parse", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def test_json_has_exactly_the_contract_keys_in_order() -> None:
    code, out, err = invoke(FULL, "--json")
    assert code == 0
    assert out.endswith("\n") and out.count("\n") == 1  # one JSON object, one line
    data = json.loads(out)
    assert list(data) == CONTRACT_KEYS
    assert list(data["cfn"]) == ["stack", "resource", "region"]
    assert err == "warning: unknown user-data key 'extra_opt' ignored\n"


def test_json_values_and_types() -> None:
    code, out, _ = invoke(FULL, "--json", "--show-secrets")
    assert code == 0
    assert json.loads(out) == {
        "password": "pw=1",
        "accept_license": True,
        "timezone": "Europe/London",
        "user": "ops",
        "cluster_host": "tm1",
        "cluster_port": 9000,
        "cluster_fingerprint": FP,
        "cluster_location": "dc1",
        "join_tips": True,
        "sd_address": "sd:8100",
        "sd_cert": None,
        "registration_policy": "pol",
        "owner": "acme",
        "owner_secret": "os=2",
        "cfn": {"stack": "st", "resource": "Res", "region": "us-east-1"},
        "unknown": {"extra_opt": "1"},
    }
    # Byte-level: JSON true/false/null and integers, not strings.
    assert '"accept_license": true' in out
    assert '"cluster_port": 9000' in out
    assert '"sd_cert": null' in out


def test_json_defaults_for_empty_input() -> None:
    code, out, err = invoke("", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "password": None,
        "accept_license": None,
        "timezone": "America/Los_Angeles",
        "user": "admin",
        "cluster_host": None,
        "cluster_port": None,
        "cluster_fingerprint": None,
        "cluster_location": None,
        "join_tips": False,
        "sd_address": None,
        "sd_cert": None,
        "registration_policy": None,
        "owner": None,
        "owner_secret": None,
        "cfn": None,
        "unknown": {},
    }


def test_secrets_redacted_unless_asked() -> None:
    text = "password=TopSecret1 owner=o owner_secret=TopSecret2 sd_address=a:1 my_token=TopSecret3"
    code, out, err = invoke(text, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["password"] == data["owner_secret"] == "<redacted>"
    assert data["unknown"] == {"my_token": "<redacted>"}
    assert "TopSecret" not in out + err
    code, out, _ = invoke(text, "--json", "--show-secrets")
    data = json.loads(out)
    assert (data["password"], data["owner_secret"], data["unknown"]["my_token"]) == (
        "TopSecret1",
        "TopSecret2",
        "TopSecret3",
    )


def test_readable_listing() -> None:
    code, out, _ = invoke(FULL)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "password: <redacted>"
    assert "accept_license: yes" in lines
    assert "cluster_port: 9000" in lines
    assert f"cluster_fingerprint: {FP}" in lines
    assert "sd_cert: (not set)" in lines
    assert "cfn: stack=st resource=Res region=us-east-1" in lines
    assert "owner_secret: <redacted>" in lines
    assert "unknown extra_opt: 1" in lines
    assert "pw=1" not in out


def test_readable_listing_escapes_control_characters_of_unknown_values() -> None:
    code, out, _ = invoke("color=\x1b[31mred")
    assert code == 0
    assert "unknown color: \\x1b[31mred" in out.splitlines()
    assert "\x1b" not in out


def test_invalid_input_exits_2_with_one_error_line_and_empty_stdout() -> None:
    code, out, err = invoke("password=ok cluster_host=tm1", "--json")
    assert code == 2
    assert out == ""
    assert err == (
        "error: cluster_fingerprint: required with cluster_host: give the SHA-1 fingerprint "
        "of the cluster member's certificate (40 hex digits) or 'unsafe'\n"
    )


def test_stdin_dash_reads_binary_gzip_base64() -> None:
    data = base64.b64encode(gzip.compress(b"password=x\naccept_license=y\n"))
    code, out, _ = invoke("-", "--json", "--show-secrets", input=data)
    assert code == 0
    assert json.loads(out)["password"] == "x"
    code, out, _ = invoke("-", "--json", input=gzip.compress(b"user=u1"))
    assert json.loads(out)["user"] == "u1"


def test_at_file(tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_bytes(gzip.compress(b"#cloud-config\ntimezone: Asia/Tokyo\n"))
    code, out, _ = invoke(f"@{path}", "--json")
    assert code == 0
    assert json.loads(out)["timezone"] == "Asia/Tokyo"


def test_no_argument_reads_stdin() -> None:
    code, out, _ = invoke("--json", input=b"user=fromstdin")
    assert code == 0
    assert json.loads(out)["user"] == "fromstdin"


def test_oversized_stdin_and_file_are_refused(tmp_path: Path) -> None:
    big = b" " * (1024 * 1024 + 10)
    code, out, err = invoke("-", input=big)
    assert (code, out, err) == (2, "", "error: user-data: larger than 1024 KiB\n")
    path = tmp_path / "big"
    path.write_bytes(big)
    code, out, err = invoke(f"@{path}")
    assert (code, out, err) == (2, "", "error: user-data: larger than 1024 KiB\n")


def test_at_directory_exits_2(tmp_path: Path) -> None:
    code, out, err = invoke(f"@{tmp_path}")
    assert (code, out) == (2, "")
    assert err == f"error: cannot read {tmp_path}: Is a directory\n"


def test_at_missing_file_exits_2() -> None:
    code, out, err = invoke("@/nonexistent/user-data", "--json")
    assert (code, out) == (2, "")
    assert err == "error: cannot read /nonexistent/user-data: No such file or directory\n"


# --- the installed console script, in a real process ----------------------------


def run_script(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(LOCKGATE), "firstboot", "parse", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )


@pytest.mark.skipif(not LOCKGATE.exists(), reason=".venv/bin/lockgate not installed (run make setup)")
def test_console_script_json_bytes() -> None:
    done = run_script(FULL, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert list(data) == CONTRACT_KEYS
    assert done.stdout.startswith(b'{"password": "<redacted>", "accept_license": true, "timezone": ')
    assert done.stderr == b"warning: unknown user-data key 'extra_opt' ignored\n"


@pytest.mark.skipif(not LOCKGATE.exists(), reason=".venv/bin/lockgate not installed (run make setup)")
def test_console_script_error_and_stdin() -> None:
    done = run_script("password=a\x01b", "--json")
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr == b"error: password: contains control characters\n"
    done = run_script("-", "--json", "--show-secrets", stdin="password=pässwörd".encode())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["password"] == "pässwörd"


@pytest.mark.skipif(not LOCKGATE.exists(), reason=".venv/bin/lockgate not installed (run make setup)")
def test_console_script_non_utf8_argv() -> None:
    # argv bytes that are not UTF-8 reach the parser as bytes, not as a crash.
    done = subprocess.run(
        [os.fsencode(LOCKGATE), b"firstboot", b"parse", b"password=\xff", b"--json"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr.startswith(b"error: user-data: not UTF-8 text (bad byte at offset 9)")


@pytest.mark.skipif(not LOCKGATE.exists(), reason=".venv/bin/lockgate not installed (run make setup)")
def test_no_argument_on_a_terminal_asks_instead_of_waiting() -> None:
    import pexpect

    child = pexpect.spawn(str(LOCKGATE), ["firstboot", "parse"], timeout=30, encoding="utf-8")
    try:
        child.expect("error: give the user-data as TEXT, @FILE or - \\(stdin\\)")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 2


def test_python_dash_m_lockgate() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lockgate", "firstboot", "parse", "accept_license=no", "--json"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accept_license"] is False
