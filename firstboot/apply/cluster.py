"""Joining an existing cluster (``cluster_host`` in user-data).

First boot runs before the traffic manager starts, so the usual outcome is a
*pending* join recorded in ``StatePaths.cluster_join`` (JSON, mode 0600) that
the runtime carries out when it starts. The record never holds a password:
the join authenticates as ``user`` with the admin password first boot just
stored, and the record says so (``"password": "admin-password"``).

The runtime's hook ``lockgate.runtime.cluster.join(root, intent, password)``
keeps the password the join needs in a root-only file (0600) on the data
partition until the runtime's join succeeds, then the runtime deletes it; the
runtime retries a failing join with backoff without ever blocking the boot,
and writes each attempt's outcome into the record (``status``, ``attempts``,
``last_error``), shown by :func:`join_status_line`. See docs/cluster.md.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockgate.files import atomic_write
from lockgate.firstboot.apply.base import ApplyContext, Outcome, StepResult
from lockgate.firstboot.settings import DEFAULT_CLUSTER_PORT, Settings
from lockgate.paths import StatePaths

NAME = "cluster"
PASSWORD_SOURCE = "admin-password"  # the join uses the admin password, never stored here
log = logging.getLogger("lockgate.firstboot")


@dataclass(frozen=True)
class JoinIntent:
    host: str
    port: int
    user: str
    fingerprint: str  # "AA:BB:..." or "unsafe"
    location: str | None
    join_tips: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> JoinIntent | None:
        if settings.cluster_host is None:
            return None
        if settings.cluster_fingerprint is None:
            raise ValueError("cluster_fingerprint: required with cluster_host")
        return cls(host=settings.cluster_host,
                   port=settings.cluster_port or DEFAULT_CLUSTER_PORT,
                   user=settings.user,
                   fingerprint=settings.cluster_fingerprint,
                   location=settings.cluster_location,
                   join_tips=settings.join_tips)


def record_pending_join(root: Path, intent: JoinIntent) -> None:
    record: dict[str, Any] = asdict(intent)
    record.update(status="pending", password=PASSWORD_SOURCE,
                  requested_at=datetime.now(UTC).isoformat(timespec="seconds"))
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(StatePaths.under_root(root).cluster_join, text.encode(), 0o600)


def pending_join(root: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(StatePaths.under_root(root).cluster_join.read_text())
    except FileNotFoundError:
        return None
    return record


def _runtime_join() -> Any:
    """The runtime's join function, or None while the runtime has none."""
    try:
        module = importlib.import_module("lockgate.runtime.cluster")
    except ModuleNotFoundError as exc:
        if exc.name not in ("lockgate.runtime.cluster", "lockgate.runtime"):
            raise  # a broken runtime module is a bug to show, not a missing feature
        return None
    return getattr(module, "join", None)


def join_status_line(root: Path) -> str | None:
    """One line on the cluster join for ``lockgate firstboot status``, or None."""
    record = pending_join(root)
    if record is None:
        return None
    line = f"cluster join of {record.get('host')}:{record.get('port')}: {record.get('status')}"
    if record.get("attempts"):
        line += f" after {record['attempts']} attempt(s)"
    if record.get("last_error"):
        line += f"; last error: {record['last_error']}"
    if record.get("fingerprint") == "unsafe":
        line += "; WARNING: the member's certificate is not checked (fingerprint 'unsafe')"
    return line


def apply_cluster(ctx: ApplyContext, settings: Settings) -> StepResult:
    intent = JoinIntent.from_settings(settings)
    if intent is None:
        return StepResult(NAME, Outcome.SKIPPED, "no cluster_host in user-data")
    where = f"{intent.host}:{intent.port}"
    if intent.fingerprint == "unsafe":
        log.warning("cluster join with %s: cluster_fingerprint=unsafe, the member's "
                    "certificate will NOT be checked", where)
    record_pending_join(ctx.root, intent)
    join = _runtime_join()
    if settings.password is None:
        return StepResult(NAME, Outcome.OK, f"join of {where} recorded for the runtime; no "
                          "password in user-data, so the join waits for the admin password "
                          "to be set")
    if join is None:
        return StepResult(NAME, Outcome.OK, f"join of {where} recorded for the runtime")
    join(ctx.root, intent, settings.password)  # keeps the password (0600) for the runtime
    return StepResult(NAME, Outcome.OK, f"join of {where} recorded: the runtime joins when it "
                      "starts and retries with backoff (lockgate runtime cluster)")
