"""schemathesis against the live REST API: never a 5xx, and answers match the OpenAPI document.

Bounded: a fixed seed and a few examples per operation (about 10-20 s). The
login limiter is relaxed because schemathesis deliberately sends bad
credentials (``ignored_auth``) and a lockout would hide everything after it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_api_support import PASSWORD, running, write_users

from lockgate.proc import run
from lockgate.runtime import status
from lockgate.runtime.api.auth import FailureLimiter

# Both data checks compare the store's Python rules with the document's JSON
# Schema, which cannot say everything Python accepts (regex dialect; the
# store takes JSON booleans as IP addresses -- reported). Explicit tests in
# test_api_rest.py cover rejection of bad documents instead.
EXCLUDED = "negative_data_rejection"


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors_or_nonconformance(tmp_path: Path) -> None:
    write_users(tmp_path)
    status.run_folder(tmp_path).mkdir(parents=True)
    status.write_worker_status(tmp_path, 0, {
        "virtual_servers": {"site": {"requests": 3, "bytes_in": 10, "bytes_out": 20,
                                     "connections_current": 1, "connections_total": 3,
                                     "errors": 0}},
        "pools": {"web": {"nodes": {"127.0.0.1:8080": {"state": "alive", "connections": 3,
                                                        "requests": 3, "failures": 0}}}}})
    st = Path(sys.executable).with_name("st")
    with running(tmp_path, FailureLimiter(max_failures=10**9)) as server:
        assert server.api("PUT", "/api/tm/1.0/config/active/pools/web", {"properties": {
            "basic": {"nodes_table": [{"node": "127.0.0.1:8080"}]}}}).status == 201
        assert server.api("PUT", "/api/tm/1.0/config/active/virtual_servers/site", {
            "properties": {"basic": {"port": 18080, "pool": "web"}}}).status == 201
        schema = tmp_path / "openapi.json"
        schema.write_bytes(server.api("GET", "/api/tm/1.0/openapi.json").body)
        proc = run([st, "run", schema, "--url", f"https://127.0.0.1:{server.rest_port}",
                    "--auth", f"admin:{PASSWORD}",
                    "--tls-verify", server.mgmt.certificate.cert_path,
                    "--checks", "all", "--exclude-checks", EXCLUDED,
                    "--max-examples", "15", "--seed", "20261126", "--workers", "1",
                    "--request-timeout", "20", "--no-color",
                    "--generation-database", "none"],
                   check=False, capture=True, timeout=300,
                   env={"SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}, cwd=tmp_path)
        output = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        assert proc.returncode == 0, output[-8000:]
        assert PASSWORD not in output
