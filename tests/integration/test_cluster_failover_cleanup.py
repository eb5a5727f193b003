"""A runtime whose guard died with it left its traffic IPs up: the next ``serve`` drops
them before anything else (and raises only what the cluster gives it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from netns_support import Topology, skip_unless_root

from lockgate.paths import StatePaths
from lockgate.runtime.cluster.state import ClusterState, Member, save_cluster


def test_next_start_drops_leftover_traffic_ips(tmp_path: Path) -> None:
    skip_unless_root()
    with Topology(["a", "b"]) as topo:
        a = topo.hosts["a"]
        left, mine = topo.ip(100), topo.ip(101)
        a.run("ip", "addr", "add", f"{left}/24", "dev", a.veth)  # as the killed run left it
        state = tmp_path / "a"
        runtime = StatePaths(state).runtime
        runtime.mkdir(parents=True)
        (runtime / "traffic_ips.json").write_text(json.dumps({"ips": [left]}))
        # b is a member that never answers: a waits one monitor_timeout, then holds
        # only its own group's IP; the leftover belongs to b's group.
        save_cluster(state, ClusterState("a", b"k" * 32, (
            Member("a", a.address), Member("b", topo.hosts["b"].address)), 1))
        config = tmp_path / "a.json"
        config.write_text(json.dumps({"traffic_ip_groups": {
            "theirs": {"properties": {"basic": {"ipaddresses": [left], "machines": ["b"]}}},
            "ours": {"properties": {"basic": {"ipaddresses": [mine], "machines": ["a"]}}}},
            "settings": {"workers": 1}}))
        proc = subprocess.Popen(
            [*a.prefix, sys.executable, "-m", "lockgate", "runtime", "serve", "--config",
             str(config), "--state-dir", str(state), "--workers", "1", "--no-management"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "LOCKGATE_PURE_PYTHON": "1", "LOCKGATE_IP_MOVER": "local"})
        try:
            addresses: set[str] = set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                out = json.loads(a.run("ip", "-j", "addr", "show", "dev", a.veth).stdout)
                addresses = {i["local"] for d in out for i in d["addr_info"]}
                if left not in addresses and mine in addresses:
                    break
                time.sleep(0.1)
            assert left not in addresses and mine in addresses, addresses
            assert json.loads((runtime / "traffic_ips.json").read_text()) == {"ips": [mine]}
        finally:
            proc.terminate()
            output = proc.communicate(timeout=30)[0]
        assert f"dropped traffic IPs left by the previous run: {left}" in output, output
        # An orderly stop drops what it raised and forgets it.
        out = json.loads(a.run("ip", "-j", "addr", "show", "dev", a.veth).stdout)
        assert mine not in {i["local"] for d in out for i in d["addr_info"]}
        assert not (runtime / "traffic_ips.json").exists()
