"""runtime/licence.py (acceptance, signed keys, Community Edition fallback), the
token bucket the workers throttle with, and what /metrics says about the licence."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lockgate.firstboot.apply.licence import accept_licence
from lockgate.paths import StatePaths
from lockgate.runtime import metrics
from lockgate.runtime.licence import (
    DEV_ENV,
    NOT_ACCEPTED,
    check_key,
    key_file,
    licence_limits,
    licence_state,
    sign_licence,
)
from lockgate.runtime.proxy.context import Context, Limiter, VsRuntime, VsStats
from lockgate.runtime.proxy.tcp_transport import TcpBackend, TcpClient

GOOD = {"serial": "L-7", "licensee": "Example", "bandwidth_mbit_s": 200,
        "max_cluster_size": 8, "expires": "2030-06-30"}


@pytest.fixture
def appliance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path,
                                                                         Ed25519PrivateKey]:
    """(root, state dir, issuer key) with the issuer trusted; no development licence."""
    monkeypatch.delenv(DEV_ENV, raising=False)
    keys = tmp_path / "keys"
    keys.mkdir()
    issuer = Ed25519PrivateKey.generate()
    (keys / "issuer.pub").write_bytes(issuer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("LOCKGATE_LICENCE_KEYS_DIR", str(keys))
    root = tmp_path / "root"
    state = StatePaths.under_root(root).base
    state.joinpath("config").mkdir(parents=True)
    return root, state, issuer


def test_not_accepted_until_recorded(appliance: tuple[Path, Path, Any]) -> None:
    root, state, _ = appliance
    lic = licence_state(state)
    assert not lic.accepted and lic.edition == "community"
    assert lic.message.startswith(NOT_ACCEPTED)
    accept_licence(root, False)
    assert not licence_state(state).accepted
    accept_licence(root, True)
    lic = licence_state(state)
    assert lic.accepted and lic.bandwidth_mbit_s == 10 and lic.max_cluster_size == 4
    assert lic.message == ("no licence key: running as the Community Edition "
                           "(10 Mb/s, up to 4 cluster members)")
    StatePaths(state).licence.write_text("{damaged")
    assert not licence_state(state).accepted  # damaged record: not accepted


def test_valid_key_applies_its_limits(appliance: tuple[Path, Path, Any]) -> None:
    root, state, issuer = appliance
    accept_licence(root, True)
    key_file(state).write_bytes(sign_licence(issuer, GOOD))
    lic = licence_state(state, today=date(2030, 6, 30))  # the last valid day
    assert (lic.edition, lic.bandwidth_mbit_s, lic.max_cluster_size, lic.expires, lic.serial,
            lic.message) == ("licensed", 200, 8, "2030-06-30", "L-7", "")
    assert lic.bandwidth_bytes_s == 25_000_000
    assert licence_limits(state)["max_cluster_size"] in (8, 4)  # 4 once the date has passed


@pytest.mark.parametrize(("change", "reason"), [
    ({"expires": "2020-01-31"}, "the licence key expired on 2020-01-31"),
    ({"bandwidth_mbit_s": -1}, "no valid bandwidth_mbit_s"),
    ({"max_cluster_size": 0}, "no valid max_cluster_size"),
    ({"expires": "someday"}, "is not a date"),
])
def test_bad_keys_fall_back_to_community(appliance: tuple[Path, Path, Any],
                                         change: dict[str, Any], reason: str) -> None:
    root, state, issuer = appliance
    accept_licence(root, True)
    key_file(state).write_bytes(sign_licence(issuer, {**GOOD, **change}))
    lic = licence_state(state, today=date(2026, 1, 1))
    assert lic.accepted and lic.edition == "community" and lic.bandwidth_mbit_s == 10
    assert reason in lic.message and "running as the Community Edition" in lic.message


def test_forged_and_garbled_keys(appliance: tuple[Path, Path, Any]) -> None:
    root, state, issuer = appliance
    accept_licence(root, True)
    forged = sign_licence(Ed25519PrivateKey.generate(), GOOD)
    key_file(state).write_bytes(forged)
    assert "signature is invalid" in licence_state(state).message
    doc = json.loads(sign_licence(issuer, GOOD))
    doc["licence"]["bandwidth_mbit_s"] = 0  # edited after signing
    key_file(state).write_text(json.dumps(doc))
    assert "signature is invalid" in licence_state(state).message
    key_file(state).write_bytes(b"\x00\xff garbage")
    assert "not JSON" in licence_state(state).message
    key_file(state).write_text('{"licence": {}, "signature": "***"}')
    assert "not base64" in licence_state(state).message


def test_no_trusted_keys_means_no_licensed_edition(appliance: tuple[Path, Path, Any],
                                                   tmp_path: Path) -> None:
    _, _, issuer = appliance
    with pytest.raises(Exception, match="signature is invalid"):
        check_key(sign_licence(issuer, GOOD), folder=tmp_path / "empty")


def test_development_licence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DEV_ENV, "1")
    lic = licence_state(tmp_path)
    assert lic.accepted and lic.bandwidth_mbit_s == 0 and lic.max_cluster_size == 0
    assert "not for production" in lic.message


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


def test_limiter_keeps_the_rate_and_asks_for_pauses() -> None:
    clock = Clock()
    limiter = Limiter(clock, 1000.0, 100.0)  # type: ignore[arg-type]
    assert limiter.take(100) == 0.0  # the burst
    assert limiter.take(50) == pytest.approx(0.05)  # in debt: wait until it is paid
    clock.now += 0.051
    assert limiter.take(0) == 0.0
    # Over a long run, what is taken never exceeds rate * time + burst.
    taken = 0
    for _ in range(1000):
        wait = limiter.take(64)
        taken += 64
        clock.now += max(wait, 0.001)
    assert taken <= 1000.0 * (clock.now - 100.051) + 100 + 64


def test_metrics_say_why_nothing_is_proxied() -> None:
    text = metrics.render({"virtual_servers": {}, "pools": {}, "licence": {
        "accepted": False, "edition": "community", "bandwidth_mbit_s": 10,
        "message": NOT_ACCEPTED}}, 3)
    assert "lockgate_licence_accepted 0" in text
    assert "lockgate_licence_bandwidth_limit_bits_per_second 10000000" in text
    assert f'lockgate_licence_info{{edition="community",message="{NOT_ACCEPTED}"}} 1' in text


class NullTransport:
    """Takes writes and pause requests; nothing else (a relay's far side)."""

    def __init__(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def relay_cost(limiter: Limiter | None, calls: int) -> float:
    """Seconds per TcpBackend.data_received (node -> client relay of 16 KiB)."""
    from lockgate.runtime.config.model import VirtualServer

    loop = asyncio.new_event_loop()
    try:
        ctx = Context(loop)
        ctx.limiter = limiter
        vs = VsRuntime(VirtualServer.__new__(VirtualServer), VsStats())
        object.__setattr__(vs.config, "idle_timeout", 30.0)
        client = TcpClient(ctx, vs)
        client.transport = NullTransport()  # type: ignore[assignment]
        backend = TcpBackend(client)
        backend.transport = NullTransport()  # type: ignore[assignment]
        data = b"z" * 16384
        start = time.perf_counter()
        for _ in range(calls):
            backend.data_received(data)
        ctx.flush()
        return (time.perf_counter() - start) / calls
    finally:
        loop.close()


def test_no_limit_costs_nothing_measurable_per_read() -> None:
    """A licence without a bandwidth limit leaves ``ctx.limiter`` None: the relay then
    pays one attribute test per read. Measured against the same relay with a bucket
    (never in debt), the unlimited path must not be slower; both numbers are printed."""
    calls = 10000
    none: list[float] = []
    bucket: list[float] = []
    for _ in range(7):  # interleaved, best of each: the machine is shared and noisy
        none.append(relay_cost(None, calls))
        bucket.append(relay_cost(Limiter(_FixedLoop(), 1e15, 1e15), calls))  # type: ignore[arg-type]
    best_none, best_bucket = min(none), min(bucket)
    print(f"relay per read: no limit {best_none * 1e9:.0f} ns, with a bucket "
          f"{best_bucket * 1e9:.0f} ns")
    assert best_none <= best_bucket * 1.1


class _FixedLoop:
    def time(self) -> float:
        return 1.0
