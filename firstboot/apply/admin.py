"""The admin user and its password (``StatePaths.users``, JSON, mode 0600).

``{"users": {"admin": {"hash": "scrypt$...", "crypt": "$6$...", "role": "admin"}}}``;
``crypt`` is the same password in /etc/shadow's form, for the ``admin`` login
account (console and SSH, see :mod:`.access`). A password
this step made up itself also carries ``"generated": true`` until someone
chooses one (user-data, ``z-initial-config``, ``z-reset-password``): until
then initial configuration is not finished. The generated password's plain
text goes to the console and nowhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lockgate.files import atomic_write, set_aside
from lockgate.firstboot.apply.access import crypt_hash, sync_shadow
from lockgate.firstboot.apply.base import ApplyContext, Outcome, StepResult
from lockgate.firstboot.apply.console import ConsoleError
from lockgate.firstboot.settings import Settings
from lockgate.passwords import hash_password, random_password
from lockgate.paths import StatePaths

NAME = "admin"


def load_users(root: Path) -> dict[str, dict[str, Any]]:
    path = StatePaths.under_root(root).users
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:  # not JSON, or not UTF-8
        raise ValueError(f"{path}: unreadable ({exc}); run z-reset-password") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise ValueError(f"{path}: no \"users\" object; restore it or run z-reset-password")
    return users


def set_admin_password(root: Path, user: str, password: str, *, generated: bool = False,
                       replace_unreadable: bool = False) -> Path | None:
    """Give ``user`` the admin role and ``password`` (stored hashed only).

    ``replace_unreadable`` is for the console recovery tools (``z-reset-password``,
    the wizard): a users file that is not valid JSON or not ours would otherwise
    lock the appliance out for good. It is renamed aside (kept, still 0600) and a
    new file holds only ``user``; the path it was renamed to is returned.
    """
    if not user or not password:
        raise ValueError("admin user name and password must not be empty")
    kept: Path | None = None
    try:
        users = load_users(root)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        if not replace_unreadable:
            raise
        (kept,) = set_aside([StatePaths.under_root(root).users], "unreadable")
        users = {}
    entry: dict[str, Any] = {"hash": hash_password(password), "role": "admin"}
    console = crypt_hash(password)
    if console:  # the same password for the console/SSH account (see access.py)
        entry["crypt"] = console
    if generated:
        entry["generated"] = True
    users[user] = entry
    text = json.dumps({"users": users}, indent=2, sort_keys=True) + "\n"
    atomic_write(StatePaths.under_root(root).users, text.encode(), 0o600)
    sync_shadow(root)
    return kept


def admin_exists(root: Path) -> bool:
    return any(u.get("role") == "admin" for u in load_users(root).values())


def admin_password_chosen(root: Path) -> bool:
    """True once an admin has a password a person chose (not a generated one)."""
    return any(u.get("role") == "admin" and not u.get("generated")
               for u in load_users(root).values())


def apply_admin(ctx: ApplyContext, settings: Settings) -> StepResult:
    if settings.password is not None:
        set_admin_password(ctx.root, settings.user, settings.password)
        return StepResult(NAME, Outcome.OK, f"password for {settings.user!r} set from user-data")
    if admin_exists(ctx.root):
        return StepResult(NAME, Outcome.SKIPPED,
                          "no password in user-data; the existing admin password is kept")
    password = random_password()
    set_admin_password(ctx.root, settings.user, password, generated=True)
    try:
        ctx.console.write(f"lockgate-firstboot: no password in user-data; generated password "
                          f"for {settings.user!r}: {password}")
    except ConsoleError as exc:
        return StepResult(NAME, Outcome.WARNING,
                          f"generated a random password but could not show it ({exc}); "
                          "set one with z-reset-password on the console")
    return StepResult(NAME, Outcome.OK,
                      f"no password in user-data; a random password for {settings.user!r} "
                      "was shown on the console")
