"""Upgrade, rollback and version switching over the REST API (HTTPS 9070), end to end.

The real management servers (in-process, on a uvloop thread, as in
test_api_support) serve ``/api/tm/1.0/system`` for an "appliance" made of a
GPT disk-image file, an ESP folder and a data-partition folder (the Appliance
of tests/unit/test_system_upgrade.py): an upload is streamed through TLS and
the HTTP server to the data partition, verified and written into slot B of the
disk image, exactly as on the appliance.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvloop
from test_api_support import PASSWORD, Running, basic, pinned_context, write_users

from lockgate.runtime.api import start_management
from lockgate.runtime.api.http import Limits
from lockgate.runtime.system.keys import generate, load_public
from lockgate.runtime.system.rest import SystemApi

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from test_system_upgrade import (
    FS_SIZE,
    Appliance,
    fs_uuid,
    make_bundle,
    run,
)

MiB = 1024 * 1024
SYSTEM = "/api/tm/1.0/system"
AUTH = basic("admin", PASSWORD)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A signed bundle of version 2.0.0 carrying 8 MiB of incompressible data."""
    work = tmp_path_factory.mktemp("bundles")
    generate(work / "site")
    tree = work / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/issue").write_text("lockgate 2.0.0\n")
    (tree / "payload.bin").write_bytes(os.urandom(8 * MiB))
    image = work / "root-2.0.0.ext4"
    with image.open("wb") as f:
        f.truncate(FS_SIZE)
    assert run("mkfs.ext4", "-q", "-F", "-d", tree, image).returncode == 0
    bundle = make_bundle(work, "2.0.0", image, work / "site.key")
    assert fs_uuid("2.0.0")
    return {"2.0.0": bundle, "fs-2.0.0": image, "pub": work / "site.pub"}


@pytest.fixture
def appliance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Appliance:
    monkeypatch.setenv("LOCKGATE_BOOT_LOCK", str(tmp_path / "grubenv.lock"))
    (tmp_path / "appliance").mkdir()
    return Appliance(tmp_path / "appliance")


