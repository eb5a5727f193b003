"""Management-plane limits: parsing ``config/management.json`` and what the per-IP cap counts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lockgate.paths import StatePaths
from lockgate.runtime.api import load_limits
from lockgate.runtime.api.http import Limits, client_key


def test_limits_from_a_mapping_keep_defaults_for_what_is_wrong() -> None:
    limits, problems = Limits.from_mapping({
        "header_timeout": 2, "max_connections_per_ip": 4, "max_connections": 2.5,
        "idle_timeout": -1, "write_buffer_high": True, "max_connexions": 3})
    assert limits.header_timeout == 2.0 and isinstance(limits.header_timeout, float)
    assert limits.max_connections_per_ip == 4
    assert limits.max_connections == Limits().max_connections
    assert limits.idle_timeout == Limits().idle_timeout
    assert limits.write_buffer_high == Limits().write_buffer_high
    assert sorted(p.split(":")[0] for p in problems) == [
        "idle_timeout", "max_connections", "max_connexions", "write_buffer_high"]
    assert "expected a positive integer, got 2.5" in " ".join(problems)


def test_load_limits_from_the_state_dir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert load_limits(tmp_path) == Limits()
    path = StatePaths(tmp_path).config / "management.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"body_timeout": 5, "max_queued": "many"}))
    with caplog.at_level(logging.ERROR):
        limits = load_limits(tmp_path)
    assert limits.body_timeout == 5.0 and limits.max_queued == Limits().max_queued
    assert "max_queued: expected a positive integer, got 'many'" in caplog.text
    path.write_text("{not json")
    assert load_limits(tmp_path) == Limits()
    path.write_text("[1]")
    assert load_limits(tmp_path) == Limits()


@pytest.mark.parametrize(("address", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # a v4 client on a dual-stack socket
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same host's /64: one key
    ("fe80::1%eth0", "fe80::/64"),
    ("-", "-"),
])
def test_per_ip_cap_counts_v4_addresses_and_v6_slash_64s(address: str, key: str) -> None:
    assert client_key(address) == key
