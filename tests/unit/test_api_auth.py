"""Login checks: users file, per-client failure limit, success cache, Basic header parsing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path

import pytest

from lockgate.passwords import hash_password
from lockgate.runtime.api.auth import Authenticator, FailureLimiter, Outcome, parse_basic


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_users(path: Path, **users: str) -> None:
    doc = {"users": {u: {"hash": hash_password(p), "role": "admin"} for u, p in users.items()}}
    path.write_text(json.dumps(doc))


def test_limiter_locks_after_max_failures_and_recovers() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=3, window=60, lockout=30, clock=clock)
    for _ in range(2):
        limiter.record_failure("10.0.0.1")
        assert limiter.retry_after("10.0.0.1") == 0
    limiter.record_failure("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 30
    assert limiter.retry_after("10.0.0.2") == 0  # other clients unaffected
    clock.now += 29.5
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now += 1
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.record_failure("10.0.0.1")  # the count started again after the lockout
    assert limiter.retry_after("10.0.0.1") == 0


def test_limiter_window_slides() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=3, window=10, lockout=30, clock=clock)
    limiter.record_failure("c")
    limiter.record_failure("c")
    clock.now += 11  # both fell out of the window
    limiter.record_failure("c")
    assert limiter.retry_after("c") == 0


def test_authenticator_outcomes(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    clock = FakeClock()
    auth = Authenticator(users, FailureLimiter(max_failures=2, window=60, lockout=5, clock=clock),
                         clock=clock)

    def check(client: str, user: str | None, password: str | None) -> Outcome:
        return asyncio.run(auth.check(client, user, password)).outcome

    assert check("a", "admin", "pw") is Outcome.UNCONFIGURED
    write_users(users, admin="s3cret")
    assert check("a", None, None) is Outcome.MISSING
    assert check("a", "admin", "s3cret") is Outcome.OK
    assert check("a", "nobody", "s3cret") is Outcome.BAD
    assert check("a", "admin", "wrong") is Outcome.LOCKED  # second failure hits the limit
    assert check("a", "admin", "s3cret") is Outcome.LOCKED  # even the right password waits
    assert check("b", "admin", "s3cret") is Outcome.OK
    clock.now += 6
    assert check("a", "admin", "s3cret") is Outcome.OK


def test_success_is_cached_without_the_password_and_dropped_on_change(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    write_users(users, admin="first-password")
    auth = Authenticator(users)
    assert asyncio.run(auth.check("a", "admin", "first-password")).outcome is Outcome.OK
    started = time.perf_counter()
    for _ in range(50):
        assert asyncio.run(auth.check("a", "admin", "first-password")).outcome is Outcome.OK
    assert time.perf_counter() - started < 1.0  # 50 scrypt checks would take seconds
    for key in auth._cache:
        assert b"first-password" not in key
    write_users(users, admin="second-password")
    os.utime(users, ns=(time.time_ns(), time.time_ns() + 1_000_000))  # a new mtime for sure
    assert asyncio.run(auth.check("a", "admin", "first-password")).outcome is Outcome.BAD
    assert asyncio.run(auth.check("a", "admin", "second-password")).outcome is Outcome.OK


def test_unreadable_users_file_refuses_everyone(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text("{not json")
    auth = Authenticator(users)
    assert asyncio.run(auth.check("a", "admin", "x")).outcome is Outcome.BAD


@pytest.mark.parametrize(("header", "expected"), [
    ("Basic " + base64.b64encode(b"admin:pa:ss").decode(), ("admin", "pa:ss")),
    ("basic " + base64.b64encode("jos\u00e9:\u00fc".encode()).decode(), ("jos\u00e9", "\u00fc")),
    ("Basic " + base64.b64encode(b"no-colon").decode(), (None, None)),
    ("Basic !!!notbase64", (None, None)),
    ("Bearer abc", (None, None)),
    ("", (None, None)),
    (None, (None, None)),
])
def test_parse_basic(header: str | None, expected: tuple[str | None, str | None]) -> None:
    assert parse_basic(header) == expected


def test_concurrent_guesses_cannot_outrun_the_limiter(tmp_path: Path) -> None:
    """Guesses sent all at once (many connections) all passed the lock check before any
    failure was counted, so 5 tries per minute became as many as the attacker sent.
    Once the client is locked, a guess still in flight is answered LOCKED, right or not."""
    users = tmp_path / "users.json"
    write_users(users, admin="the-right-one")
    auth = Authenticator(users, FailureLimiter(max_failures=3, window=60, lockout=60))

    async def burst() -> list[Outcome]:
        guesses = [f"wrong-{i}" for i in range(12)] + ["the-right-one"]
        verdicts = await asyncio.gather(*(auth.check("10.9.9.9", "admin", g) for g in guesses))
        return [v.outcome for v in verdicts]

    outcomes = asyncio.run(burst())
    assert outcomes[-1] is Outcome.LOCKED  # the right password, after the lock: no answer
    assert outcomes.count(Outcome.BAD) < 3  # the 3rd failure is answered LOCKED already
    assert Outcome.OK not in outcomes
