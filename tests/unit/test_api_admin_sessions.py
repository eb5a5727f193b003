"""Admin UI sessions: random tokens, idle and absolute expiry, cookie attributes."""

from __future__ import annotations

from lockgate.runtime.admin.sessions import Sessions, clear_cookie, cookie_token, set_cookie


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_session_lifecycle() -> None:
    clock = FakeClock()
    sessions = Sessions(lifetime=100, idle=30, clock=clock)
    token = sessions.create("admin")
    assert len(token) >= 40 and token != sessions.create("admin")
    found = sessions.lookup(token)
    assert found is not None and found.user == "admin"
    assert sessions.lookup("guessed") is None
    clock.now = 25
    assert sessions.lookup(token) is not None  # refreshed the idle timer
    clock.now = 54
    assert sessions.lookup(token) is not None
    clock.now = 85
    assert sessions.lookup(token) is None  # idle for 31 s


def test_absolute_lifetime_and_logout() -> None:
    clock = FakeClock()
    sessions = Sessions(lifetime=60, idle=30, clock=clock)
    token = sessions.create("admin")
    for t in range(20, 61, 20):
        clock.now = t
        found = sessions.lookup(token)
        assert (found is not None) == (t < 60)
    other = sessions.create("admin")
    sessions.end(other)
    assert sessions.lookup(other) is None


def test_tokens_are_not_kept_in_memory_and_count_is_bounded() -> None:
    sessions = Sessions(limit=3)
    tokens = [sessions.create(f"u{i}") for i in range(5)]
    assert len(sessions) == 3
    assert all(t.encode() not in k for t in tokens for k in sessions._by_digest)
    assert sessions.lookup(tokens[-1]) is not None


def test_cookie_header_parsing_and_attributes() -> None:
    assert cookie_token("a=b; lockgate_session=tok123; c=d") == "tok123"
    assert cookie_token("lockgate_session=") is None
    assert cookie_token(None) is None
    cookie = set_cookie("tok", 3600)
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=3600"):
        assert attribute in cookie
    assert "Max-Age=0" in clear_cookie()
