"""Who can log in, and as what name: the ``admin`` account, its SSH keys, the host name.

The root slots are read-only, so what belongs to one appliance is kept
elsewhere and put in place at every boot:

* **Password.** The image's ``/etc/shadow`` is a link to
  ``/run/lockgate/shadow``; the image's own entries are in
  ``/etc/shadow.base`` (root's stays locked). :func:`sync_shadow` writes the
  link's target from the base plus the ``admin`` entry, whose hash is the
  crypt(3) form (SHA-512, ``$6$``) of the admin password kept beside its
  scrypt hash in ``users.json`` (``"crypt"``). First boot runs it every boot;
  setting the password (user-data, generated, ``z-initial-config``,
  ``z-reset-password``) runs it again, so the console password is always
  the admin password.
* **SSH keys.** sshd reads ``/var/lib/lockgate/ssh-keys/<user>``
  (``AuthorizedKeysFile``) on the data partition; first boot replaces
  ``admin``'s file at every boot with the keys the cloud serves for the
  current instance (a metadata outage keeps the last ones).
* **Host name.** The kernel's (transient) host name, from the cloud's
  metadata, set at every boot; ``/etc/hostname`` on the read-only root stays
  the image's ``lockgate`` (the static name).
"""

from __future__ import annotations

import contextlib
import grp
import os
import re
import socket
import warnings
from pathlib import Path

from lockgate.files import atomic_write, make_dirs
from lockgate.paths import STATE_DIR, StatePaths, run_dir

ACCOUNT = "admin"  # the one login account; the image creates it
SHADOW_BASE = Path("/etc/shadow.base")
SHADOW_NAME = "shadow"  # in /run/lockgate, where /etc/shadow points
KEYS_DIR = STATE_DIR / "ssh-keys"  # sshd's AuthorizedKeysFile: KEYS_DIR/%u
HOSTNAME_FILE = "hostname"  # in the firstboot state folder: the last name the cloud gave
CRYPT_ROUNDS = 65536  # SHA-512-crypt: about 15 ms, thirteen times Debian's default
KEY_TYPES = re.compile(r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|"
                       r"sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)")
LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
HOST_NAME_MAX = 64  # the kernel's limit


def crypt_hash(password: str) -> str | None:
    """The password in crypt(3) form for /etc/shadow; None where Python lacks ``crypt``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # gone in 3.13; Debian 12 has 3.11
        try:
            import crypt
        except ImportError:
            return None
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512, rounds=CRYPT_ROUNDS))


def console_hash(users: dict[str, dict[str, object]]) -> str | None:
    """The crypt hash the ``admin`` account gets: lockgate's user ``admin`` when it is an
    administrator, else the first administrator by name (user-data's ``user=``)."""
    candidates = [users[ACCOUNT]] if users.get(ACCOUNT, {}).get("role") == "admin" else []
    candidates += [users[name] for name in sorted(users) if users[name].get("role") == "admin"]
    for entry in candidates:
        value = entry.get("crypt")
        if isinstance(value, str) and value.startswith("$"):
            return value
    return None


def shadow_text(base: str, password_hash: str | None) -> str:
    """``base`` with the admin entry's password field replaced (``!``: no password login)."""
    lines, found = [], False
    for line in base.splitlines():
        fields = line.split(":")
        if fields[0] == ACCOUNT and len(fields) >= 2:
            fields[1] = password_hash or "!"
            line, found = ":".join(fields), True
        lines.append(line)
    if not found:  # an image without the entry: add one with no ageing
        lines.append(f"{ACCOUNT}:{password_hash or '!'}:::::::")
    return "\n".join(lines) + "\n"


def sync_shadow(root: Path) -> Path | None:
    """Write ``/run/lockgate/shadow`` for ``root``; None when ``root`` is not laid out that
    way (no ``/etc/shadow.base``: a development tree, a test)."""
    base = root / SHADOW_BASE.relative_to("/")
    if not base.is_file():
        return None
    from lockgate.firstboot.apply.admin import load_users

    try:
        users = load_users(root)
    except ValueError:  # broken users.json: no console password until it is repaired
        users = {}
    target = run_dir(root) / SHADOW_NAME
    atomic_write(target, shadow_text(base.read_text(), console_hash(users)).encode(), 0o640,
                 dir_mode=0o755)
    # Group "shadow" reads it (unix_chkpwd), as Debian's own /etc/shadow. No such group
    # (a test tree) or not root: it stays 0640 and root's alone.
    with contextlib.suppress(KeyError, PermissionError):
        os.chown(target, 0, grp.getgrnam("shadow").gr_gid)
    return target


def authorized_keys_path(root: Path, user: str = ACCOUNT) -> Path:
    return root / KEYS_DIR.relative_to("/") / user


def clean_keys(keys: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """(usable keys, rejected lines). A key is ``TYPE BASE64 [comment]`` on one line;
    anything else (``command=`` options, junk) is refused, not written for sshd."""
    good: list[str] = []
    bad: list[str] = []
    for key in keys:
        parts = key.strip().split()
        if len(parts) >= 2 and KEY_TYPES.fullmatch(parts[0]) and \
                re.fullmatch(r"[A-Za-z0-9+/]+={0,3}", parts[1]) and "\n" not in key:
            if key.strip() not in good:
                good.append(key.strip())
        else:
            bad.append(key.strip()[:40])
    return good, bad


def write_authorized_keys(root: Path, keys: list[str], origin: str) -> Path:
    """Replace admin's key file. Folders 0755 and the file 0644, owned by root: sshd
    reads it as the user and accepts root-owned files (StrictModes)."""
    path = authorized_keys_path(root)
    make_dirs(path.parent, 0o755)
    os.chmod(path.parent, 0o755)
    header = f"# SSH keys for {ACCOUNT} from {origin}; replaced at every boot by lockgate\n"
    atomic_write(path, (header + "".join(f"{k}\n" for k in keys)).encode(), 0o644,
                 dir_mode=0o755)
    return path


def host_name_for(name: str) -> str | None:
    """A name the kernel takes: the metadata's name when it is a valid host name of at
    most 64 characters, else its first label; None when even that is not valid."""
    name = name.strip().rstrip(".")
    labels = name.split(".")
    if not name or not all(LABEL.fullmatch(label) for label in labels):
        return None
    return name if len(name) <= HOST_NAME_MAX else labels[0]


def set_host_name(name: str) -> None:
    """The kernel's host name (systemd calls it the transient one); needs root."""
    socket.sethostname(name)


def remember_host_name(root: Path, name: str) -> None:
    atomic_write(StatePaths.under_root(root).firstboot / HOSTNAME_FILE, f"{name}\n".encode(),
                 0o644)


def last_host_name(root: Path) -> str | None:
    try:
        text = (StatePaths.under_root(root).firstboot / HOSTNAME_FILE).read_text().strip()
    except (OSError, ValueError):
        return None
    return host_name_for(text) if text else None

