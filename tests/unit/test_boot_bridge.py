"""The stdio<->TCP metadata bridge, run the way slirp runs it: guest socket on stdin/stdout."""

from __future__ import annotations

import socket
import subprocess
import sys

from lockgate.image.boot.metadata import BRIDGE, bridge_command
from lockgate.image.cloudemu.ec2 import Ec2Imds


def _run_bridge(port: int, request: bytes) -> tuple[bytes, int]:
    guest, child_end = socket.socketpair()
    with guest, child_end:
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(BRIDGE), str(port)],
                                stdin=child_end.fileno(), stdout=child_end.fileno(),
                                stderr=child_end.fileno())
        child_end.close()
        guest.settimeout(10)
        guest.sendall(request)
        guest.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := guest.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass  # the bridge gave up with our request unread: the guest sees a reset
        return reply, proc.wait(timeout=10)


def test_bridge_carries_an_imds_request_and_its_reply() -> None:
    with Ec2Imds(user_data=b"password=x accept_license=y") as imds:
        reply, code = _run_bridge(
            imds.port, b"GET /latest/user-data HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n")
    assert code == 0
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert body == b"password=x accept_license=y"


def test_bridge_passes_a_put_body_through() -> None:
    with Ec2Imds() as imds:
        reply, code = _run_bridge(
            imds.port, b"PUT /latest/api/token HTTP/1.0\r\nHost: x\r\n"
                       b"X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n")
    assert code == 0 and reply.startswith(b"HTTP/1.0 200")
    assert len(reply.partition(b"\r\n\r\n")[2]) > 10  # the token


def test_bridge_fails_quietly_when_nothing_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused
        reply, code = _run_bridge(port, b"GET / HTTP/1.0\r\n\r\n")
    assert code != 0
    assert reply == b""  # nothing leaks into the guest's connection (stderr is the socket)


def test_bridge_command_has_no_commas() -> None:
    assert "," not in bridge_command(12345)
