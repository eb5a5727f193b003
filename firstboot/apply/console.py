"""The machine's console: the only place a generated password is ever shown.

The first-boot service's stdout and stderr go to the journal, which is kept
on disk and may be shipped off the machine, so a secret line is written to
the console device directly and nowhere else. On clouds the console is what
``aws ec2 get-console-output`` / the serial port log shows, which is how the
reference product hands out its random password.

``target`` is a device or file path (default ``/dev/console``) or ``fd:N``
for an already open descriptor (tests).
"""

from __future__ import annotations

import os

DEFAULT_CONSOLE = "/dev/console"


class ConsoleError(Exception):
    """The console could not be opened or written."""


class Console:
    def __init__(self, target: str = DEFAULT_CONSOLE) -> None:
        # A malformed fd:N is a broken unit file or command line: say so up front
        # instead of failing on the first message (which used to be a traceback).
        if target.startswith("fd:") and not target[3:].isdigit():
            raise ValueError("expected a path or fd:N with N a descriptor number")
        self.target = target
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            if self.target.startswith("fd:"):
                self._fd = int(self.target[3:])
            else:
                flags = os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_CREAT
                try:
                    # 0600: when the console is a plain file (tests, a log
                    # capture) it may hold a password.
                    self._fd = os.open(self.target, flags, 0o600)
                except OSError as exc:
                    raise ConsoleError(f"console {self.target}: {exc.strerror}") from exc
        return self._fd

    def write(self, line: str) -> None:
        """Write one line to the console (and only there)."""
        fd = self._open()
        data = (line.rstrip("\n") + "\n").encode()
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as exc:
            raise ConsoleError(f"console {self.target}: {exc.strerror}") from exc

    def close(self) -> None:
        if self._fd is not None and not self.target.startswith("fd:"):
            os.close(self._fd)
        self._fd = None
