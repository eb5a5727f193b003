"""Replay files: the wizard's answers as ``key=value`` lines.

Format (also in docs/wizard.md): one ``key=value`` per line, split at the
first ``=``; the key is trimmed, the value is everything after the ``=`` up to
the end of the line, verbatim (a password may begin or end with spaces).
Blank lines and lines starting with ``#`` are ignored. Known keys are
:data:`~lockgate.firstboot.wizard.questions.REPLAY_KEYS`; an unknown or
repeated key is an error, so a typo never silently falls back to a default.
The file holds the admin password in plain text: it is written with mode 0600.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lockgate.errors import BadInput

from .model import Answers
from .questions import REPLAY_KEYS

STEP = "replay file"  # the <step> in "error: <step>: <reason>" for file-level problems


def parse_replay(text: str) -> dict[str, str]:
    answers: dict[str, str] = {}
    # Split on "\n" only: str.splitlines() would also split on form feeds and
    # other separators a password may legitimately contain.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep:
            raise BadInput(f"{STEP}: line {number}: expected key=value")
        if key not in REPLAY_KEYS:
            raise BadInput(
                f"{STEP}: line {number}: unknown key {key!r} (known: {', '.join(REPLAY_KEYS)})"
            )
        if key in answers:
            raise BadInput(f"{STEP}: line {number}: {key!r} is given twice")
        answers[key] = value
    return answers


def read_replay(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{STEP}: cannot read {path}: {exc}") from None
    return parse_replay(text)


def is_readable_by_others(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def format_replay(answers: Answers) -> str:
    lines = [
        "# lockgate z-initial-config replay file: use with --replay-from.",
        "# It contains the admin password in plain text; keep it private (mode 0600).",
        f"password={answers.password}",
        f"accept_license={'y' if answers.accept_license else 'n'}",
        f"timezone={answers.timezone}",
        f"ntp_server={answers.ntp_server or ''}",
        f"ssh_intrusion_prevention={'y' if answers.ssh_intrusion_prevention else 'n'}",
        f"license_key={answers.licence_key or ''}",
    ]
    if answers.sd_address:
        lines += ["register_sd=y", f"sd_address={answers.sd_address}",
                  f"sd_registration_key={answers.sd_registration_key or ''}",
                  f"sd_cert={answers.sd_cert or ''}"]
    return "\n".join(lines) + "\n"


def write_replay(path: Path, answers: Answers) -> None:
    """Write atomically, mode 0600 from the start: the password is never world-readable."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # The name is predictable and the folder may be shared (/tmp): never follow or
    # reuse what is there, or the password could be written through a planted link.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a stale temporary file may have had looser bits
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(format_replay(answers))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
