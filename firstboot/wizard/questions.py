"""The wizard's questions as data, and the validators that turn answers into values.

Nothing here reads a terminal or a file: a validator takes the text a user
typed (or a replay file held) and returns a typed value or raises
:class:`InvalidAnswer` with a reason short enough for one line. The same
validators serve the interactive prompts and ``--replay-from``, so both accept
exactly the same answers.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_TIMEZONE = "America/Los_Angeles"
MIN_PASSWORD_LENGTH = 6
MAX_LICENCE_KEY_BYTES = 1024 * 1024  # a key file is a few KiB; anything huge is the wrong file
COMMUNITY_EDITION = "Community Edition (10 Mb/s bandwidth, clusters of up to 4 traffic managers)"

_YES = frozenset({"y", "yes", "true"})
_NO = frozenset({"n", "no", "false"})
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class InvalidAnswer(ValueError):
    """An answer the wizard cannot use; the message says why in a few words."""


@dataclass(frozen=True)
class Question(Generic[T]):
    """One question: its replay-file key, the step it belongs to, how to ask and check it."""

    key: str  # the key in a replay file
    step: str  # names the step in errors: "error: <step>: <reason>"
    prompt: str
    parse: Callable[[str], T]  # raises InvalidAnswer
    default: str | None = None  # used for an empty answer (interactive) or a missing key (replay)
    secret: bool = False  # read without echo and ask twice
    help: Callable[[str], str] | None = field(default=None, compare=False)  # answers "help [x]"


# --- validators ---------------------------------------------------------------


def parse_password(text: str) -> str:
    """Taken verbatim (no stripping): leading or inner spaces are part of a password."""
    if not text:
        raise InvalidAnswer("the password must not be empty")
    if not text.strip():
        raise InvalidAnswer("the password must not be only spaces")
    if len(text) < MIN_PASSWORD_LENGTH:
        raise InvalidAnswer(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if any(ch in text for ch in "\r\n\0"):
        raise InvalidAnswer("the password must not contain line breaks or NUL characters")
    return text


def parse_yes_no(text: str) -> bool:
    word = text.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise InvalidAnswer(f"answer y or n, not {text.strip()!r}")


def parse_licence_acceptance(text: str) -> bool:
    """Only an explicit yes accepts; an empty answer declines (and ends the wizard)."""
    word = text.strip().lower()
    if word == "accept" or word in _YES:
        return True
    if word == "" or word in _NO:
        return False
    raise InvalidAnswer(f"type 'accept' (or y) to accept, or n to decline, not {text.strip()!r}")


@cache
def known_timezones() -> frozenset[str]:
    # "localtime" is the host's own link, not a zone a user should pick.
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def parse_timezone(text: str) -> str:
    name = text.strip()
    if not name:
        raise InvalidAnswer("the timezone must not be empty")
    zones = known_timezones()
    if name in zones:
        return name
    folded = [zone for zone in zones if zone.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise InvalidAnswer(
        f"unknown timezone {name!r}: use an IANA name such as Europe/London or UTC "
        "(enter 'help' for the list)"
    )


def timezone_help(arg: str) -> str:
    """'help' lists the regions; 'help Europe' lists the zones in one."""
    zones = sorted(known_timezones())
    prefix = arg.strip().rstrip("/").lower()
    if prefix:
        matches = [z for z in zones if z.lower().startswith(prefix + "/") or z.lower() == prefix]
        if not matches:
            matches = [z for z in zones if prefix in z.lower()]
        return "\n".join(matches) if matches else f"no timezone matches {arg.strip()!r}"
    regions = sorted({z.split("/", 1)[0] for z in zones if "/" in z})
    return (
        "Regions: " + ", ".join(regions) + "\n"
        "Enter 'help <Region>' (for example 'help Europe') to list its timezones;\n"
        "UTC is a timezone too."
    )


def parse_ntp_server(text: str) -> str | None:
    """A host name or IP address; empty keeps the system's default time servers."""
    name = text.strip()
    if not name or name.lower() == "none":
        return None
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass  # not an address: check it as a host name below
    host = name.removesuffix(".")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in host.split(".")):
        raise InvalidAnswer(f"{name!r} is not a valid host name or IP address")
    return host


