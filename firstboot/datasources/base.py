"""What every datasource provides, and how one is chosen.

A datasource is one small class per platform with the same steps (see
cloud-init's sources): ``detect()`` is cheap and local (DMI/platform strings,
a labelled volume; never the network), ``fetch()`` reads metadata and
user-data over the network or from media, and the result carries the instance
id that keys "once per instance". ``finish(ok, reason)`` tells the platform
how first boot ended, for the platforms that want to know (Azure); the others
inherit :class:`NothingToReport`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class InstanceData:
    platform: str  # "ec2", "gce", "azure", "nocloud", "file"
    instance_id: str
    user_data: bytes | None  # None: the platform has no user-data for us
    metadata: dict[str, str] = field(default_factory=dict)  # region, hostname, local-ipv4 ...
    # OpenSSH public keys the platform gives the appliance's admin, one key a line each.
    public_keys: tuple[str, ...] = ()


class DatasourceError(Exception):
    """The platform was found but could not be read (clear, one-line message)."""


class Datasource(Protocol):
    name: ClassVar[str]

    def detect(self) -> bool: ...

    def fetch(self, timeout: float = 60.0) -> InstanceData:
        """Read instance id and user-data; give up after ``timeout`` seconds overall."""
        ...

    def finish(self, ok: bool, reason: str | None = None, timeout: float = 60.0) -> str | None:
        """Tell the platform first boot ended (``ok``) or failed (``reason``, no secrets).

        Called after every boot that could fetch; returns a one-line problem for the
        status warnings when telling failed, else None. Never raises.
        """
        ...


class NothingToReport:
    """``finish()`` for platforms that do not wait for the guest to report."""

    def finish(self, ok: bool, reason: str | None = None, timeout: float = 60.0) -> str | None:
        return None


# --- shared helpers for the sources -------------------------------------------------

SYSFS = Path("/sys")
DEV = Path("/dev")


def read_dmi(sysfs_root: Path, key: str) -> str:
    """One DMI string (``sys_vendor``, ``product_name`` ...), "" when absent or unreadable.

    ``product_uuid`` and the serials are root-only; a non-root caller simply
    sees "" and detection falls back to the world-readable strings.
    """
    try:
        return (sysfs_root / "class/dmi/id" / key).read_text(errors="replace").strip()
    except OSError:
        return ""


class Deadline:
    """An overall time budget shared by the several requests one fetch makes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


def key_lines(text: str) -> list[str]:
    """The non-empty, non-comment lines of a block of public keys."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def user_data_from(status: int, reason: str, body: bytes, what: str) -> bytes | None:
    """A metadata service's user-data answer: 404 means "none given", 200 the data."""
    if status == 404:
        return None
    if status == 200:
        return body
    raise DatasourceError(f"{what} user-data answered {status} {reason}")
