"""Licence acceptance (``StatePaths.licence``, JSON, mode 0644: nothing secret).

Without a licence key the traffic manager runs as the Community Edition,
limited (as in the reference product) to 10 Mb/s of throughput and
clusters of 4 traffic managers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockgate.files import atomic_write
from lockgate.firstboot.apply.base import ApplyContext, Outcome, StepResult
from lockgate.firstboot.settings import Settings
from lockgate.paths import StatePaths

NAME = "licence"
EDITIONS: dict[str, dict[str, int]] = {
    "community": {"bandwidth_mbit_s": 10, "max_cluster_size": 4},
}


def accept_licence(root: Path, accepted: bool, edition: str = "community") -> None:
    """Record whether the licence agreement was accepted, when, and the edition in force."""
    if edition not in EDITIONS:
        raise ValueError(f"edition {edition!r}: unknown; choose one of {', '.join(EDITIONS)}")
    record: dict[str, Any] = {
        "accepted": accepted,
        "accepted_at": datetime.now(UTC).isoformat(timespec="seconds") if accepted else None,
        "edition": edition,
        "limits": EDITIONS[edition],
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(StatePaths.under_root(root).licence, text.encode(), 0o644)


def licence_accepted(root: Path) -> bool:
    try:
        record = json.loads(StatePaths.under_root(root).licence.read_text())
    except FileNotFoundError:
        return False
    return isinstance(record, dict) and record.get("accepted") is True


def apply_licence(ctx: ApplyContext, settings: Settings) -> StepResult:
    if settings.accept_license is True:
        accept_licence(ctx.root, True)
        return StepResult(NAME, Outcome.OK, "licence accepted in user-data (Community Edition: "
                          "10 Mb/s, up to 4 traffic managers)")
    if licence_accepted(ctx.root):
        return StepResult(NAME, Outcome.SKIPPED, "licence was accepted before")
    if settings.accept_license is False:
        accept_licence(ctx.root, False)
        return StepResult(NAME, Outcome.WARNING,
                          "user-data declined the licence; accept it in the initial-config wizard")
    return StepResult(NAME, Outcome.SKIPPED,
                      "accept_license not in user-data; accept it in the initial-config wizard")
