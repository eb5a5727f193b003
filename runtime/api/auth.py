"""Password checks for the REST API and Admin UI: users file, rate limit, cache.

Users live in ``StatePaths(state_dir).users`` (written by first boot):
``{"users": {"admin": {"hash": "scrypt$...", "role": "admin"}}}``. scrypt is
deliberately slow, so checks run in a worker thread, and a successful check is
remembered for a short while under an HMAC of the credentials (keyed with a
per-process random key -- never the password itself), so a script making many
calls stays fast. Failed checks are counted per client IP: after
``max_failures`` within ``window`` seconds that IP gets 429 for ``lockout``
seconds, whatever it sends. Other clients are not affected, and a success
neither counts nor is slowed down. A success also marks the connection it came
on as authenticated, so the server's connection caps never evict it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import enum
import functools
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lockgate.files import file_stamp
from lockgate.passwords import hash_password, verify_password
from lockgate.runtime.api.http import mark_authenticated

log = logging.getLogger(__name__)



@functools.cache
def _dummy_hash() -> str:
    """A valid hash of a random password: unknown users cost as much as known ones."""
    return hash_password(secrets.token_urlsafe(16))


@functools.cache
def _scrypt_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Two threads for scrypt (16 MiB, ~50 ms each): a burst of logins neither
    starves the event loop's other thread work nor eats the memory."""
    return concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="lockgate-scrypt")


class Outcome(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials offered
    BAD = "bad"  # wrong user or password
    LOCKED = "locked"  # too many failures from this client
    UNCONFIGURED = "unconfigured"  # no users file yet


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    user: str | None = None
    retry_after: int = 0  # seconds, for LOCKED


class FailureLimiter:
    """Counts failed logins per client IP in a sliding window."""

    def __init__(self, max_failures: int = 5, window: float = 60.0, lockout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it is not locked out."""
        until = self._locked_until.get(client)
        if until is None:
            return 0
        left = until - self.clock()
        if left <= 0:
            del self._locked_until[client]
            return 0
        return max(1, math.ceil(left))

    def record_failure(self, client: str) -> None:
        now = self.clock()
        times = self._failures.setdefault(client, deque())
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures:
            self._locked_until[client] = now + self.lockout
            times.clear()
            log.warning("too many failed logins from %s; locked out for %d s",
                        client, self.lockout)
        self._prune(now)

    def _prune(self, now: float) -> None:
        # Bound memory under a spray from many addresses: forget stale entries.
        if len(self._failures) > 10000:
            for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window]:
                del self._failures[key]


class Authenticator:
    """Checks user/password pairs against the users file (async; scrypt in a thread)."""

    def __init__(self, users_file: Path, limiter: FailureLimiter | None = None,
                 cache_ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.users_file = users_file
        self.limiter = limiter or FailureLimiter(clock=clock)
        self.cache_ttl = cache_ttl
        self.clock = clock
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, str]] = {}
        self._users: dict[str, dict[str, str]] = {}
        self._users_stamp: tuple[int, int, int] | None = None

    def configured(self) -> bool:
        return self.users_file.exists()

    def _load_users(self) -> dict[str, dict[str, str]] | None:
        stamp = file_stamp(self.users_file)
        if stamp is None:
            return None
        if stamp != self._users_stamp:
            try:
                data = json.loads(self.users_file.read_text())
                users = data["users"]
                if not isinstance(users, dict):
                    raise TypeError("users is not an object")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("%s is unreadable (%s); refusing all logins", self.users_file, exc)
                users = {}
            self._users = {str(k): v for k, v in users.items() if isinstance(v, dict)}
            self._users_stamp = stamp
            self._cache.clear()  # a changed password must not stay valid through the cache
        return self._users

    def credential_tag(self, user: str) -> str | None:
        """A digest of ``user``'s stored hash, None when the user is gone.

        Sessions remember it at login and compare it later, so a new password
        (``z-reset-password``) or a removed user ends the sessions opened before.
        """
        entry = (self._load_users() or {}).get(user)
        stored = entry.get("hash") if entry else None
        if not isinstance(stored, str):
            return None
        return hashlib.sha256(stored.encode()).hexdigest()

    async def check(self, client: str, user: str | None, password: str | None) -> Verdict:
        wait = self.limiter.retry_after(client)
        if wait:
            return Verdict(Outcome.LOCKED, retry_after=wait)
        users = self._load_users()
        if users is None:
            return Verdict(Outcome.UNCONFIGURED)
        if user is None or password is None:
            return Verdict(Outcome.MISSING)
        key = hmac.new(self._cache_key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        cached = self._cache.get(key)
        now = self.clock()
        if cached and cached[0] > now:
            mark_authenticated()
            return Verdict(Outcome.OK, user)
        entry = users.get(user)
        stored = entry.get("hash") if entry else None
        stored = stored if isinstance(stored, str) else _dummy_hash()
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(_scrypt_pool(), verify_password, password, stored)
        # Guesses sent all at once each passed the check above before any of them failed;
        # one that finishes after the lockout gets no answer, right or wrong, so a burst
        # is worth no more tries than a sequence.
        wait = self.limiter.retry_after(client)
        if wait:
            if not ok:
                self.limiter.record_failure(client)
            return Verdict(Outcome.LOCKED, retry_after=self.limiter.retry_after(client) or wait)
        if ok and entry is not None:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[key] = (now + self.cache_ttl, user)
            mark_authenticated()
            return Verdict(Outcome.OK, user)
        self.limiter.record_failure(client)
        # Counted, then re-checked: the failure that reaches the limit is answered 429.
        wait = self.limiter.retry_after(client)
        if wait:
            return Verdict(Outcome.LOCKED, retry_after=wait)
        return Verdict(Outcome.BAD)


def parse_basic(header: str | None) -> tuple[str | None, str | None]:
    """``Authorization: Basic ...`` -> (user, password); (None, None) when absent/invalid."""
    if not header:
        return None, None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return user, password
