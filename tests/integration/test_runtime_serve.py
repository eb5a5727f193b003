"""`lockgate runtime serve` / `reload` as commands: the serving line, management, no server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from test_runtime_support import Runtime, backends, free_port, get, pool_of, vs

from lockgate.runtime.config import ConfigStore


def test_serving_line_names_listeners_and_management(tmp_path: Path) -> None:
    port = free_port()
    with backends("a") as (a,):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        rt = Runtime(tmp_path, config, workers=2)
        rt.argv.remove("--no-management")
        rt.argv += ["--rest-port", "0", "--admin-port", "0", "--management-host", "127.0.0.1"]
        rt.start()
        try:
            line = rt.serving_line
            assert line.startswith(f"lockgate-runtime: serving virtual_servers=1 workers=2 "
                                   f"listen=127.0.0.1:{port} ")
            assert re.search(r" admin=https://127\.0\.0\.1:\d+ rest=https://127\.0\.0\.1:\d+ "
                             r"fingerprint=([0-9A-F]{2}:){19}[0-9A-F]{2}$", line), line
            assert get(port, "/")[2] == b"a"
            rt.wait_status(lambda s: len(rt.worker_pids()) == 2)  # both write status files
        finally:
            assert rt.stop() == 0
        assert rt.wait_line("lockgate-runtime: stopped", 5)


def test_serve_keeps_rest_changes_when_the_file_is_unchanged(tmp_path: Path) -> None:
    port = free_port()
    with backends("a", "b") as (a, b):
        config = {"virtual_servers": {"web": vs(port)}, "pools": {"web": pool_of(a.address)}}
        rt = Runtime(tmp_path, config).start()
        try:
            ConfigStore(rt.state_dir).put("pools", "web", pool_of(b.address))  # as REST would
        finally:
            rt.stop()
        again = Runtime(tmp_path, config).start()  # same file: the store's newer config stays
        try:
            assert get(port, "/")[2] == b"b"
        finally:
            again.stop()


def test_reload_without_a_running_server_stores_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("pools:\n  web: {properties: {}}\n")
    result = subprocess.run([sys.executable, "-m", "lockgate", "runtime", "reload", "--config",
                             str(path), "--state-dir", str(tmp_path / "s")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "config version 1 stored; no traffic manager is running" in result.stdout
    assert ConfigStore(tmp_path / "s").list("pools") == ["web"]
