"""The wizard's result: every answer, validated and typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ADMIN_USER = "admin"


@dataclass(frozen=True)
class Answers:
    password: str = field(repr=False)  # never in a repr, a log line or a traceback
    timezone: str
    ntp_server: str | None  # None: the system's default time servers
    ssh_intrusion_prevention: bool
    licence_key: Path | None  # None: Community Edition
    accept_license: bool = True  # the wizard only gets this far once it was accepted
    user: str = ADMIN_USER
    # Services Director registration (instead of a licence key): host:port, the
    # registration key (sent as registration_policy) and its certificate's PEM body.
    sd_address: str | None = None
    sd_registration_key: str | None = None
    sd_cert: str | None = field(default=None, repr=False)
