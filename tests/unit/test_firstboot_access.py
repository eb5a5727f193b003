"""The admin login account: console password in the shadow file, SSH keys, host name."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lockgate.firstboot.apply import access
from lockgate.firstboot.apply.admin import set_admin_password
from lockgate.passwords import verify_password
from lockgate.paths import StatePaths

BASE = ("root:*:20000:0:99999:7:::\n"
        "daemon:*:20000:0:99999:7:::\n"
        "admin:!:20000:0:99999:7:::\n")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3RrZXl0ZXN0a2V5dGVzdGtleXRlc3RrZXl0ZXN0 me@host"


def crypt_matches(password: str, hashed: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # libcrypt, the same function pam_unix checks a login with
    return bool(crypt.crypt(password, hashed) == hashed)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/shadow.base").write_text(BASE)
    return tmp_path


def shadow_entries(root: Path) -> dict[str, list[str]]:
    text = (root / "run/lockgate/shadow").read_text()
    return {line.split(":")[0]: line.split(":") for line in text.splitlines()}


def test_console_password_is_the_admin_password(image_root: Path) -> None:
    set_admin_password(image_root, "admin", "Console-Pw-1")
    entries = shadow_entries(image_root)
    assert entries["admin"][1].startswith("$6$rounds=65536$")
    assert crypt_matches("Console-Pw-1", entries["admin"][1])
    assert not crypt_matches("Console-Pw-2", entries["admin"][1])
    assert entries["admin"][2:] == ["20000", "0", "99999", "7", "", "", ""]  # ageing kept
    assert entries["root"][1] == "*" and entries["daemon"][1] == "*"  # root stays locked
    mode = stat.S_IMODE((image_root / "run/lockgate/shadow").stat().st_mode)
    assert mode == 0o640
    users = json.loads(StatePaths.under_root(image_root).users.read_text())["users"]
    assert verify_password("Console-Pw-1", users["admin"]["hash"])  # the REST hash as before
    # A new password (z-reset-password, the wizard) replaces the console one at once.
    set_admin_password(image_root, "admin", "Console-Pw-2")
    assert crypt_matches("Console-Pw-2", shadow_entries(image_root)["admin"][1])


def test_another_admin_user_name_gives_its_password_to_the_admin_account(
        image_root: Path) -> None:
    set_admin_password(image_root, "ops", "Ops-Pw-3")  # user-data "user=ops"
    assert crypt_matches("Ops-Pw-3", shadow_entries(image_root)["admin"][1])


def test_no_usable_hash_means_no_password_login(image_root: Path) -> None:
    users = StatePaths.under_root(image_root).users
    users.parent.mkdir(parents=True)
    users.write_text('{"users": {"admin": {"hash": "scrypt$x", "role": "admin"}}}')  # old file
    access.sync_shadow(image_root)
    assert shadow_entries(image_root)["admin"][1] == "!"
    users.write_text("{broken")
    access.sync_shadow(image_root)
    assert shadow_entries(image_root)["admin"][1] == "!"


def test_shadow_without_an_admin_entry_gets_one() -> None:
    text = access.shadow_text("root:*:1:0:99999:7:::\n", "$6$x$y")
    assert text.splitlines() == ["root:*:1:0:99999:7:::", "admin:$6$x$y:::::::"]


def test_a_tree_without_the_base_file_is_left_alone(tmp_path: Path) -> None:
    set_admin_password(tmp_path, "admin", "No-Base-4")
    assert access.sync_shadow(tmp_path) is None
    assert not (tmp_path / "run").exists()


def test_keys_are_checked_and_written_for_sshd(tmp_path: Path) -> None:
    good, bad = access.clean_keys([KEY, KEY, f'command="rm -rf /" {KEY}', "junk",
                                   "ssh-rsa AAAA#notbase64"])
    assert good == [KEY]
    assert len(bad) == 3
    path = access.write_authorized_keys(tmp_path, good, "the ec2 metadata of i-1")
    assert path == tmp_path / "var/lib/lockgate/ssh-keys/admin"
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# SSH keys for admin from the ec2 metadata of i-1")
    assert lines[1:] == [KEY]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    access.write_authorized_keys(tmp_path, [], "the ec2 metadata of i-2")  # replaced
    assert path.read_text().splitlines()[1:] == []


@pytest.mark.parametrize(("given", "expected"), [
    ("ip-10-0-0-5.ec2.internal", "ip-10-0-0-5.ec2.internal"),
    ("lockgate-1", "lockgate-1"),
    ("host.", "host"),
    ("a" * 40 + "." + "b" * 40, "a" * 40),  # longer than 64: its first label
    ("bad_name", None),
    ("-x", None),
    ("", None),
])
def test_host_names_the_kernel_takes(given: str, expected: str | None) -> None:
    assert access.host_name_for(given) == expected


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare (a UTS namespace of its own)")
def test_set_host_name_changes_the_kernel_name_in_a_uts_namespace() -> None:
    code = ("from lockgate.firstboot.apply.access import set_host_name\n"
            "import socket\nset_host_name('lg-uts-test.example.internal')\n"
            "print(socket.gethostname())")
    proc = subprocess.run(["unshare", "--uts", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "lg-uts-test.example.internal"
