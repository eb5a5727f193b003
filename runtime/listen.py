"""What a virtual server may listen on, on this host.

Shared by the REST API (which refuses what can never work here) and the
workers (which skip and report what cannot be opened now). The management
ports are the reference product's: REST 9070, cluster control 9080, Admin UI
9090, plus whatever ``serve`` was told to use instead.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
from collections.abc import Iterable
from pathlib import Path

from lockgate.files import atomic_write
from lockgate.runtime.status import run_folder

MANAGEMENT_PORTS = (9070, 9080, 9090)  # REST API, cluster control, Admin UI


def reserved_ports(*extra: int) -> tuple[int, ...]:
    """The management ports plus ``extra`` (0, "any free port", reserves nothing)."""
    return tuple(sorted({*MANAGEMENT_PORTS, *(p for p in extra if p)}))


def _reserved_file(state_dir: Path) -> Path:
    return run_folder(state_dir) / "reserved-ports.json"


def save_reserved_ports(state_dir: Path, ports: Iterable[int]) -> None:
    """Written by ``serve`` at start, so the REST API refuses the ports it really uses."""
    atomic_write(_reserved_file(state_dir), json.dumps(sorted(ports)).encode(), mode=0o644,
                 dir_mode=0o755)


def load_reserved_ports(state_dir: Path) -> tuple[int, ...]:
    """The management ports plus those the running ``serve`` saved (none saved: defaults)."""
    try:
        saved = json.loads(_reserved_file(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return MANAGEMENT_PORTS
    return reserved_ports(*(p for p in saved if isinstance(p, int) and not isinstance(p, bool)))


def ip_literal(host: str) -> str | None:
    """``host`` as a normalised IP address, or None for a host name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def is_wildcard(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified


def address_is_local(address: str) -> bool:
    """Whether this host has ``address`` (an IP literal) now, so a plain bind to it works.

    Asks the kernel the same question a listener's ``bind()`` asks: the answer
    honours ``net.ipv4.ip_nonlocal_bind`` and addresses added a moment ago."""
    if is_wildcard(address):
        return True
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
                return False
            raise
    return True


def traffic_ips(groups: Iterable[Iterable[str]]) -> set[str]:
    """Normalised addresses of traffic IP groups (raised on some cluster member)."""
    return {str(ipaddress.ip_address(a)) for group in groups for a in group}
