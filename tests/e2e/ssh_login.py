"""Logging in to a booted appliance over SSH as ``admin``, with the host's OpenSSH client.

The key pair is made per test; the guest's port 22 is forwarded to a port the
kernel chose (``booted(..., forwards=[(0, 22)])``). Host keys are not checked
(each boot makes new ones) and nothing is read from the runner's ~/.ssh.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lockgate.image.boot.vm import Vm

SSH_PORT = 22
LOGIN_WAIT = 120.0  # sshd may start after the runtime serves; TCG key exchange is slow
OPTIONS = ("-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o",
           "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
           "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=10")


def have_ssh() -> bool:
    return all(shutil.which(tool) for tool in ("ssh", "ssh-keygen"))


def need_ssh() -> None:
    if not have_ssh():
        pytest.skip("ssh/ssh-keygen not installed (openssh-client, scripts/apt-packages.txt)")


def make_key(folder: Path) -> tuple[Path, str]:
    """(private key file, public key line) of a new Ed25519 key pair."""
    need_ssh()
    private = folder / "id_e2e"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lockgate-e2e",
                    "-f", str(private)], check=True, timeout=60)
    return private, (folder / "id_e2e.pub").read_text().strip()


def ssh(vm: Vm, private: Path | None, command: str, *extra: str, stdin: str | None = None,
        user: str = "admin", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    identity = ("-o", "IdentitiesOnly=yes", "-i", str(private)) if private else ()
    argv = ["ssh", *OPTIONS, *identity, *extra, "-p", str(vm.ports[SSH_PORT]),
            f"{user}@127.0.0.1", command]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=None if stdin is not None else subprocess.DEVNULL)


def login(vm: Vm, private: Path, command: str) -> str:
    """Run ``command`` as admin; retried (bounded) while sshd is still coming up."""
    deadline = time.monotonic() + LOGIN_WAIT
    while True:
        done = ssh(vm, private, command)
        if done.returncode == 0:
            return done.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"ssh admin@guest {command!r} failed (exit {done.returncode}): "
                                 f"{done.stderr.strip()}\nconsole:\n{vm.console_text[-3000:]}")
        time.sleep(3)


# What login/PAM checks a console password against: admin's entry as getspnam() reads it
# (through /etc/shadow -> /run/lockgate/shadow); the password comes on stdin, not argv.
SHADOW_CHECK = ("sudo -n python3 -W ignore -c 'import crypt, spwd, sys; "
                "h = spwd.getspnam(\"admin\").sp_pwdp; "
                "print(crypt.crypt(sys.stdin.read(), h) == h)'")


def assert_admin_login(vm: Vm, private: Path, password: str | None = None) -> None:
    """The key the cloud served lets admin in; the host name is the cloud's; sudo works
    without a password; password logins over SSH are refused; the console password (the
    shadow entry) is the admin password."""
    out = login(vm, private, "hostname; id -un; sudo -n id -u; sudo -n lockgate --version")
    hostname, user, root_uid, version = out.strip().splitlines()[:4]
    assert hostname == vm.route.hostname, out
    assert (user, root_uid) == ("admin", "0"), out
    assert version.startswith("lockgate"), out
    refused = ssh(vm, None, "true", "-o", "PubkeyAuthentication=no", "-o",
                  "PreferredAuthentications=password,keyboard-interactive")
    assert refused.returncode == 255, refused.stdout + refused.stderr
    assert "Permission denied (publickey)" in refused.stderr, refused.stderr
    if password is not None:
        for given, expected in ((password, "True"), (password + "x", "False")):
            checked = ssh(vm, private, SHADOW_CHECK, stdin=given)
            assert checked.stdout.strip() == expected, checked.stdout + checked.stderr
