"""The admin step: hashed password in users.json (0600); a generated one only on the console."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from lockgate.firstboot.apply.admin import (
    admin_password_chosen,
    apply_admin,
    load_users,
    set_admin_password,
)
from lockgate.firstboot.apply.base import ApplyContext, Outcome
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.settings import Settings
from lockgate.passwords import verify_password
from lockgate.paths import StatePaths


def files_containing(tree: Path, needle: str, skip: Path | None = None) -> list[Path]:
    found = []
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink() and path != skip \
                and needle.encode() in path.read_bytes():
            found.append(path)
    return found


def test_set_admin_password_writes_a_private_hash(tmp_path: Path) -> None:
    set_admin_password(tmp_path, "admin", "s3cret-Pass")
    paths = StatePaths.under_root(tmp_path)
    assert stat.S_IMODE(paths.users.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.config.stat().st_mode) == 0o700
    data = json.loads(paths.users.read_text())
    entry = data["users"]["admin"]
    assert entry["role"] == "admin"
    assert verify_password("s3cret-Pass", entry["hash"])
    assert not verify_password("wrong", entry["hash"])
    assert files_containing(tmp_path, "s3cret-Pass") == []
    assert admin_password_chosen(tmp_path)


def test_set_admin_password_keeps_other_users_and_leaves_no_temp_files(tmp_path: Path) -> None:
    set_admin_password(tmp_path, "admin", "first-one")
    set_admin_password(tmp_path, "ops", "second-one")
    set_admin_password(tmp_path, "admin", "third-one")
    users = load_users(tmp_path)
    assert sorted(users) == ["admin", "ops"]
    assert verify_password("third-one", users["admin"]["hash"])
    assert verify_password("second-one", users["ops"]["hash"])
    config = StatePaths.under_root(tmp_path).config
    assert [p.name for p in config.iterdir()] == ["users.json"]


def test_umask_does_not_widen_or_narrow_modes(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        set_admin_password(tmp_path, "admin", "pw-under-umask-0")
    finally:
        os.umask(old)
    assert stat.S_IMODE(StatePaths.under_root(tmp_path).users.stat().st_mode) == 0o600


def test_password_from_user_data(tmp_path: Path) -> None:
    console = tmp_path / "console"
    ctx = ApplyContext(tmp_path / "root", Console(str(console)))
    result = apply_admin(ctx, Settings(password="from-user-data", user="boss"))
    assert result.result is Outcome.OK
    assert "from-user-data" not in result.message
    users = load_users(ctx.root)
    assert verify_password("from-user-data", users["boss"]["hash"])
    assert not console.exists() or "from-user-data" not in console.read_text()


def test_generated_password_goes_to_the_console_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "root"
    console_file = tmp_path / "console"
    console = Console(str(console_file))
    result = apply_admin(ApplyContext(root, console), Settings())
    console.close()
    assert result.result is Outcome.OK, result.message

    line = console_file.read_text().strip()
    password = line.rsplit(": ", 1)[1]
    assert len(password) >= 12
    assert stat.S_IMODE(console_file.stat().st_mode) == 0o600
    entry = load_users(root)["admin"]
    assert verify_password(password, entry["hash"])
    assert entry["generated"] is True
    assert not admin_password_chosen(root)

    assert password not in result.message
    assert files_containing(tmp_path, password, skip=console_file) == []
    out, err = capsys.readouterr()
    assert password not in out and password not in err
    assert password not in caplog.text


def test_existing_password_is_kept_when_user_data_has_none(tmp_path: Path) -> None:
    set_admin_password(tmp_path, "admin", "chosen-earlier")
    console_file = tmp_path / "console"
    result = apply_admin(ApplyContext(tmp_path, Console(str(console_file))), Settings())
    assert result.result is Outcome.SKIPPED
    assert not console_file.exists()
    assert verify_password("chosen-earlier", load_users(tmp_path)["admin"]["hash"])


def test_unwritable_console_is_a_warning_and_the_hash_is_still_stored(tmp_path: Path) -> None:
    console = Console(str(tmp_path / "no-such-dir" / "console"))
    result = apply_admin(ApplyContext(tmp_path, console), Settings())
    assert result.result is Outcome.WARNING
    assert "z-reset-password" in result.message
    assert load_users(tmp_path)["admin"]["generated"] is True


def test_corrupt_users_file_is_an_error_not_a_silent_reset(tmp_path: Path) -> None:
    users = StatePaths.under_root(tmp_path).users
    users.parent.mkdir(parents=True)
    users.write_text('{"something": 1}')
    with pytest.raises(ValueError, match="users"):
        set_admin_password(tmp_path, "admin", "pw")


@pytest.mark.parametrize("broken", [b'{"users": ', b"", b"[]", b"\xff\xfe"])
def test_reset_password_recovers_from_an_unreadable_users_file(tmp_path: Path,
                                                               broken: bytes) -> None:
    """The documented recovery (z-reset-password, the wizard) must work on a broken file."""
    import io

    from lockgate.firstboot.wizard.reset import reset_password

    users_file = StatePaths.under_root(tmp_path).users
    users_file.parent.mkdir(parents=True)
    users_file.write_bytes(broken)
    users_file.chmod(0o600)
    out = io.StringIO()
    assert reset_password(tmp_path, None, True, stdin=io.StringIO("fresh-pass1\n"),
                          stdout=out) == "admin"
    users = load_users(tmp_path)
    assert verify_password("fresh-pass1", users["admin"]["hash"])
    assert admin_password_chosen(tmp_path)
    kept = sorted(users_file.parent.glob("users.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == broken  # nothing thrown away
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    assert kept[0].name in out.getvalue()


def test_set_admin_password_still_refuses_a_broken_file_by_default(tmp_path: Path) -> None:
    users_file = StatePaths.under_root(tmp_path).users
    users_file.parent.mkdir(parents=True)
    users_file.write_text("[]")
    with pytest.raises(ValueError):
        set_admin_password(tmp_path, "admin", "whatever1")
    assert users_file.read_text() == "[]"
