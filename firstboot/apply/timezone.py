"""The time zone.

The root slots are read-only at run time, so the image links
``/etc/localtime -> /var/lib/lockgate/config/localtime`` and
``/etc/timezone -> /var/lib/lockgate/config/timezone``; this step then only
changes the data partition: ``config/localtime`` becomes a symlink to
``/usr/share/zoneinfo/<tz>`` and ``config/timezone`` holds the name.
On a writable root whose ``/etc/localtime`` is not such a link (a plain
Debian tree, a test tree) ``/etc/localtime`` and ``/etc/timezone`` are
written directly as well, the way Debian's tzdata does.
"""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path

from lockgate.files import atomic_symlink, atomic_write, make_dirs
from lockgate.firstboot.apply.base import ApplyContext, Outcome, StepResult
from lockgate.firstboot.settings import Settings
from lockgate.paths import STATE_DIR, StatePaths

NAME = "timezone"
ZONEINFO = Path("/usr/share/zoneinfo")


def validate_timezone(tz: str) -> None:
    if not tz or tz.startswith("/") or ".." in tz.split("/"):
        raise ValueError(f"timezone {tz!r}: not an IANA time zone name such as Europe/London")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"timezone {tz!r}: unknown time zone; use an IANA name such as "
                         "Europe/London") from exc


def _links_into_data(link: Path, data_file: Path) -> bool:
    return link.is_symlink() and os.readlink(link) == str(data_file)


def set_timezone(root: Path, tz: str) -> None:
    """Make ``tz`` the appliance's time zone (see the module doc for which files change)."""
    validate_timezone(tz)
    config = StatePaths.under_root(root).config
    make_dirs(config, 0o700)
    atomic_write(config / "timezone", f"{tz}\n".encode(), 0o644)
    atomic_symlink(str(ZONEINFO / tz), config / "localtime")
    # The links the image makes are absolute paths on the appliance, not under ``root``.
    on_appliance = STATE_DIR / "config"
    etc = root / "etc"
    localtime, timezone = etc / "localtime", etc / "timezone"
    if _links_into_data(localtime, on_appliance / "localtime"):
        if not (timezone.exists() or timezone.is_symlink()):
            raise OSError(f"{timezone} is missing; the image should link it to "
                          f"{on_appliance / 'timezone'}")
        return
    make_dirs(etc, 0o755)
    atomic_symlink(str(ZONEINFO / tz), localtime)
    if not _links_into_data(timezone, on_appliance / "timezone"):
        atomic_write(timezone, f"{tz}\n".encode(), 0o644, dir_mode=0o755)


def apply_timezone(ctx: ApplyContext, settings: Settings) -> StepResult:
    set_timezone(ctx.root, settings.timezone)
    return StepResult(NAME, Outcome.OK, f"time zone set to {settings.timezone}")
