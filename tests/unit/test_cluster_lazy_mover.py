"""A cloud IP mover is made on first use: a runtime that never moves an IP starts even
when the cloud's metadata or SDK is missing (the EC2 boot crash-looped on it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.runtime.cluster import tipgroups
from lockgate.runtime.cluster.movers import MoverError
from lockgate.runtime.cluster.movers.local import LocalMover


def _no_sdk(platform: str | None) -> LocalMover:
    raise ModuleNotFoundError("No module named 'boto3'")


def test_service_starts_without_making_the_mover_and_a_move_reports_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_IP_MOVER", "ec2")
    monkeypatch.setattr(tipgroups, "choose", _no_sdk)
    service = tipgroups.FaultToleranceService(tmp_path)  # no metadata lookup here
    assert service.platform == "ec2"
    assert tipgroups.cleanup_leftovers(tmp_path, service.mover) == []  # nothing left: no mover
    with pytest.raises(MoverError, match="cannot set up the ec2 IP mover: "
                                         "ModuleNotFoundError: No module named 'boto3'"):
        service.mover.raise_ip("10.0.0.9")
    service.mover.prepare(["10.0.0.9"])  # logged, not raised: the move reports it


def test_the_real_mover_is_made_once_and_used(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str | None] = []

    def choose(platform: str | None) -> LocalMover:
        made.append(platform)
        return LocalMover()

    monkeypatch.setattr(tipgroups, "choose", choose)
    lazy = tipgroups.LazyMover(None)
    assert made == []
    lazy.prepare([])
    lazy.prepare([])
    assert made == [None]
