"""The member's side of a join (licence limit, join_tips, location, names), pins, and
first boot's password file -- without a network."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lockgate.firstboot.apply.base import ApplyContext, Outcome
from lockgate.firstboot.apply.cluster import apply_cluster, join_status_line
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.settings import Settings
from lockgate.paths import StatePaths
from lockgate.runtime.cluster.joining import JoinRefused, JoinService, parse_pin, password_path
from lockgate.runtime.cluster.state import load_cluster
from lockgate.runtime.config.store import ConfigStore
from lockgate.runtime.licence import DEV_ENV, key_file, sign_licence

FP = "FB:1F:9F:5C:FC:CF:58:83:5C:99:4F:00:0B:B5:3A:20:E7:3D:8E:7D"


def service(state_dir: Path) -> JoinService:
    return JoinService(state_dir, "tm1", 9090, 9080, FP)


def request(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "fingerprint": f"{name}-fp", "member_address": "10.0.0.1", **extra}


def tip_group(store: ConfigStore, name: str, machines: list[str]) -> None:
    store.put("traffic_ip_groups", name, {"properties": {"basic": {
        "ipaddresses": ["10.0.9.1"], "machines": machines}}})


def test_first_join_makes_a_cluster_of_two_with_location(tmp_path: Path) -> None:
    answer = service(tmp_path).accept(request("tm2", location="rack-2"), "10.0.0.2")
    state = load_cluster(tmp_path)
    assert state is not None and state.epoch == 2
    assert [(m.name, m.address) for m in state.members] == [("tm1", "10.0.0.1"),
                                                           ("tm2", "10.0.0.2")]
    assert state.member("tm2").location == "rack-2"  # type: ignore[union-attr]
    assert answer["cluster"]["secret"] == state.secret.hex()
    assert answer["config"]["version"] == 0 and "pools" in answer["config"]["tree"]


@pytest.fixture
def issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ed25519PrivateKey:
    """A trusted licence issuer, and no development licence (the suite sets one)."""
    monkeypatch.delenv(DEV_ENV, raising=False)
    keys = tmp_path / "keys"
    keys.mkdir()
    key = Ed25519PrivateKey.generate()
    (keys / "issuer.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("LOCKGATE_LICENCE_KEYS_DIR", str(keys))
    return key


def test_fifth_member_is_refused_naming_the_community_limit(
        tmp_path: Path, issuer: Ed25519PrivateKey) -> None:
    svc = service(tmp_path)
    for name in ("tm2", "tm3", "tm4"):
        svc.accept(request(name), "10.0.0.9")
    with pytest.raises(JoinRefused, match="Community Edition allows at most 4") as info:
        svc.accept(request("tm5"), "10.0.0.9")
    assert info.value.status == 403
    svc.accept(request("tm4"), "10.0.0.8")  # a member joining again is not a fifth
    state = load_cluster(tmp_path)
    assert state is not None and len(state.members) == 4


def test_a_licence_key_with_a_larger_limit_is_honoured(
        tmp_path: Path, issuer: Ed25519PrivateKey) -> None:
    key_file(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    key_file(tmp_path).write_bytes(sign_licence(issuer, {
        "serial": "L-1", "licensee": "Test", "bandwidth_mbit_s": 0, "max_cluster_size": 5,
        "expires": None}))
    svc = service(tmp_path)
    for name in ("tm2", "tm3", "tm4", "tm5"):
        svc.accept(request(name), "10.0.0.9")
    with pytest.raises(JoinRefused, match="the licence allows at most 5"):
        svc.accept(request("tm6"), "10.0.0.9")


def test_same_name_with_another_certificate_is_refused(tmp_path: Path) -> None:
    svc = service(tmp_path)
    svc.accept(request("tm2"), "10.0.0.2")
    with pytest.raises(JoinRefused, match="already in the cluster"):
        svc.accept({**request("tm2"), "fingerprint": "other"}, "10.0.0.3")


def test_join_tips_with_one_group_adds_the_member(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    tip_group(store, "web", ["tm1"])
    answer = service(tmp_path).accept(request("tm2", join_tips=True), "10.0.0.2")
    assert answer["notes"] == ["join_tips: added to traffic IP group web"]
    machines = store.get("traffic_ip_groups", "web")["properties"]["basic"]["machines"]
    assert machines == ["tm1", "tm2"]
    assert answer["config"]["tree"]["traffic_ip_groups"]["web"]["properties"]["basic"][
        "machines"] == ["tm1", "tm2"]


def test_join_tips_with_several_groups_joins_none_and_says_so(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    tip_group(store, "a", ["tm1"])
    tip_group(store, "b", ["tm1"])
    answer = service(tmp_path).accept(request("tm2", join_tips=True), "10.0.0.2")
    assert "not added to any traffic IP group: there are 2 (a, b)" in answer["notes"][0]
    assert store.get("traffic_ip_groups", "a")["properties"]["basic"]["machines"] == ["tm1"]


def test_pins_are_normalised_and_checked() -> None:
    assert parse_pin(FP.lower().replace(":", "")) == FP
    assert parse_pin("UNSAFE") == "unsafe"
    assert parse_pin("sha256:" + "AB" * 32) == "sha256:" + "ab" * 32
    for bad in ("sha256:abc", "zz", FP[:-3]):
        with pytest.raises(ValueError):
            parse_pin(bad)


def test_first_boot_keeps_the_password_0600_for_the_runtime(tmp_path: Path) -> None:
    settings = Settings(password="Cluster-Pw-123", cluster_host="10.0.0.1", cluster_port=9090,
                        cluster_fingerprint="unsafe")
    result = apply_cluster(ApplyContext(tmp_path, Console(str(tmp_path / "console"))), settings)
    assert result.result is Outcome.OK and "retries with backoff" in result.message
    stored = password_path(StatePaths.under_root(tmp_path).base)
    assert stored.read_text() == "Cluster-Pw-123"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert b"Cluster-Pw-123" not in StatePaths.under_root(tmp_path).cluster_join.read_bytes()
    line = join_status_line(tmp_path)
    assert line is not None and "pending" in line and "WARNING" in line
