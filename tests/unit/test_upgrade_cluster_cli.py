"""``upgrade-cluster``'s refusals (one ``error:`` line, nothing changed) and its notion of
a whole cluster (:func:`lockgate.runtime.cluster.upgrade.healthy`). The upgrade itself:
tests/integration/test_upgrade_cluster.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from lockgate.image.formats.upgrade import write_bundle
from lockgate.runtime.cluster.state import ClusterState, Member, save_cluster
from lockgate.runtime.cluster.upgrade import healthy


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c",
                           "from lockgate.runtime.cluster.cli import upgrade_cluster_main; "
                           "upgrade_cluster_main()", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LOCKGATE_PURE_PYTHON": "1"})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: a connection is refused


def test_refusals_are_one_error_line_and_change_nothing(tmp_path: Path) -> None:
    package = tmp_path / "x.upgrade"
    package.write_bytes(b"not a bundle")
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    base = ["--package", str(package), "--password-file", str(secret), "--state-dir",
            str(tmp_path / "state")]

    alone = cli(*base, "--mode", "install")
    assert alone.returncode == 1 and alone.stdout == ""
    assert alone.stderr.strip().splitlines() == [
        "error: this appliance is not in a cluster; upgrade it with 'upgrade FILE'"]

    bad = cli(*base, "--mode", "sideways")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    assert "Traceback" not in bad.stderr

    save_cluster(tmp_path / "state", ClusterState("tm1", b"k" * 32, (
        Member("tm1", "127.0.0.1", fingerprint="AA:" * 19 + "AA"),
        Member("tm2", "127.0.0.1", fingerprint="BB:" * 19 + "BB")), 2))
    refused = cli(*base, "--mode", "info")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        f"error: {package}: not a lockgate upgrade bundle (no LOCKGATE-BUNDLE header)"]

    rootfs = tmp_path / "rootfs.img"
    rootfs.write_bytes(b"\0" * 65536)
    write_bundle(package, version="2.0.0", rootfs=rootfs, fs_uuid="0" * 8, kernel="k",
                 kernel_cmdline="ro", source_date_epoch=0, signing_key=None)
    down = cli(*base, "--mode", "info", "--rest-port", str(closed_port()))
    assert down.returncode == 1, down.stderr
    (line,) = down.stderr.strip().splitlines()
    assert line.startswith("error: ") and "tm1 (127.0.0.1)" in line and "tm2 (127.0.0.1)" in line
    assert "connection refused" in line


def doc(**change: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "running": True, "healthy": True,
        "members": [{"name": "tm1", "state": "self"}, {"name": "tm2", "state": "alive"}],
        "traffic_ip_groups": [{"name": "web", "enabled": True, "ips": [
            {"ip": "10.0.0.1", "held_by": "tm1", "holders": ["tm1"]}]}]}
    return {**base, **change}


def test_whole_cluster_means_running_healthy_everyone_heard_every_ip_held_once() -> None:
    assert healthy(doc(), {"tm1", "tm2"}) is None
    assert healthy(doc(running=False), set()) == "fault tolerance not running yet"
    assert "not healthy" in str(healthy(doc(healthy=False), set()))
    gone = doc(members=[{"name": "tm1", "state": "self"}, {"name": "tm2", "state": "dead"}])
    assert healthy(gone, {"tm1", "tm2"}) == "not hearing tm2"
    assert healthy(gone, {"tm1"}) is None  # tm2 was not alive before either
    twice = doc(traffic_ip_groups=[{"name": "web", "ips": [
        {"ip": "10.0.0.1", "held_by": None, "holders": ["tm1", "tm2"]}]}])
    assert healthy(twice, set()) == "traffic IP 10.0.0.1 held by tm1, tm2"
    dark = doc(traffic_ip_groups=[{"name": "web", "ips": [
        {"ip": "10.0.0.1", "held_by": None, "holders": []}]}])
    assert healthy(dark, set()) == "traffic IP 10.0.0.1 held by nobody"
    off = doc(traffic_ip_groups=[{"name": "web", "enabled": False, "ips": [
        {"ip": "10.0.0.1", "held_by": None, "holders": []}]}])
    assert healthy(off, set()) is None  # a disabled group is nobody's to raise
