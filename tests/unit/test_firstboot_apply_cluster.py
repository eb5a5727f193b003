"""The cluster step: a pending join record (0600) without any password in it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from lockgate.firstboot.apply.base import ApplyContext, Outcome
from lockgate.firstboot.apply.cluster import JoinIntent, apply_cluster, pending_join
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.settings import Settings
from lockgate.paths import StatePaths

FP = "FB:1F:9F:5C:FC:CF:58:83:5C:99:4F:00:0B:B5:3A:20:E7:3D:8E:7D"


def ctx(root: Path) -> ApplyContext:
    return ApplyContext(root, Console(str(root / "console")))


def test_no_cluster_host_skips(tmp_path: Path) -> None:
    assert apply_cluster(ctx(tmp_path), Settings()).result is Outcome.SKIPPED
    assert pending_join(tmp_path) is None


def test_join_is_recorded_as_pending_without_the_password(tmp_path: Path) -> None:
    settings = Settings(password="Cluster-Pw-123", accept_license=True, user="ops",
                        cluster_host="ip-10-0-1-65", cluster_port=9090,
                        cluster_fingerprint=FP, cluster_location="eu-west", join_tips=True)
    result = apply_cluster(ctx(tmp_path), settings)
    assert result.result is Outcome.OK, result.message
    path = StatePaths.under_root(tmp_path).cluster_join
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"Cluster-Pw-123" not in path.read_bytes()
    record = json.loads(path.read_text())
    assert record == {
        "host": "ip-10-0-1-65", "port": 9090, "user": "ops", "fingerprint": FP,
        "location": "eu-west", "join_tips": True, "status": "pending",
        "password": "admin-password", "requested_at": record["requested_at"],
    }


def test_unsafe_fingerprint_and_default_port(tmp_path: Path) -> None:
    settings = Settings(cluster_host="peer.example", cluster_fingerprint="unsafe")
    result = apply_cluster(ctx(tmp_path), settings)
    assert "no password" in result.message  # the join waits for the wizard's password
    record = pending_join(tmp_path)
    assert record is not None
    assert (record["port"], record["fingerprint"], record["join_tips"]) == (9090, "unsafe", False)


def test_cluster_host_without_fingerprint_is_refused() -> None:
    with pytest.raises(ValueError, match="cluster_fingerprint"):
        JoinIntent.from_settings(Settings(cluster_host="peer"))
