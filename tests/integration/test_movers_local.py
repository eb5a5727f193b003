"""The local IP mover in network namespaces: the address comes and goes on the right
interface, gratuitous ARP / unsolicited NA reach a neighbour with this host's MAC."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from netns_support import Host, Topology, skip_unless_root

from lockgate.runtime.cluster.movers.local import arp_frames, na_message

CAPTURE = r"""
import socket, struct, sys, select, time
kind = sys.argv[1]; want = socket.inet_pton(socket.AF_INET6 if kind == "na" else socket.AF_INET, sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
print("ready", flush=True)
end = time.monotonic() + 10
arps = 0
while time.monotonic() < end:
    if not select.select([s], [], [], 0.5)[0]:
        continue
    frame = s.recv(2000)
    etype = struct.unpack("!H", frame[12:14])[0]
    if kind == "arp" and etype == 0x0806 and frame[28:32] == want and frame[38:42] == want:
        print(frame[6:12].hex(), struct.unpack("!H", frame[20:22])[0], flush=True)
        arps += 1
        if arps == 2:
            break
    if kind == "na" and etype == 0x86DD and frame[20] == 58 and frame[54] == 136 and frame[62:78] == want:
        print(frame[6:12].hex(), frame[58] & 0x20, frame[80:86].hex(), flush=True)
        break
"""


def mover(host: Host, action: str, ip: str) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from lockgate.runtime.cluster.movers.local import LocalMover\n"
            "from lockgate.runtime.cluster.movers import MoverError\n"
            f"try:\n    getattr(LocalMover(), {action!r})({ip!r})\n"
            "except MoverError as e:\n    print(e); sys.exit(3)\n")
    return host.python(code)


def addresses(host: Host) -> set[str]:
    out = json.loads(host.run("ip", "-j", "addr", "show", "dev", host.veth).stdout)
    return {i["local"] for d in out for i in d["addr_info"]}


def mac(host: Host) -> str:
    return str(json.loads(host.run("ip", "-j", "link", "show", host.veth).stdout)[0]["address"])


def reachable(host: Host, ip: str) -> bool:
    """A TCP connect to a closed port: refused (a RST came back) means the IP answers."""
    code = (f"import socket\ntry:\n socket.create_connection(({ip!r}, 9), timeout=2)\n"
            "except ConnectionRefusedError:\n print('refused')\nexcept OSError as e:\n print(e)")
    return host.python(code).stdout.strip() == "refused"


def capture(host: Host, kind: str, ip: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", host.ns, sys.executable, "-c", CAPTURE, kind, ip],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_frames_layout() -> None:
    request, reply = arp_frames("10.0.0.9", bytes.fromhex("020000000001"))
    assert request[:6] == b"\xff" * 6 and request[12:14] == b"\x08\x06"
    assert request[20:22] == b"\x00\x01" and reply[20:22] == b"\x00\x02"
    assert request[28:32] == request[38:42] == bytes([10, 0, 0, 9])
    na = na_message("fd00::9", bytes.fromhex("020000000001"))
    assert na[0] == 136 and na[4] & 0x20 and na[-8:] == b"\x02\x01" + bytes.fromhex("020000000001")


def test_raise_announce_drop_ipv4_and_ipv6() -> None:
    skip_unless_root()
    with Topology(["a", "n"]) as topo:
        a, n = topo.hosts["a"], topo.hosts["n"]
        vip = topo.ip(100)
        sniff = capture(n, "arp", vip)
        try:
            assert mover(a, "raise_ip", vip).returncode == 0
            assert vip in addresses(a)
            out, _ = sniff.communicate(timeout=15)
        finally:
            sniff.kill()
        seen = [line.split() for line in out.splitlines()]
        assert {int(op) for _, op in seen} == {1, 2}  # request and reply
        assert {m for m, _ in seen} == {mac(a).replace(":", "")}
        # Raising again is harmless; the neighbour reaches the traffic IP.
        assert mover(a, "raise_ip", vip).returncode == 0
        assert reachable(n, vip)
        assert mover(a, "drop_ip", vip).returncode == 0
        assert vip not in addresses(a)
        assert mover(a, "drop_ip", vip).returncode == 0  # idempotent
        # An IP no interface's subnet holds: one clear line, exit 3.
        bad = mover(a, "raise_ip", "192.0.2.7")
        assert bad.returncode == 3 and "no local interface has a subnet" in bad.stdout

        for host in (a, n):
            host.run("ip", "addr", "add", f"fd77::{1 if host is a else 2}/64", "dev", host.veth,
                     "nodad")
        sniff = capture(n, "na", "fd77::100")
        try:
            assert mover(a, "raise_ip", "fd77::100").returncode == 0
            out, _ = sniff.communicate(timeout=15)
        finally:
            sniff.kill()
        source, override, target_mac = out.split()
        assert source == target_mac == mac(a).replace(":", "") and int(override)
        assert "fd77::100" in addresses(a)
        assert mover(a, "drop_ip", "fd77::100").returncode == 0
        assert "fd77::100" not in addresses(a)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


COMPOSITE = r"""
import json, sys
from lockgate.runtime.cluster.movers import WithLocal
from lockgate.runtime.cluster.movers.local import LocalMover
calls = []
class Cloud:
    name = "cloud"
    def raise_ip(self, ip): calls.append(["raise", ip])
    def drop_ip(self, ip): calls.append(["drop", ip])
    def announce(self, ip): pass
    def prepare(self, ips): calls.append(["prepare", ips])
vip, public = sys.argv[1], sys.argv[2]
m = WithLocal(Cloud(), LocalMover(), lambda ip: ip != public)
m.prepare([vip, public])
m.raise_ip(vip); m.raise_ip(public)
import subprocess
held = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True).stdout
print(json.dumps({"calls": calls, "held": vip in held, "public_local": public in held}))
m.drop_ip(vip)
held = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True).stdout
print(json.dumps({"after_drop": vip in held, "calls": calls}))
"""


def test_cloud_mover_with_the_local_address_for_private_ips() -> None:
    skip_unless_root()
    with Topology(["a"]) as topo:
        a = topo.hosts["a"]
        vip = topo.ip(120)
        out = subprocess.run([*a.prefix, sys.executable, "-c", COMPOSITE, vip, "203.0.113.9"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        first, second = (json.loads(line) for line in out.stdout.splitlines())
        assert first["held"] and not first["public_local"]  # public: the cloud NATs it
        assert first["calls"] == [["prepare", [vip, "203.0.113.9"]], ["raise", vip],
                                  ["raise", "203.0.113.9"]]
        assert not second["after_drop"] and second["calls"][-1] == ["drop", vip]
