"""``lockgate runtime upgrade-cluster`` against three real ``serve`` members in network
namespaces (a client in a fourth runs the command), each with a fake A/B appliance as
its upgrade backend (tests/integration/fake_appliance_member.py).

Real: the members' serve processes (REST, cluster join and replication, heartbeats,
traffic IPs raised in their namespaces), the bundle (signed, verified by each member, its
root filesystem written into slot B of the member's disk-image file), GRUB's environment
and entries on each fake ESP, the command's pinned REST calls, its waits and rollbacks.
Not real: the reboot -- the member's serve stops in order and starts again as the
version GRUB's environment says would boot (no kernel, no VM); the trial boot is not
committed by a health check afterwards (nothing runs it here).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netns_support import skip_unless_root

from lockgate.benchmarks.cluster import NsMember, Topology, topology
from lockgate.benchmarks.servers import start_long_lived
from lockgate.runtime.system.keys import generate

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from test_system_upgrade import FS_SIZE, Appliance, make_bundle, run

MiB = 1024 * 1024
LAUNCHER = Path(__file__).with_name("fake_appliance_member.py")
VIPS = (100, 101, 102)


@dataclass
class FakeMember(NsMember):
    appliance: Appliance | None = None
    trusted: Path | None = None
    config: Path | None = None

    def start(self, timeout: float = 60.0) -> FakeMember:
        assert self.appliance is not None and self.trusted is not None
        extra = ["--config", str(self.config)] if self.config else []
        argv = ["ip", "netns", "exec", self.topo.ns(self.index), sys.executable, str(LAUNCHER),
                str(self.appliance.root), str(self.trusted), "--", "--state-dir",
                str(self.state_dir), "--workers", "1", "--grace", "1", "--management-host",
                self.address, "--member-name", self.name, *extra]
        self.child = start_long_lived(self.name, argv, {
            "LOCKGATE_IP_MOVER": "local", "LOCKGATE_PURE_PYTHON": "1",
            "LOCKGATE_BOOT_LOCK": str(self.appliance.root / "grubenv.lock")}, keep_lines=400)
        self.child.wait_for_line("lockgate-runtime: serving", timeout)
        for line in self.child.output().splitlines():
            if line.startswith("lockgate-runtime: serving"):
                self.fingerprint = line.rsplit("fingerprint=", 1)[1].split()[0]
        return self

    @property
    def version(self) -> str:
        assert self.appliance is not None
        return str(json.loads(self.appliance.release.read_text())["version"])

    def addresses(self) -> set[str]:
        out = subprocess.run(["ip", "-n", self.topo.ns(self.index), "-j", "addr", "show",
                              "dev", "eth0"], capture_output=True, text=True, timeout=30)
        return {i["local"] for d in json.loads(out.stdout) for i in d["addr_info"]}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A bundle of version 2.0.0 signed by "site"; "other" is a key nobody signed with."""
    work = tmp_path_factory.mktemp("bundle")
    generate(work / "site")
    generate(work / "other")
    tree = work / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/issue").write_text("lockgate 2.0.0\n")
    (tree / "payload.bin").write_bytes(os.urandom(MiB))
    image = work / "root-2.0.0.ext4"
    with image.open("wb") as f:
        f.truncate(FS_SIZE)
    assert run("mkfs.ext4", "-q", "-F", "-d", tree, image).returncode == 0
    return {"bundle": make_bundle(work, "2.0.0", image, work / "site.key"),
            "site": work / "site.pub", "other": work / "other.pub"}


@pytest.fixture
def cluster(tmp_path: Path, bundle: dict[str, Path], request: pytest.FixtureRequest
            ) -> Iterator[tuple[Topology, list[FakeMember], str]]:
    """tm1..tm3 joined, one traffic IP each; ``request.param``: who distrusts the bundle."""
    skip_unless_root()
    distrusting = getattr(request, "param", None)
    password = secrets.token_urlsafe(12)
    with topology(3) as topo:
        groups = {"traffic_ip_groups": {"web": {"properties": {"basic": {
            "ipaddresses": [topo.address(v) for v in VIPS],
            "machines": ["tm1", "tm2", "tm3"]}}}}, "settings": {"workers": 1}}
        config = tmp_path / "cluster.json"
        config.write_text(json.dumps(groups))
        members: list[FakeMember] = []
        for i in (1, 2, 3):
            root = tmp_path / f"tm{i}"
            (root / "appliance").mkdir(parents=True)
            key = bundle["other"] if f"tm{i}" == distrusting else bundle["site"]
            member = FakeMember(topo, i, root, password, appliance=Appliance(root / "appliance"),
                                trusted=key, config=config if i == 1 else None)
            member.prepare()
            members.append(member)
        try:
            for m in members:
                m.start()
            for m in members[1:]:
                code, _, err = m.join(members[0], members[0].fingerprint)
                assert code == 0, err
            # Settled: every member heard and each traffic IP on exactly one of them
            # (a busy machine takes a few heartbeats longer than a quiet one).
            deadline = time.monotonic() + 60
            while not all(len(h) == 1 for h in holders(topo, members).values()):
                assert time.monotonic() < deadline, f"never settled: {holders(topo, members)}"
                time.sleep(0.2)
            time.sleep(2 * 1.5)  # one more monitor_timeout twice over: no move in flight
            assert all(len(h) == 1 for h in holders(topo, members).values()), \
                holders(topo, members)
            yield topo, members, password
        finally:
            for m in members:
                m.stop()


