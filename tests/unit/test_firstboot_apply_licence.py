"""The licence step: acceptance recorded with time and edition (Community: 10 Mb/s, 4 nodes)."""

from __future__ import annotations

import json
import stat
from datetime import datetime
from pathlib import Path

import pytest

from lockgate.firstboot.apply.base import ApplyContext, Outcome
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.apply.licence import accept_licence, apply_licence, licence_accepted
from lockgate.firstboot.settings import Settings
from lockgate.paths import StatePaths


def ctx(root: Path) -> ApplyContext:
    return ApplyContext(root, Console(str(root / "console")))


def test_accept_records_time_and_community_edition(tmp_path: Path) -> None:
    assert not licence_accepted(tmp_path)
    accept_licence(tmp_path, True)
    path = StatePaths.under_root(tmp_path).licence
    record = json.loads(path.read_text())
    assert record["accepted"] is True
    assert record["edition"] == "community"
    assert record["limits"] == {"bandwidth_mbit_s": 10, "max_cluster_size": 4}
    assert datetime.fromisoformat(record["accepted_at"]).tzinfo is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert licence_accepted(tmp_path)


def test_decline_is_recorded_and_not_accepted(tmp_path: Path) -> None:
    accept_licence(tmp_path, False)
    assert not licence_accepted(tmp_path)
    assert json.loads(StatePaths.under_root(tmp_path).licence.read_text())["accepted_at"] is None


def test_unknown_edition_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="edition"):
        accept_licence(tmp_path, True, edition="platinum")


@pytest.mark.parametrize(("given", "outcome", "accepted"), [
    (True, Outcome.OK, True),
    (False, Outcome.WARNING, False),
    (None, Outcome.SKIPPED, False),
])
def test_apply_follows_user_data(tmp_path: Path, given: bool | None, outcome: Outcome,
                                 accepted: bool) -> None:
    result = apply_licence(ctx(tmp_path), Settings(accept_license=given))
    assert result.result is outcome
    assert licence_accepted(tmp_path) is accepted


def test_earlier_acceptance_survives_user_data_without_the_key(tmp_path: Path) -> None:
    accept_licence(tmp_path, True)
    result = apply_licence(ctx(tmp_path), Settings())
    assert result.result is Outcome.SKIPPED
    assert licence_accepted(tmp_path)


@pytest.mark.parametrize("damage", [b'{"accepted": tr', b"\xff\xfe", b""])
def test_damaged_licence_file_is_not_accepted_and_no_crash(tmp_path: Path, damage: bytes) -> None:
    """First boot asks licence_accepted() on every boot: a damaged file must not crash it;
    the wizard (or user-data on a new instance) accepts again and rewrites the file."""
    path = StatePaths.under_root(tmp_path).licence
    path.parent.mkdir(parents=True)
    path.write_bytes(damage)
    from lockgate.firstboot.service import current_state

    with pytest.raises(ValueError):  # the wizard warns and rewrites it (test_wizard_flow)
        licence_accepted(tmp_path)
    assert current_state(tmp_path) == ("needs-initial-configuration",
                                       ["password", "accept_license"])
    accept_licence(tmp_path, True)
    assert licence_accepted(tmp_path) is True
