"""Errors that end a command with one clear line instead of a traceback.

``BadInput`` (exit 2) is for input the user can fix: a bad flag, a malformed
file, invalid user-data. ``Failure`` (exit 1) is for everything that went
wrong while doing the work: a program that failed, a server that would not
answer. Both print ``error: <message>`` on stderr.
"""

from __future__ import annotations

from typing import IO, Any

import click


class LockgateError(click.ClickException):
    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class BadInput(LockgateError):
    exit_code = 2


class Failure(LockgateError):
    exit_code = 1


def die(message: str) -> Failure:
    """Return a ``Failure`` to ``raise``: ``raise die("disk full: ...")``."""
    return Failure(message)
