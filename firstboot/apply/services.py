"""Settings that become system services: the NTP server and SSH intrusion prevention.

The root slots are read-only, so the image points the services at files on
the data partition (``lockgate.image.build.configure``):

* ``/etc/systemd/timesyncd.conf.d/lockgate.conf`` is a link to
  ``os/timesyncd.conf`` on the data partition (readable by the
  ``systemd-timesync`` user, unlike ``config/``): ``[Time]`` with
  ``NTP=<server>``, or nothing (Debian's default pool) when no server was
  chosen.
* ``sshguard.service`` (Debian's sshguard, nftables backend) runs unless
  ``config/no-ssh-intrusion-prevention`` exists (a drop-in's
  ``ConditionPathExists=!``).

The wizard records its choices in ``config/time.json`` and
``config/security.json`` and puts them into effect at once with the two
functions below; first boot applies the records again at every boot
(:func:`apply_recorded`). On the running appliance (``root`` is ``/``) a
service whose file changed is restarted so the choice takes effect at once;
elsewhere only the files change.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lockgate.files import atomic_write
from lockgate.paths import StatePaths

TIMESYNCD_FILE = "os/timesyncd.conf"  # under the state folder
NO_SSHGUARD_FILE = "no-ssh-intrusion-prevention"  # in the config folder
_SERVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}")


def timesyncd_text(server: str | None) -> str:
    head = "# Written by lockgate (the initial-configuration wizard's NTP server).\n[Time]\n"
    if not server:
        return head + "# no server chosen: Debian's default pool\n"
    if not _SERVER.fullmatch(server):
        raise ValueError(f"NTP server {server!r}: give a host name or an IP address")
    return head + f"NTP={server}\n"


def set_ntp_server(root: Path, server: str | None) -> Path:
    """Write the timesyncd drop-in's target and, when it changed, restart timesyncd on a
    live system."""
    path = StatePaths.under_root(root).base / TIMESYNCD_FILE
    text = timesyncd_text(server)
    try:
        unchanged = path.read_text() == text
    except (OSError, ValueError):
        unchanged = False
    if not unchanged:
        atomic_write(path, text.encode(), 0o644, dir_mode=0o755)
        _restart(root, "systemd-timesyncd.service")
    return path


def set_ssh_intrusion_prevention(root: Path, enabled: bool) -> None:
    marker = StatePaths.under_root(root).config / NO_SSHGUARD_FILE
    if enabled != marker.exists():
        return
    if enabled:
        marker.unlink(missing_ok=True)
    else:
        atomic_write(marker, b"# sshguard is off: chosen in the initial configuration\n",
                     0o644)
    _restart(root, "sshguard.service")


def apply_recorded(root: Path) -> list[str]:
    """Every boot: what the wizard recorded (``config/time.json`` ``ntp_server``,
    ``config/security.json`` ``ssh_intrusion_prevention``) put into effect. Returns
    problems for the status warnings; a missing record changes nothing."""
    config = StatePaths.under_root(root).config
    problems: list[str] = []
    for name, key in (("time.json", "ntp_server"),
                      ("security.json", "ssh_intrusion_prevention")):
        try:
            record = json.loads((config / name).read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{config / name}: unreadable ({exc}); run z-initial-config")
            continue
        if not isinstance(record, dict) or key not in record:
            continue
        try:
            if key == "ntp_server":
                value = record[key]
                set_ntp_server(root, str(value) if value else None)
            else:
                set_ssh_intrusion_prevention(root, bool(record[key]))
        except (OSError, ValueError) as exc:
            problems.append(f"{key}: {exc}")
    return problems


def _restart(root: Path, unit: str) -> None:
    """``systemctl restart`` on the live system (the unit's conditions decide whether it
    then runs); nothing for another tree or where systemd is not running."""
    if root.resolve() != Path("/") or not Path("/run/systemd/system").is_dir():
        return
    from lockgate.proc import run

    run(["systemctl", "restart", unit], capture=True, quiet=True, timeout=60, check=False)
