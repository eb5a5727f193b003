"""The typed settings that user-data turns into.

Parsed once at the edge (``lockgate.firstboot.userdata.parse``) and handed to
every apply step; nothing downstream looks at raw ``key=value`` text. The JSON
form (:meth:`Settings.to_json`) is the contract in ARCHITECTURE.md: exactly
these keys, these types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

REDACTED = "<redacted>"
DEFAULT_TIMEZONE = "America/Los_Angeles"
DEFAULT_USER = "admin"
DEFAULT_CLUSTER_PORT = 9090
SECRET_KEYS = frozenset({"password", "owner_secret"})
# Unknown keys are echoed in JSON; a value under a name like these is kept out.
_SECRET_LOOKING = re.compile(r"pass|secret|token|key|pwd|cred|auth|private", re.IGNORECASE)


def looks_secret(key: str) -> bool:
    """Whether a user-data key's value must stay out of output (known or unknown key)."""
    return key in SECRET_KEYS or bool(_SECRET_LOOKING.search(key))


@dataclass(frozen=True)
class CfnSettings:
    stack: str
    resource: str
    region: str


@dataclass(frozen=True)
class Settings:
    password: str | None = None
    accept_license: bool | None = None
    timezone: str = DEFAULT_TIMEZONE
    user: str = DEFAULT_USER
    cluster_host: str | None = None
    cluster_port: int | None = None
    cluster_fingerprint: str | None = None  # "AA:BB:..." (59 chars) or "unsafe"
    cluster_location: str | None = None
    join_tips: bool = False
    sd_address: str | None = None  # "host:port"
    sd_cert: str | None = None  # PEM body, no header lines or newlines
    registration_policy: str | None = None
    owner: str | None = None
    owner_secret: str | None = None
    cfn: CfnSettings | None = None
    unknown: dict[str, str] = field(default_factory=dict)

    def to_json(self, show_secrets: bool = False) -> dict[str, Any]:
        """The contract's JSON object, key order as in ARCHITECTURE.md.

        Without ``show_secrets`` the secrets, and unknown keys whose names
        look secret (``api_token``, ``db_password``), read ``"<redacted>"``.
        """

        def secret(value: str | None) -> str | None:
            if value is None or show_secrets:
                return value
            return REDACTED

        return {
            "password": secret(self.password),
            "accept_license": self.accept_license,
            "timezone": self.timezone,
            "user": self.user,
            "cluster_host": self.cluster_host,
            "cluster_port": self.cluster_port,
            "cluster_fingerprint": self.cluster_fingerprint,
            "cluster_location": self.cluster_location,
            "join_tips": self.join_tips,
            "sd_address": self.sd_address,
            "sd_cert": self.sd_cert,
            "registration_policy": self.registration_policy,
            "owner": self.owner,
            "owner_secret": secret(self.owner_secret),
            "cfn": None
            if self.cfn is None
            else {"stack": self.cfn.stack, "resource": self.cfn.resource, "region": self.cfn.region},
            "unknown": {
                key: value if show_secrets or not looks_secret(key) else REDACTED
                for key, value in self.unknown.items()
            },
        }

    @property
    def configured(self) -> bool:
        """True when user-data alone finishes initial configuration."""
        return self.password is not None and self.accept_license is True