def parse_licence_key_path(text: str) -> Path | None:
    """A readable licence key file; empty (or 'community') means the Community Edition."""
    raw = text.strip()
    if not raw or raw.lower() == "community":
        return None
    path = Path(raw).expanduser()
    if not path.exists():
        raise InvalidAnswer(f"{raw}: no such file")
    if not path.is_file():
        raise InvalidAnswer(f"{raw}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise InvalidAnswer(f"{raw}: the file is empty")
    if size > MAX_LICENCE_KEY_BYTES:
        raise InvalidAnswer(f"{raw}: {size} bytes is too big for a licence key file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidAnswer(f"{raw}: cannot read it ({exc.strerror})") from exc
    # The runtime's own check (signature by a trusted issuer, limits, expiry): a key the
    # runtime would ignore is refused here, with its reason, instead of silently running
    # as the Community Edition.
    from lockgate.runtime.licence import LicenceKeyError, check_key

    try:
        check_key(data)
    except LicenceKeyError as exc:
        raise InvalidAnswer(f"{raw}: {exc}") from None
    return path.resolve()


def parse_sd_address(text: str) -> str:
    """``host:port`` of a Services Director's REST API, checked as user-data's sd_address."""
    from lockgate.firstboot.userdata import UserDataError, _host_port

    value = text.strip()
    if not value:
        raise InvalidAnswer("give the Services Director's address as host:port")
    try:
        _host_port(value, "sd_address", port_required=True)
    except UserDataError as exc:
        raise InvalidAnswer(exc.reason) from None
    return value


def parse_sd_registration_key(text: str) -> str:
    """The registration key: the Services Director's auto-registration policy identifier
    (user-data's ``registration_policy``) that accepts this instance."""
    value = text.strip()
    if not value:
        raise InvalidAnswer("give the registration key the Services Director issued")
    if len(value) > 256 or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidAnswer("a registration key is one word of at most 256 characters")
    return value


def parse_sd_cert(text: str) -> str | None:
    """The Services Director's certificate (PEM, with or without its BEGIN/END lines) as
    user-data's sd_cert takes it; blank trusts the system's CAs."""
    from lockgate.firstboot.userdata import UserDataError, _certificate, _pem_body

    body = _pem_body(text)
    if not body:
        if "-----" in text:  # a console prompt takes one line: the header alone arrived
            raise InvalidAnswer("give the PEM body on one line, without the BEGIN/END lines")
        return None
    try:
        return _certificate(body)
    except UserDataError as exc:
        raise InvalidAnswer(exc.reason) from None


def licence_key_help(_arg: str) -> str:
    return (
        "A licence key file unlocks the licensed bandwidth and features. Leave the answer\n"
        f"blank to run as the {COMMUNITY_EDITION};\n"
        "you can add a key later from the Admin UI."
    )


# --- the questions ---------------------------------------------------------------

PASSWORD = Question(
    key="password",
    step="password",
    prompt="Admin password",
    parse=parse_password,
    secret=True,
)
ACCEPT_LICENSE = Question(
    key="accept_license",
    step="licence",
    prompt="Type 'accept' (or y) to accept the licence, or press return to decline",
    parse=parse_licence_acceptance,
)
NTP_SERVER = Question(
    key="ntp_server",
    step="ntp",
    prompt="NTP server (host name or address; blank for the system default)",
    parse=parse_ntp_server,
    default="",
)
SSH_INTRUSION_PREVENTION = Question(
    key="ssh_intrusion_prevention",
    step="security",
    prompt="Enable SSH intrusion prevention? (recommended) [Y/n]",
    parse=parse_yes_no,
    default="y",
)
LICENSE_KEY = Question(
    key="license_key",
    step="licence key",
    prompt="Licence key file (blank for the Community Edition; 'help' for more)",
    parse=parse_licence_key_path,
    default="",
    help=licence_key_help,
)


REGISTER_SD = Question(
    key="register_sd",
    step="licence key",
    prompt="Register with a Services Director for remote licensing? [y/N]",
    parse=parse_yes_no,
    default="n",
)
SD_ADDRESS = Question(
    key="sd_address",
    step="services director",
    prompt="Services Director address (host:port of its REST API)",
    parse=parse_sd_address,
)
SD_REGISTRATION_KEY = Question(
    key="sd_registration_key",
    step="services director",
    prompt="Registration key",
    parse=parse_sd_registration_key,
)
SD_CERT = Question(
    key="sd_cert",
    step="services director",
    prompt="Services Director certificate (PEM body; blank to trust the system CAs)",
    parse=parse_sd_cert,
    default="",
)


def timezone_question(default: str) -> Question[str]:
    """The default is the appliance's current timezone, so it is only known at run time."""
    return Question(
        key="timezone",
        step="timezone",
        prompt=f"Timezone [{default}] ('help' lists them)",
        parse=parse_timezone,
        default=default,
        help=timezone_help,
    )


REPLAY_KEYS = (
    PASSWORD.key,
    ACCEPT_LICENSE.key,
    "timezone",
    NTP_SERVER.key,
    SSH_INTRUSION_PREVENTION.key,
    LICENSE_KEY.key,
    REGISTER_SD.key,
    SD_ADDRESS.key,
    SD_REGISTRATION_KEY.key,
    SD_CERT.key,
)