def upgrade_cluster(topo: Topology, member: FakeMember, password: str, *args: str
                    ) -> subprocess.CompletedProcess[str]:
    secret = member.root / "upgrade.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return subprocess.run(["ip", "netns", "exec", topo.client, sys.executable, "-m", "lockgate",
                           "runtime", "upgrade-cluster", "--password-file", str(secret),
                           "--state-dir", str(member.state_dir), "--member-timeout", "90",
                           *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LOCKGATE_PURE_PYTHON": "1"})


def holders(topo: Topology, members: list[FakeMember]) -> dict[str, list[str]]:
    held = {m.name: m.addresses() for m in members}
    return {topo.address(v): [n for n, a in held.items() if topo.address(v) in a] for v in VIPS}


def test_upgrade_cluster_info_then_install_one_member_at_a_time(
        cluster: tuple[Topology, list[FakeMember], str], bundle: dict[str, Path]) -> None:
    topo, members, password = cluster
    info = upgrade_cluster(topo, members[0], password, "--package", str(bundle["bundle"]),
                           "--mode", "info")
    assert info.returncode == 0, info.stderr
    assert "bundle lockgate-2.0.0.upgrade: version 2.0.0" in info.stdout
    assert info.stdout.index("tm2 (") < info.stdout.index("tm3 (") < info.stdout.index("tm1 (")
    assert "1.0.0 -> 2.0.0" in info.stdout and "nothing changed" in info.stdout
    assert all(m.version == "1.0.0" for m in members)

    done = upgrade_cluster(topo, members[0], password, "--package", str(bundle["bundle"]),
                           "--mode", "install")
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(m.version == "2.0.0" for m in members)
    for m in ("tm2", "tm3", "tm1"):
        assert f"{m} (" in done.stdout
    assert done.stdout.count("running 2.0.0, rejoined, traffic IPs held") == 3
    assert "all 3 members run 2.0.0" in done.stdout
    # One member at a time: each was back before the next one's upload began.
    lines = done.stdout.splitlines()
    order = [line.split("]")[1].split()[0] for line in lines if ": uploading" in line]
    assert order == ["tm2", "tm3", "tm1"]
    assert all(len(h) == 1 for h in holders(topo, members).values())
    assert members[1].appliance is not None
    assert members[1].appliance.env["saved_entry"] == "lockgate-1.0.0"  # a trial, uncommitted


@pytest.mark.parametrize("cluster", ["tm3"], indirect=True)
def test_upgrade_cluster_rolls_back_the_upgraded_members_when_one_fails(
        cluster: tuple[Topology, list[FakeMember], str], bundle: dict[str, Path]) -> None:
    topo, members, password = cluster
    done = upgrade_cluster(topo, members[0], password, "--package", str(bundle["bundle"]),
                           "--mode", "install")
    print(done.stdout, done.stderr)
    assert done.returncode == 1
    assert "tm3" in done.stderr and "refused the bundle" in done.stderr
    assert "rolled back: tm2 to 1.0.0" in done.stderr
    assert "rollback tm2" in done.stdout and "running 1.0.0 again" in done.stdout
    assert [m.version for m in members] == ["1.0.0", "1.0.0", "1.0.0"]
    assert "uploading" not in "".join(line for line in done.stdout.splitlines()
                                      if line.startswith("[3/3]"))  # tm1 never touched
    assert all(len(h) == 1 for h in holders(topo, members).values())


def test_upgrade_cluster_no_restart_installs_everywhere_and_reboots_nobody(
        cluster: tuple[Topology, list[FakeMember], str], bundle: dict[str, Path]) -> None:
    topo, members, password = cluster
    before = holders(topo, members)
    done = upgrade_cluster(topo, members[0], password, "--package", str(bundle["bundle"]),
                           "--mode", "install", "--no-restart")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("installed; boots it at the next restart") == 3
    assert "all 3 members have 2.0.0" in done.stdout and "rebooting" not in done.stdout
    for m in members:
        assert m.appliance is not None
        assert m.version == "1.0.0"  # still running the old one
        assert m.appliance.env["next_entry"] == "lockgate-2.0.0"  # the trial at next boot
        assert m.child is not None and m.child.popen.poll() is None
        assert m.child.output().count("lockgate-runtime: serving") == 1  # never restarted
    assert holders(topo, members) == before
