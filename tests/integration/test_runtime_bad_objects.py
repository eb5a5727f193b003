"""A config object that cannot be applied on this host is skipped and reported; the rest serves.

Each case once took the whole appliance down: a virtual server on an address
that is not on the host, or whose certificate was deleted after it was
accepted, made a restarted worker exit 3 every second forever and a restart of
``serve`` exit 1 before the REST API and Admin UI started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
from test_runtime_support import Runtime, backends, free_port, get, pool_of, runtime, vs

from lockgate.runtime.config import ConfigStore
from lockgate.runtime.tls import generate
from lockgate.runtime.workers import Supervisor, WorkerStartError, notify_reload

NOT_ON_HOST = "192.0.2.1"  # TEST-NET-1: never an address of a test machine


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    key_pem, cert_pem = generate(name, [])
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    return cert, key


def tls_vs(port: int, cert: Path, key: Path) -> dict:
    return vs(port, ssl={"ssl_decrypt": True, "cert_file": str(cert), "key_file": str(key)})


def tls_get(port: int, cert: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), 5) as raw, \
            ctx.wrap_socket(raw) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while piece := s.recv(65536):
            data += piece
    return data.partition(b"\r\n\r\n")[2]


def vs_state(rt: Runtime, name: str) -> dict:
    return rt.snapshot()["virtual_servers"][name]


def test_address_not_on_the_host_is_skipped_and_reported(tmp_path: Path) -> None:
    good, bad = free_port(), free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"good": vs(good),
                                      "bad": vs(bad, basic={"listen_on_hosts": [NOT_ON_HOST]})},
                  "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config, workers=2) as rt:
            assert f"listen=127.0.0.1:{good}" in rt.serving_line
            assert get(good, "/")[2] == b"a"
            snap = rt.wait_status(lambda s: s["virtual_servers"]["bad"]["state"] == "error"
                                  and len(rt.worker_pids()) == 2)
            bad_state = snap["virtual_servers"]["bad"]
            assert bad_state["listeners"] == 0 and bad_state["listeners_failed"] == 1
            assert f"cannot listen on {NOT_ON_HOST}:{bad}" in bad_state["error"]
            good_state = snap["virtual_servers"]["good"]
            assert good_state["state"] == "ok" and good_state["error"] is None
            assert good_state["listeners"] == 1 and good_state["listeners_failed"] == 0
            # one line per worker, no traceback
            errors = [line for line in rt.stderr_lines if NOT_ON_HOST in line]
            assert len(errors) == 2, rt.stderr_lines
            assert not any("Traceback" in line for line in rt.stderr_lines)
            # the address is fixed with a reload: the listener comes up
            store = ConfigStore(rt.state_dir)
            store.put("virtual_servers", "bad", vs(bad))
            assert notify_reload(rt.state_dir)
            rt.wait_status(lambda s: s["virtual_servers"]["bad"]["state"] == "ok")
            assert get(bad, "/")[2] == b"a"
            assert any("virtual_servers.bad: problem solved" in line for line in rt.stderr_lines)


def test_deleted_certificate_survives_worker_crash_and_serve_restart(tmp_path: Path) -> None:
    good, secure = free_port(), free_port()
    cert, key = self_signed(tmp_path / "certs", "secure.test")
    with backends("a") as (a,):
        config = {"virtual_servers": {"good": vs(good), "secure": tls_vs(secure, cert, key)},
                  "pools": {"web": pool_of(a.address)}}
        rt = Runtime(tmp_path, config).start()
        try:
            assert tls_get(secure, cert) == b"a"
            saved = cert.read_bytes()
            cert.unlink()  # accepted while it existed; gone now
            rt.wait_status(lambda s: len(rt.worker_pids()) == 1)
            (victim,) = rt.worker_pids()
            os.kill(victim, signal.SIGKILL)
            snap = rt.wait_status(lambda s: victim not in rt.worker_pids()
                                  and s["virtual_servers"]["secure"]["state"] == "error",
                                  timeout=15)
            assert "cannot load certificate/key" in snap["virtual_servers"]["secure"]["error"]
            assert get(good, "/")[2] == b"a"
            (restarted,) = rt.worker_pids()
            time.sleep(2.5)  # a crash loop restarts every second: the worker must stay up
            assert rt.worker_pids() == [restarted]
            assert get(good, "/")[2] == b"a"
        finally:
            rt.stop()
        # A full restart: serve comes up, the REST API and Admin UI too
        again = Runtime(tmp_path, config)
        again.argv.remove("--no-management")
        again.argv += ["--rest-port", "0", "--admin-port", "0", "--management-host", "127.0.0.1"]
        again.start()
        try:
            assert " rest=https://127.0.0.1:" in again.serving_line
            assert get(good, "/")[2] == b"a"
            again.wait_status(lambda s: s["virtual_servers"]["secure"]["state"] == "error")
            # the certificate comes back: a reload serves it again
            cert.write_bytes(saved)
            assert notify_reload(again.state_dir)
            again.wait_status(lambda s: s["virtual_servers"]["secure"]["state"] == "ok")
            assert tls_get(secure, cert) == b"a"
        finally:
            assert again.stop() == 0


def test_unreadable_key_is_reported_in_metrics_and_status(tmp_path: Path) -> None:
    good, secure = free_port(), free_port()
    cert, key = self_signed(tmp_path / "certs", "secure.test")
    key.write_text("not a key\n")
    with backends("a") as (a,):
        config = {"virtual_servers": {"good": vs(good), "secure": tls_vs(secure, cert, key)},
                  "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt:
            snap = rt.wait_status(lambda s: s["virtual_servers"]["secure"]["state"] == "error")
            assert snap["virtual_servers"]["secure"]["listeners_failed"] == 1
            assert get(good, "/")[2] == b"a"
            status_file = rt.state_dir / "runtime" / "run" / "worker-0.json"
            assert json.loads(status_file.read_text())["virtual_servers"]["secure"]["state"] \
                == "error"


def test_unreadable_key_replaced_is_picked_up_without_a_reload(tmp_path: Path) -> None:
    secure = free_port()
    cert, key = self_signed(tmp_path / "certs", "secure.test")
    good_key = key.read_bytes()
    key.chmod(0)  # unreadable (as root it still reads: then make it garbage instead)
    if os.access(key, os.R_OK):
        key.chmod(0o600)
        key.write_text("garbage\n")
    with backends("a") as (a,):
        config = {"virtual_servers": {"secure": tls_vs(secure, cert, key)},
                  "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt:
            rt.wait_status(lambda s: s["virtual_servers"]["secure"]["state"] == "error")
            key.chmod(0o600)
            key.write_bytes(good_key)
            # failing objects are retried every few seconds: no reload needed
            rt.wait_status(lambda s: s["virtual_servers"]["secure"]["state"] == "ok", timeout=15)
            assert tls_get(secure, cert) == b"a"


def test_management_port_in_a_config_file_is_skipped_and_reported(tmp_path: Path) -> None:
    good = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"good": vs(good), "cluster": vs(9080)},
                  "pools": {"web": pool_of(a.address)}}
        with runtime(tmp_path, config) as rt:
            assert rt.serving_line.split(" listen=")[1].startswith(f"127.0.0.1:{good} ")
            snap = rt.wait_status(lambda s: s["virtual_servers"]["cluster"]["state"] == "error")
            assert "9080 is a management port" in snap["virtual_servers"]["cluster"]["error"]
            assert get(good, "/")[2] == b"a"


def test_traffic_ip_not_raised_here_is_listened_on_ahead(tmp_path: Path) -> None:
    """Bound with IP_FREEBIND: it takes traffic the moment the address is raised here."""
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"tip": vs(port, basic={"listen_on_hosts": [NOT_ON_HOST]})},
                  "pools": {"web": pool_of(a.address)},
                  "traffic_ip_groups": {"front": {"properties": {"basic": {
                      "ipaddresses": [NOT_ON_HOST]}}}}}
        with runtime(tmp_path, config) as rt:
            assert f"listen={NOT_ON_HOST}:{port}" in rt.serving_line
            rt.wait_status(lambda s: s["virtual_servers"]["tip"]["state"] == "ok")


def test_supervisor_keeps_going_when_workers_cannot_start(tmp_path: Path) -> None:
    """With a management plane, workers that die while starting do not stop serve's start
    (the REST API is how the operator repairs the cause); without one they do."""
    store = tmp_path / "runtime" / "config.json"
    store.parent.mkdir(parents=True)
    store.write_text('{"version": 1, "tree": {')  # damaged after serve checked it

    async def start(keep_going: bool) -> Supervisor:
        supervisor = Supervisor(tmp_path, 1, grace=0.5)
        await supervisor.startup(keep_going=keep_going)
        await supervisor.shutdown()
        return supervisor

    with pytest.raises(WorkerStartError, match="worker 0 exited with status 3"):
        asyncio.run(start(keep_going=False))
    supervisor = asyncio.run(start(keep_going=True))
    assert supervisor.ready == {}
