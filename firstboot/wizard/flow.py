"""The wizard's seven steps, written once for both a person and a replay file.

Each step explains itself through ``source.say`` (silent when replaying) and
gets its value through ``source.answer(QUESTION)``. Nothing here changes the
appliance: the result is an :class:`Answers`, applied only after the summary
is confirmed (see :mod:`lockgate.firstboot.wizard.finish`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from lockgate.errors import LockgateError
from lockgate.paths import PRODUCT_HOME, StatePaths

from .model import Answers
from .prompter import AnswerSource
from .questions import (
    ACCEPT_LICENSE,
    COMMUNITY_EDITION,
    DEFAULT_TIMEZONE,
    LICENSE_KEY,
    NTP_SERVER,
    PASSWORD,
    REGISTER_SD,
    SD_ADDRESS,
    SD_CERT,
    SD_REGISTRATION_KEY,
    SSH_INTRUSION_PREVENTION,
    InvalidAnswer,
    parse_timezone,
    timezone_question,
)

STEPS = 7
LICENCE_SUMMARY = (
    "lockgate is licensed under the Apache License, Version 2.0:\n"
    "https://www.apache.org/licenses/LICENSE-2.0"
)
# Where an image may ship the full text; the first that exists is shown.
LICENCE_TEXT_CANDIDATES = (
    PRODUCT_HOME / "LICENSE",
    PRODUCT_HOME / "LICENCE.txt",
    Path("/usr/share/doc/lockgate/copyright"),
)


class Stopped(LockgateError):
    """The user ended the wizard (declined, said no, end of input): nothing was changed."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        # Not an error, so no "error:" prefix: just what happened.
        click.echo(self.format_message(), err=True, file=file)


class Interrupted(Stopped):
    """Ctrl-C: the shell's usual 128 + SIGINT."""

    exit_code = 130


@dataclass(frozen=True)
class Context:
    root: Path
    current_timezone: str
    licence_text: Path | None  # the full licence text on this system, if shipped
    already_configured: bool


def current_timezone(root: Path) -> str:
    """The appliance's timezone as Debian records it, else the product default."""
    candidates: list[str] = []
    # On the appliance /etc/timezone links (absolute) into the data partition,
    # so read the data partition's copy under ``root`` first.
    for path in (StatePaths.under_root(root).config / "timezone", root / "etc/timezone"):
        if path.is_file() and not path.is_symlink():
            candidates.append(path.read_text(encoding="utf-8", errors="replace").strip())
    localtime = root / "etc/localtime"
    if localtime.is_symlink():
        target = os.readlink(localtime)
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        try:
            return parse_timezone(name)
        except InvalidAnswer:
            continue  # a stale or hand-edited setting: fall back to the next, then the default
    return DEFAULT_TIMEZONE


def find_licence_text(root: Path) -> Path | None:
    for candidate in LICENCE_TEXT_CANDIDATES:
        path = root / candidate.relative_to("/")
        if path.is_file():
            return path
    return None


def make_context(root: Path) -> Context:
    from lockgate.firstboot.apply.licence import licence_accepted

    try:
        configured = licence_accepted(root)
    except (ValueError, OSError) as exc:  # damaged or unreadable: the wizard rewrites it
        click.echo(f"warning: cannot read the licence record ({exc}); it will be rewritten",
                   err=True)
        configured = False
    return Context(
        root=root,
        current_timezone=current_timezone(root),
        licence_text=find_licence_text(root),
        already_configured=configured,
    )


def heading(source: AnswerSource, number: int, title: str) -> None:
    source.say()
    source.say(f"--- Step {number} of {STEPS}: {title} ---")


def collect_answers(source: AnswerSource, ctx: Context) -> Answers:
    heading(source, 1, "Welcome")
    source.say("This program sets up the lockgate traffic manager appliance for basic use.")
    source.say("Press Ctrl-C (or Ctrl-D) at any prompt to abort: nothing is changed until")
    source.say("you confirm the summary at the end.")
    if ctx.already_configured:
        source.say("Note: this appliance is already configured; finishing the wizard replaces")
        source.say("the admin password and the settings below.")
    source.pause("Press return to continue")

    heading(source, 2, "Administrator password")
    source.say("Choose the password of the 'admin' user (Admin UI, REST API and console).")
    source.say("At least 6 characters; it is not shown while you type.")
    password = source.answer(PASSWORD)

    heading(source, 3, "Licence")
    source.say(LICENCE_SUMMARY)
    if ctx.licence_text is not None:
        source.say(f"Full text on this appliance: {ctx.licence_text}")
    if not source.answer(ACCEPT_LICENSE):
        raise Stopped("licence not accepted: nothing changed")

    heading(source, 4, "Date, time and timezone")
    now = dt.datetime.now(dt.UTC)
    source.say(f"The clock says {now:%Y-%m-%d %H:%M:%S} UTC; it is kept right by NTP.")
    timezone = source.answer(timezone_question(ctx.current_timezone))
    ntp_server = source.answer(NTP_SERVER)

    heading(source, 5, "Security")
    source.say("SSH intrusion prevention blocks hosts after repeated failed SSH logins.")
    ssh = source.answer(SSH_INTRUSION_PREVENTION)

    heading(source, 6, "Licence key")
    source.say("Register this traffic manager with a Services Director for remote licensing,")
    source.say("or give the path of a licence key file, or leave it blank to run as the")
    source.say(f"{COMMUNITY_EDITION}.")
    sd_address = sd_key = sd_cert = None
    licence_key = None
    if source.answer(REGISTER_SD):
        source.say("The Services Director's REST API address and the registration key it")
        source.say("issued; the registration is sent when you confirm the summary.")
        sd_address = source.answer(SD_ADDRESS)
        sd_key = source.answer(SD_REGISTRATION_KEY)
        sd_cert = source.answer(SD_CERT)
    else:
        licence_key = source.answer(LICENSE_KEY)

    return Answers(
        password=password,
        timezone=timezone,
        ntp_server=ntp_server,
        ssh_intrusion_prevention=ssh,
        licence_key=licence_key,
        sd_address=sd_address,
        sd_registration_key=sd_key,
        sd_cert=sd_cert,
    )


def summary_lines(answers: Answers) -> list[str]:
    """Step 7's table; the password is always masked."""
    rows = [
        ("Admin user", answers.user),
        ("Admin password", "********"),
        ("Licence", "accepted" if answers.accept_license else "not accepted"),
        ("Timezone", answers.timezone),
        ("NTP server", answers.ntp_server or "system default"),
        ("SSH intrusion prevention", "enabled" if answers.ssh_intrusion_prevention else "disabled"),
        ("Licence key", str(answers.licence_key) if answers.licence_key
         else f"registered with the Services Director at {answers.sd_address}"
         if answers.sd_address else f"none: {COMMUNITY_EDITION}"),
    ]
    width = max(len(label) for label, _ in rows) + 2
    return [f"  {label + ':':<{width}}{value}" for label, value in rows]
