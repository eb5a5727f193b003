"""The guest's serial console: stream it to a log, find markers, notice silence.

A reader thread copies QEMU's stdout (the serial port) to the log file and
to an in-memory text; waiters block on a condition until a pattern appears,
the console stays quiet too long, the overall deadline passes or QEMU exits.
Marker parsing and the quiet watchdog are plain functions/classes so they are
tested without QEMU.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lockgate.errors import Failure

# A marker counts once its whole line has arrived: the serial port delivers lines in
# pieces, and "source=g" is not "source=gce".
FIRSTBOOT_RE = re.compile(
    r"lockgate-firstboot: done state=(?P<state>\S+) instance=(?P<instance>\S+) "
    r"source=(?P<source>\S+)[^\n]*\n")
RUNTIME_RE = re.compile(r"lockgate-runtime: serving\b(?P<rest>[^\n]*)\n")
# What an unconfigured appliance prints before "serving" (runtime/serve.py): the web wizard.
WIZARD_RE = re.compile(r"lockgate-runtime: initial configuration: "
                       r"(?P<url>https://\S+/wizard\?token=(?P<token>[A-Za-z0-9_-]+))")
_ANSI_RE = re.compile(r"\x1b(\[[0-9;?=]*[A-Za-z]|[()][A-Z0-9]|[A-Za-z])")

# Console lines that show how far a boot got; the first match of each is shown as progress.
MILESTONES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("firmware", re.compile(r"SeaBIOS \(version|BdsDxe: (loading|starting)")),
    ("GRUB", re.compile(r"GRUB|Booting `|Loading Linux|Loading lockgate")),
    ("Linux kernel", re.compile(r"Linux version \d")),
    ("systemd", re.compile(r"systemd\[1\]|Welcome to (Debian|.*GNU/Linux)")),
    ("first boot done", FIRSTBOOT_RE),
    ("runtime serving", RUNTIME_RE),
)


class BootError(Failure):
    """The VM did not get where it should: quiet too long, deadline passed, or QEMU exited."""


@dataclass(frozen=True)
class FirstbootDone:
    state: str  # configured | needs-initial-configuration | failed
    instance: str
    source: str


@dataclass(frozen=True)
class RuntimeServing:
    admin: str | None
    rest: str | None
    fingerprint: str | None


def clean(text: str) -> str:
    """Console bytes as plain text lines: ANSI escapes and carriage returns removed."""
    return _ANSI_RE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def parse_firstboot(text: str) -> FirstbootDone | None:
    match = FIRSTBOOT_RE.search(clean(text))
    if match is None:
        return None
    return FirstbootDone(match["state"], match["instance"], match["source"])


def parse_runtime(text: str) -> RuntimeServing | None:
    match = RUNTIME_RE.search(clean(text))
    if match is None:
        return None
    fields = dict(re.findall(r"(\w+)=(\S+)", match["rest"]))
    return RuntimeServing(fields.get("admin"), fields.get("rest"), fields.get("fingerprint"))


class QuietWatchdog:
    """Fires when no new output arrived for ``limit`` seconds (clock injectable for tests)."""

    def __init__(self, limit: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self.last_output = clock()

    def feed(self) -> None:
        self.last_output = self._clock()

    def quiet_for(self) -> float:
        return self._clock() - self.last_output

    def expired(self) -> bool:
        return self.quiet_for() >= self.limit

    def remaining(self) -> float:
        return max(0.0, self.limit - self.quiet_for())


class Console:
    """Reads the serial console from ``fd`` in a thread; see :meth:`wait_for`."""

    def __init__(self, fd: int, log_path: Path, *, quiet_timeout: float,
                 on_milestone: Callable[[str, float], None] | None = None,
                 started: float | None = None) -> None:
        self.log_path = log_path
        self.started = time.monotonic() if started is None else started
        self.watchdog = QuietWatchdog(quiet_timeout)
        self._fd = fd
        self._raw: list[str] = []
        self._text = ""
        self._cond = threading.Condition()
        self._closed = False
        self._on_milestone = on_milestone
        self._milestones_seen: set[str] = set()
        self._log = log_path.open("ab")
        self._thread = threading.Thread(target=self._pump, name="serial-console", daemon=True)
        self._thread.start()

    @property
    def text(self) -> str:
        with self._cond:
            return self._text

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def _pump(self) -> None:
        held = b""  # a CR that ended a read: its LF may start the next one
        try:
            while True:
                try:
                    chunk = os.read(self._fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                self._log.write(chunk)
                self._log.flush()
                chunk, held = held + chunk, b""
                if chunk.endswith(b"\r"):
                    chunk, held = chunk[:-1], b"\r"
                with self._cond:
                    self._text += clean(chunk.decode("utf-8", errors="replace"))
                    self.watchdog.feed()
                    self._cond.notify_all()
                self._note_milestones()
        finally:
            self._log.close()
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _note_milestones(self) -> None:
        if self._on_milestone is None:
            return
        text = self.text
        for name, pattern in MILESTONES:
            if name not in self._milestones_seen and pattern.search(text):
                self._milestones_seen.add(name)
                self._on_milestone(name, time.monotonic() - self.started)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float, *,
                 start: int = 0, quiet_timeout: float | None = None,
                 what: str | None = None) -> re.Match[str]:
        """Block until ``pattern`` appears in the console text (from offset ``start``).

        Raises :class:`BootError` when ``timeout`` passes, when the console
        prints nothing new for the quiet limit, or when QEMU's console closes.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        quiet = self.watchdog.limit if quiet_timeout is None else quiet_timeout
        what = what or repr(regex.pattern)
        with self._cond:
            while True:
                match = regex.search(self._text, start)
                if match is not None:
                    return match
                if self._closed:
                    raise BootError(f"QEMU exited before the console showed {what} "
                                    f"(console log: {self.log_path})")
                if self.watchdog.quiet_for() >= quiet:
                    raise BootError(f"no new console output for {quiet:g} s while waiting for "
                                    f"{what}; the boot looks stuck "
                                    f"(console log: {self.log_path})")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BootError(f"{what} did not appear on the console within "
                                    f"{timeout:g} s (console log: {self.log_path})")
                wake = min(left, max(0.05, quiet - self.watchdog.quiet_for()))
                self._cond.wait(wake)

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)
