"""Cluster membership file: round trip, mode, stand-alone default, epoch."""

from __future__ import annotations

import stat
from pathlib import Path

from lockgate.runtime.cluster.state import (
    ClusterState,
    Member,
    cluster_path,
    ensure_cluster,
    load_cluster,
    save_cluster,
)


def test_stand_alone_has_no_cluster(tmp_path: Path) -> None:
    assert load_cluster(tmp_path) is None


def test_round_trip_is_0600_and_secret_hex(tmp_path: Path) -> None:
    me = Member("tm1", "10.0.0.1", fingerprint="AA:BB", location="east")
    state = ClusterState("tm1", b"\x01" * 32, (me, Member("tm2", "10.0.0.2")), 4)
    save_cluster(tmp_path, state)
    path = cluster_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "01" * 32 in path.read_text()
    assert load_cluster(tmp_path) == state
    assert "secret" not in repr(state) or "\\x01" not in repr(state)


def test_ensure_creates_a_cluster_of_one_once(tmp_path: Path) -> None:
    me = Member("tm1", "10.0.0.1")
    first = ensure_cluster(tmp_path, me)
    assert first.members == (me,) and first.epoch == 1 and len(first.secret) == 32
    assert ensure_cluster(tmp_path, Member("other", "x")) == first


def test_membership_changes_bump_epoch() -> None:
    state = ClusterState("tm1", b"k" * 32, (Member("tm1", "a"),), 1)
    grown = state.with_member(Member("tm2", "b"))
    assert [m.name for m in grown.members] == ["tm1", "tm2"] and grown.epoch == 2
    assert [m.name for m in grown.peers] == ["tm2"]
    assert grown.without_member("tm2").epoch == 3


def test_update_is_one_locked_read_modify_write(tmp_path: Path) -> None:
    from lockgate.runtime.cluster.state import update_cluster

    assert update_cluster(tmp_path, lambda current: None) is None  # nothing, nothing written
    assert load_cluster(tmp_path) is None
    me = Member("tm1", "a")
    made = update_cluster(tmp_path, lambda current: ClusterState("tm1", b"s" * 32, (me,), 1))
    grown = update_cluster(tmp_path, lambda current: current.with_member(Member("tm2", "b"))
                           if current else None)
    assert made is not None and grown is not None and grown.epoch == 2
    assert load_cluster(tmp_path) == grown