@contextmanager
def serving(state_dir: Path, system: SystemApi, limits: Limits | None = None
            ) -> Iterator[Running]:
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="mgmt-loop", daemon=True)
    thread.start()
    try:
        mgmt = asyncio.run_coroutine_threadsafe(
            start_management(state_dir, "127.0.0.1", 0, 0, limits=limits, system=system),
            loop).result(timeout=30)
        try:
            yield Running(mgmt, state_dir, pinned_context(mgmt.certificate.cert_path))
        finally:
            asyncio.run_coroutine_threadsafe(mgmt.close(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture
def server(tmp_path: Path, appliance: Appliance, bundles: dict[str, Path]
           ) -> Iterator[tuple[Running, Appliance, list[str]]]:
    write_users(tmp_path / "mgmt")
    reboots: list[str] = []
    system = SystemApi(lambda: appliance.machine, lambda: [load_public(bundles["pub"])],
                       reboots.append)
    with serving(tmp_path / "mgmt", system) as run_:
        yield run_, appliance, reboots


def put_file(run_: Running, path: Path, query: str = "", auth: str | None = AUTH
             ) -> tuple[int, dict[str, object]]:
    conn = run_.connect(run_.rest_port)
    conn.timeout = 120
    try:
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Length": str(path.stat().st_size)}
        if auth:
            headers["Authorization"] = auth
        with path.open("rb") as f:  # http.client sends it in 8 KiB blocks
            conn.request("PUT", f"{SYSTEM}/upgrade{query}", body=f, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_upgrade_over_rest_writes_the_inactive_slot_and_lists_switches_rolls_back(
        server: tuple[Running, Appliance, list[str]], bundles: dict[str, Path]) -> None:
    run_, appliance, reboots = server
    status, reply = put_file(run_, bundles["2.0.0"], "?restart=false")
    assert status == 200, reply
    assert reply["version"] == "2.0.0" and reply["slot"] == "b" and reply["restart"] is False
    assert appliance.read_partition(appliance.b, FS_SIZE) == bundles["fs-2.0.0"].read_bytes()
    assert appliance.env["next_entry"] == "lockgate-2.0.0"
    assert not (appliance.state.base / "upgrade/upload.upgrade").exists()
    assert run_.api("GET", f"{SYSTEM}/upgrade").json()["state"] == "installed"

    # The list is rollback-helper --list-versions --json's, field for field.
    listed = run_.api("GET", f"{SYSTEM}/versions")
    assert listed.status == 200
    helper = appliance.cli("rollback-helper", "--list-versions", "--json")
    assert helper.returncode == 0, helper.stderr
    assert listed.json() == json.loads(helper.stdout)
    assert [v["version"] for v in listed.json()] == ["1.0.0", "2.0.0"]
    assert set(listed.json()[0]) >= {"slot", "version", "default", "running", "healthy",
                                     "installed"}

    missing = run_.api("PUT", f"{SYSTEM}/versions/default",
                       {"version": "7.0.0", "restart": False})
    assert missing.status == 422, missing.body
    switched = run_.api("PUT", f"{SYSTEM}/versions/default",
                        {"version": "2.0.0", "restart": False})
    assert switched.status == 200 and appliance.env["saved_entry"] == "lockgate-2.0.0"
    back = run_.api("POST", f"{SYSTEM}/rollback", {"restart": True})
    assert back.status == 200 and back.json()["version"] == "2.0.0", back.body
    deadline = time.monotonic() + 5
    while not reboots and time.monotonic() < deadline:  # the reboot follows the reply
        time.sleep(0.05)
    assert reboots == ["lockgate-2.0.0"]
    wrong = run_.request("GET", f"{SYSTEM}/rollback", auth=AUTH)
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"


def test_an_upload_streams_to_disk_and_the_server_does_not_hold_it(
        server: tuple[Running, Appliance, list[str]], tmp_path: Path) -> None:
    """32 MiB through TLS: the file on the data partition grows while it arrives and this
    process (server and client) grows by far less than the body."""
    run_, appliance, _ = server
    body = tmp_path / "big.upgrade"
    with body.open("wb") as f:
        for _ in range(32):
            f.write(os.urandom(MiB))  # not a bundle: refused after it is stored
    target = appliance.state.base / "upgrade/upload.upgrade"
    samples: list[tuple[int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            size = target.stat().st_size if target.exists() else 0
            samples.append((rss(), size))
            time.sleep(0.005)

    # Warm up first: the password check (scrypt, 16 MiB) and the first TLS session.
    assert run_.api("GET", f"{SYSTEM}/upgrade").status == 200
    baseline = rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        status, reply = put_file(run_, body, "?restart=false")
    finally:
        done.set()
        sampler.join(timeout=10)
    assert status == 422, reply
    assert "bundle" in str(reply["error_text"])
    sizes = [s for _, s in samples]
    assert max(sizes) >= 8 * MiB, "the upload was not seen growing on disk"
    assert len({s for s in sizes if 0 < s < 32 * MiB}) >= 3  # it grew in steps
    growth = max(r for r, _ in samples) - baseline
    assert growth < 6 * MiB, f"RSS grew {growth / MiB:.1f} MiB for a 32 MiB upload"
    assert not target.exists()
    assert appliance.env.get("next_entry", "") == ""


def _raw_put(run_: Running, length: int, auth: str | None) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", run_.rest_port), timeout=10)
    tls = run_.context.wrap_socket(sock, server_hostname="lockgate")
    head = (f"PUT {SYSTEM}/upgrade?restart=false HTTP/1.1\r\nHost: lockgate\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n")
    if auth:
        head += f"Authorization: {auth}\r\n"
    tls.sendall((head + "\r\n").encode())
    return tls


def _answer(tls: ssl.SSLSocket, timeout: float) -> bytes:
    """The answer's head (what arrived before the server closed)."""
    tls.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = tls.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data


def test_an_unauthenticated_upload_is_refused_before_a_byte_is_stored(
        server: tuple[Running, Appliance, list[str]]) -> None:
    run_, appliance, _ = server
    for auth in (None, basic("admin", "wrong")):
        tls = _raw_put(run_, 8 * MiB, auth)
        tls.sendall(os.urandom(64 * 1024))
        answer = _answer(tls, 10)
        tls.close()
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert not (appliance.state.base / "upgrade").exists()


def test_a_slow_but_steady_upload_outlives_the_body_deadline_and_a_stalled_one_is_cut(
        tmp_path: Path, appliance: Appliance, bundles: dict[str, Path]) -> None:
    """Scaled down: body deadline 1 s; uploads must keep 32 KiB/s over each 0.5 s."""
    write_users(tmp_path / "mgmt")
    system = SystemApi(lambda: appliance.machine, lambda: [load_public(bundles["pub"])],
                       lambda entry: None)
    limits = Limits(body_timeout=1.0, min_stream_rate=32 * 1024, stream_window=0.5)
    with serving(tmp_path / "mgmt", system, limits) as run_:
        # 400 KiB at ~80 KiB/s: 5 s, five times the body deadline.
        tls = _raw_put(run_, 400 * 1024, AUTH)
        began = time.monotonic()
        for _ in range(50):
            tls.sendall(os.urandom(8 * 1024))
            time.sleep(0.1)
        answer = _answer(tls, 30)
        tls.close()
        assert time.monotonic() - began > 3 * limits.body_timeout
        assert answer.startswith(b"HTTP/1.1 422 "), answer[:300]  # arrived whole; not a bundle

        tls = _raw_put(run_, 4 * MiB, AUTH)
        tls.sendall(os.urandom(256 * 1024))
        stalled = time.monotonic()
        answer = _answer(tls, 10)
        tls.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert time.monotonic() - stalled < 3.0
        assert not (appliance.state.base / "upgrade/upload.upgrade").exists()
        assert run_.mgmt.rest.counters["timeout_stream"] == 1

        # The cut upload let go of the upgrade lock: the next one is taken (not 409).
        tls = _raw_put(run_, 1000, AUTH)
        tls.sendall(b"x" * 1000)
        answer = _answer(tls, 10)
        tls.close()
        assert answer.startswith(b"HTTP/1.1 422 "), answer[:300]


def test_other_requests_keep_the_one_mebibyte_body_limit(
        server: tuple[Running, Appliance, list[str]]) -> None:
    run_, _, _ = server
    big = run_.request("PUT", "/api/tm/1.0/config/active/pools/web",
                       b"{" + b" " * (2 * MiB) + b"}", auth=AUTH)
    assert big.status == 413
    # The upload path takes the body's stream; a bundle bigger than the data partition
    # can hold is refused from its Content-Length, before a byte is stored.
    tls = _raw_put(run_, 1 << 50, AUTH)
    answer = _answer(tls, 10)
    tls.close()
    assert answer.split(b"\r\n")[0].split(b" ")[1] in (b"413", b"507"), answer[:200]


def test_a_client_that_goes_away_mid_upload_leaves_nothing_and_the_next_upload_is_taken(
        server: tuple[Running, Appliance, list[str]]) -> None:
    run_, appliance, _ = server
    target = appliance.state.base / "upgrade/upload.upgrade"
    tls = _raw_put(run_, 4 * MiB, AUTH)
    tls.sendall(os.urandom(512 * 1024))
    deadline = time.monotonic() + 10
    while not (target.exists() and target.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert target.exists(), "the upload did not reach the data partition"
    tls.close()
    while target.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not target.exists()
    # Expect: 100-continue is answered once the head is accepted, then the body follows.
    sock = socket.create_connection(("127.0.0.1", run_.rest_port), timeout=10)
    tls = run_.context.wrap_socket(sock, server_hostname="lockgate")
    tls.sendall((f"PUT {SYSTEM}/upgrade HTTP/1.1\r\nHost: lockgate\r\nAuthorization: {AUTH}"
                 "\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n").encode())
    assert _answer(tls, 10).startswith(b"HTTP/1.1 100 Continue\r\n")
    tls.sendall(b"x" * 1000)
    answer = _answer(tls, 10)
    tls.close()
    assert answer.startswith(b"HTTP/1.1 422 "), answer[:300]  # not 409: the lock was let go


def test_real_serve_on_a_host_not_booted_from_a_slot_answers_404_and_stores_nothing(
        tmp_path: Path) -> None:
    """``lockgate runtime serve`` wires the appliance's own SystemApi; this build host did
    not boot from a lockgate slot, so every system resource but the index is 404 and an
    upload is refused from its head (which is also why schemathesis never writes a disk)."""
    write_users(tmp_path)
    (tmp_path / "config" / "management.json").write_text(
        json.dumps({"min_stream_rate": 32768, "stream_window": 5}))
    argv = [sys.executable, "-m", "lockgate", "runtime", "serve", "--state-dir", str(tmp_path),
            "--workers", "1", "--grace", "1", "--management-host", "127.0.0.1",
            "--rest-port", "0", "--admin-port", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None

    def pump() -> None:
        for line in proc.stdout or []:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("lockgate-runtime: serving" in x for x in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                continue
        port = int(seen[-1].split(" rest=https://127.0.0.1:")[1].split()[0])
        context = pinned_context(tmp_path / "tls" / "admin.crt")

        def ask(method: str, path: str, body: bytes | None = None, auth: str | None = AUTH
                ) -> tuple[int, dict[str, object]]:
            import http.client
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
            headers = {"Authorization": auth} if auth else {}
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            status, data = reply.status, json.loads(reply.read())
            conn.close()
            return status, data

        assert ask("GET", SYSTEM)[0] == 200
        status, reply = ask("GET", f"{SYSTEM}/versions")
        assert status == 404 and reply["error_id"] == "system.not_appliance", reply
        assert ask("PUT", f"{SYSTEM}/upgrade", b"x" * 100_000, auth=None)[0] == 401
        status, reply = ask("PUT", f"{SYSTEM}/upgrade", b"x" * 100_000)
        assert status == 404 and reply["error_id"] == "system.not_appliance", reply
        assert not (tmp_path / "upgrade").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    everything = "".join(seen)
    assert "management.json" not in everything, everything  # the new limits are known
