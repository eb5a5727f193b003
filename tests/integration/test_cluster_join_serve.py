"""Joining and replication between real ``lockgate runtime serve`` processes on loopback
(the same code as the network-namespace tests, without needing root)."""

from __future__ import annotations

import hashlib
import json
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import Member, wait_for
from test_runtime_support import free_port

from lockgate.paths import StatePaths
from lockgate.runtime.cluster.state import load_cluster


def make(tmp_path: Path, name: str) -> Member:
    return Member(name, tmp_path / name / "state", rest_port=free_port(),
                  admin_port=free_port(), control_port=free_port())


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Member, Member]]:
    a, b = make(tmp_path, "tm1"), make(tmp_path, "tm2")
    try:
        yield a.start(), b.start()
    finally:
        a.stop()
        b.stop()


def test_join_pins_replicates_both_ways_and_answers_stale_writes_409(
        pair: tuple[Member, Member]) -> None:
    a, b = pair
    assert a.put_pool("before", "10.9.0.1:80") == 201
    done = b.join(a, a.fingerprint.lower().replace(":", ""), "--location", "rack-2")
    assert done.returncode == 0, done.stderr
    assert "joined the cluster as tm2: members tm1, tm2" in done.stdout
    assert b.pool_nodes("before") == ["10.9.0.1:80"]  # the cluster's configuration came along
    on_a, on_b = load_cluster(a.state_dir), load_cluster(b.state_dir)
    assert on_a is not None and on_b is not None
    assert on_a.secret == on_b.secret and len(on_a.secret) == 32
    assert {m.name for m in on_a.members} == {"tm1", "tm2"} and on_a.epoch == 2
    assert on_a.member("tm2").location == "rack-2"  # type: ignore[union-attr]
    assert on_a.member("tm2").fingerprint == b.fingerprint  # type: ignore[union-attr]
    assert stat.S_IMODE((a.state_dir / "runtime" / "cluster.json").stat().st_mode) == 0o600
    assert "secret" not in json.dumps(a.cluster())

    assert a.put_pool("web", "10.9.0.2:80") == 201
    wait_for(lambda: b.pool_nodes("web") == ["10.9.0.2:80"], 5)
    assert b.put_pool("web", "10.9.0.3:80") == 200  # and back the other way
    wait_for(lambda: a.pool_nodes("web") == ["10.9.0.3:80"], 5)

    status, heads, _ = a.request("GET", "/api/tm/1.0/config/active/pools/web")
    etag = heads["etag"]
    assert a.put_pool("web", "10.9.0.4:80", headers={"If-Match": etag}) == 200
    assert a.put_pool("web", "10.9.0.5:80", headers={"If-Match": etag}) == 409  # stale
    status, _, _ = a.request("DELETE", "/api/tm/1.0/config/active/pools/web",
                             headers={"If-Match": etag})
    assert status == 409
    wait_for(lambda: b.pool_nodes("web") == ["10.9.0.4:80"], 5)


def test_wrong_fingerprint_is_refused_showing_both_sha256_and_unsafe_work(
        pair: tuple[Member, Member]) -> None:
    a, b = pair
    wrong = "AB:" * 19 + "CD"
    refused = b.join(a, wrong)
    assert refused.returncode != 0
    assert a.fingerprint in refused.stderr and wrong in refused.stderr, refused.stderr
    assert load_cluster(b.state_dir) is None and load_cluster(a.state_dir) is None

    bad = b.join(a, "sha256:" + "00" * 32)
    assert bad.returncode != 0 and "sha256:" + "00" * 32 in bad.stderr
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    pem = (a.state_dir / "tls" / "admin.crt").read_text()
    right = "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    assert right[7:] in bad.stderr  # both values shown
    assert b.join(a, "nope").returncode == 2  # not a fingerprint: a usage error

    wrong_pw = b.join(a, right, password="not it")
    assert wrong_pw.returncode != 0 and "wrong user name or password" in wrong_pw.stderr

    done = b.join(a, "unsafe")
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stderr and "unsafe" in done.stderr
    record = json.loads(StatePaths(b.state_dir).cluster_join.read_text())
    assert record["unsafe"] is True and record["status"] == "joined"


def test_down_member_catches_up_and_removed_member_stops_receiving(
        pair: tuple[Member, Member]) -> None:
    a, b = pair
    assert b.join(a, a.fingerprint).returncode == 0
    assert a.put_pool("p1", "10.9.1.1:80") == 201
    wait_for(lambda: b.pool_nodes("p1") == ["10.9.1.1:80"], 5)
    b.stop()
    assert a.put_pool("p2", "10.9.1.2:80") == 201
    b.start()
    wait_for(lambda: b.pool_nodes("p2") == ["10.9.1.2:80"], 10)

    status, _, _ = a.request("DELETE", "/api/tm/1.0/cluster/members/tm2")
    assert status == 204
    assert a.put_pool("p3", "10.9.1.3:80") == 201
    assert a.put_pool("p4", "10.9.1.4:80") == 201
    with pytest.raises(AssertionError):
        wait_for(lambda: b.pool_nodes("p4") is not None, 1.5)


def test_first_boot_join_is_retried_until_the_member_answers(tmp_path: Path) -> None:
    """First boot recorded a join of a member that is not up yet: the runtime keeps
    trying with backoff (serving meanwhile), joins once it answers and deletes the
    password file."""
    a, b = make(tmp_path, "tm1"), make(tmp_path, "tm2")
    a_fp = _fingerprint_of(a)
    paths = StatePaths(b.state_dir)
    paths.cluster_join.write_text(json.dumps({
        "host": a.address, "port": a.admin_port, "user": "admin", "fingerprint": a_fp,
        "location": None, "join_tips": False, "status": "pending",
        "password": "admin-password"}))
    secret = paths.config / "cluster-join.password"
    secret.write_text("correct horse battery")
    try:
        b.start()  # serves although the member is down
        wait_for(lambda: json.loads(paths.cluster_join.read_text()).get("attempts", 0) >= 1, 15)
        assert json.loads(paths.cluster_join.read_text())["status"] == "retrying"
        assert secret.exists()
        a.start()
        wait_for(lambda: json.loads(paths.cluster_join.read_text())["status"] == "joined", 20)
        wait_for(lambda: not secret.exists(), 2)  # deleted right after the record says joined
        assert a.put_pool("after", "10.9.2.1:80") == 201
        wait_for(lambda: b.pool_nodes("after") == ["10.9.2.1:80"], 5)
        assert "correct horse battery" not in "".join(b.stderr)
    finally:
        a.stop()
        b.stop()


def _fingerprint_of(member: Member) -> str:
    """The member's certificate, made before it starts (as an operator reads it off the
    console)."""
    from lockgate.runtime.tls import ensure_certificate

    return ensure_certificate(member.state_dir).fingerprint
