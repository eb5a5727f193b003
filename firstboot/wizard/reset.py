"""``z-reset-password``: set a user's password again, interactively or from a pipe."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TextIO

from lockgate.errors import BadInput

from .model import ADMIN_USER
from .prompter import InteractiveAnswers, Prompter
from .questions import InvalidAnswer, Question, parse_password

_USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")


def parse_user(text: str) -> str:
    name = text.strip()
    if not _USER_NAME.match(name):
        raise InvalidAnswer(
            f"{name!r} is not a valid user name (letters, digits, '_', '.', '@', '-'; up to 64)"
        )
    return name


USER = Question(key="user", step="user", prompt=f"User [{ADMIN_USER}]", parse=parse_user,
                default=ADMIN_USER)
NEW_PASSWORD = Question(key="password", step="password", prompt="New password",
                        parse=parse_password, secret=True)


def password_from_stream(stream: TextIO) -> str:
    """The first line of a pipe; refuses a terminal, where the password would be echoed."""
    if stream.isatty():
        raise BadInput("password: --password-stdin reads a pipe or file, not a terminal "
                       "(run without it to be asked without echo)")
    line = stream.readline()
    try:
        return parse_password(line.removesuffix("\n").removesuffix("\r"))
    except InvalidAnswer as exc:
        raise BadInput(f"password: {exc}") from None


def reset_password(root: Path, user: str | None, password_stdin: bool,
                   stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> str:
    """Ask (or read) and set the password; returns the user name it was set for."""
    if user is not None:
        try:
            user = parse_user(user)
        except InvalidAnswer as exc:
            raise BadInput(f"user: {exc}") from None
    if password_stdin:
        password = password_from_stream(stdin)
        user = user or ADMIN_USER
    else:
        answers = InteractiveAnswers(Prompter(stdin, stdout))
        if user is None:
            user = answers.answer(USER)
        password = answers.answer(NEW_PASSWORD)

    from lockgate.firstboot.apply.admin import set_admin_password

    kept = set_admin_password(root, user, password, replace_unreadable=True)
    if kept is not None:
        stdout.write(f"note: the users file could not be read; it was kept as {kept} "
                     f"and replaced by one with only '{user}'.\n")
    return user
