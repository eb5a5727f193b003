"""Admin UI login sessions: random tokens in memory, stored only as their SHA-256.

A session ends at logout, after ``idle`` seconds without a request, or after
``lifetime`` seconds in any case. Restarting the runtime logs everybody out,
which is what an appliance admin expects after an upgrade.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "lockgate_session"


@dataclass
class Session:
    user: str
    expires: float
    last_seen: float
    credential: str | None = None  # digest of the password hash at login (see AdminUi)
    # Sent in every state-changing form and compared in constant time: a page on another
    # site cannot read it, so it cannot forge the form (SameSite=Strict is the second lock).
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class Sessions:
    def __init__(self, lifetime: float = 8 * 3600, idle: float = 30 * 60,
                 clock: Callable[[], float] = time.monotonic, limit: int = 1000) -> None:
        self.lifetime = lifetime
        self.idle = idle
        self.clock = clock
        self.limit = limit
        self._by_digest: dict[bytes, Session] = {}

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def create(self, user: str, credential: str | None = None) -> str:
        now = self.clock()
        self._expire(now)
        if len(self._by_digest) >= self.limit:  # bound memory: drop the stalest session
            oldest = min(self._by_digest, key=lambda d: self._by_digest[d].last_seen)
            del self._by_digest[oldest]
        token = secrets.token_urlsafe(32)
        self._by_digest[self._digest(token)] = Session(user, now + self.lifetime, now, credential)
        return token

    def lookup(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = self.clock()
        session = self._by_digest.get(self._digest(token))
        if session is None:
            return None
        if now >= session.expires or now - session.last_seen >= self.idle:
            del self._by_digest[self._digest(token)]
            return None
        session.last_seen = now
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._by_digest.pop(self._digest(token), None)

    def _expire(self, now: float) -> None:
        for digest in [d for d, s in self._by_digest.items()
                       if now >= s.expires or now - s.last_seen >= self.idle]:
            del self._by_digest[digest]

    def __len__(self) -> int:
        return len(self._by_digest)


def cookie_value(header: str | None, cookie: str) -> str | None:
    """The value of cookie ``cookie`` in a ``Cookie:`` header, if any."""
    if not header:
        return None
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == cookie and value:
            return value
    return None


def cookie_token(header: str | None) -> str | None:
    """The session token from a ``Cookie:`` header, if any."""
    return cookie_value(header, COOKIE)


def set_cookie(token: str, max_age: int) -> str:
    return f"{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"


def clear_cookie() -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
