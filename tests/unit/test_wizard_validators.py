"""The wizard's validators: what each accepts, normalises and refuses (and why)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from licence_keys import signed_key, trust_issuer

from lockgate.firstboot.wizard.questions import (
    InvalidAnswer,
    licence_key_help,
    parse_licence_acceptance,
    parse_licence_key_path,
    parse_ntp_server,
    parse_password,
    parse_sd_address,
    parse_sd_cert,
    parse_sd_registration_key,
    parse_timezone,
    parse_yes_no,
    timezone_help,
)


@pytest.mark.parametrize("password", ["secret", "six ch", " lead and trail ", "pässwörd", "a" * 200])
def test_password_accepted_verbatim(password: str) -> None:
    assert parse_password(password) == password


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "must not be empty"),
        ("      ", "only spaces"),
        ("\t \t  ", "only spaces"),
        ("abc", "at least 6 characters"),
        ("abcde", "at least 6 characters"),
        ("abc\ndefg", "line breaks"),
        ("abcdef\0", "NUL"),
    ],
)
def test_password_refused_with_reason(password: str, reason: str) -> None:
    with pytest.raises(InvalidAnswer, match=reason):
        parse_password(password)


@given(st.text(min_size=6).filter(lambda t: t.strip() and not set(t) & {"\r", "\n", "\0"}))
def test_any_printable_long_enough_password_is_kept(password: str) -> None:
    assert parse_password(password) == password


@pytest.mark.parametrize(("text", "value"), [("y", True), ("YES", True), (" true ", True),
                                             ("n", False), ("No", False), ("FALSE", False)])
def test_yes_no(text: str, value: bool) -> None:
    assert parse_yes_no(text) is value


@pytest.mark.parametrize("text", ["", "maybe", "yess", "1"])
def test_yes_no_refuses_anything_else(text: str) -> None:
    with pytest.raises(InvalidAnswer, match="answer y or n"):
        parse_yes_no(text)


@pytest.mark.parametrize(("text", "value"), [("accept", True), ("ACCEPT", True), ("y", True),
                                             ("Yes", True), ("", False), ("n", False),
                                             ("no", False)])
def test_licence_acceptance_needs_an_explicit_yes(text: str, value: bool) -> None:
    assert parse_licence_acceptance(text) is value


@pytest.mark.parametrize("text", ["ok", "sure", "accepted", "I agree"])
def test_licence_acceptance_refuses_vague_answers(text: str) -> None:
    with pytest.raises(InvalidAnswer, match="type 'accept'"):
        parse_licence_acceptance(text)


@pytest.mark.parametrize(("text", "zone"), [("Europe/London", "Europe/London"),
                                            ("  UTC ", "UTC"),
                                            ("america/new_york", "America/New_York"),
                                            ("America/Los_Angeles", "America/Los_Angeles")])
def test_timezone_accepts_iana_names_in_any_case(text: str, zone: str) -> None:
    assert parse_timezone(text) == zone


@pytest.mark.parametrize("text", ["", "Mars/Olympus", "/etc/passwd", "../../etc/passwd",
                                  "Europe/", "localtime", "GMT+25"])
def test_timezone_refuses_what_zoneinfo_does_not_know(text: str) -> None:
    with pytest.raises(InvalidAnswer):
        parse_timezone(text)


def test_timezone_help_lists_regions_then_zones() -> None:
    assert "Europe" in timezone_help("")
    assert "Europe/Berlin" in timezone_help("europe").splitlines()
    assert "America/Argentina/Buenos_Aires" in timezone_help("Buenos").splitlines()
    assert timezone_help("Atlantis") == "no timezone matches 'Atlantis'"


@pytest.mark.parametrize(("text", "value"), [("", None), ("none", None), ("pool.ntp.org", "pool.ntp.org"),
                                             ("time.example.com.", "time.example.com"),
                                             ("192.0.2.1", "192.0.2.1"), ("2001:db8::1", "2001:db8::1"),
                                             ("ntp1", "ntp1")])
def test_ntp_server(text: str, value: str | None) -> None:
    assert parse_ntp_server(text) == value


@pytest.mark.parametrize("text", ["not a host", "-bad.example", "a..b", "x" * 64 + ".com",
                                  "host_name.example", "ntp.example.org:123"])
def test_ntp_server_refuses_non_hosts(text: str) -> None:
    with pytest.raises(InvalidAnswer, match="not a valid host name"):
        parse_ntp_server(text)


def test_licence_key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "site.key"
    key.write_bytes(signed_key(trust_issuer(tmp_path / "issuers", monkeypatch)))
    assert parse_licence_key_path(f"  {key}  ") == key.resolve()
    assert parse_licence_key_path("") is None
    assert parse_licence_key_path("Community") is None
    assert "Community Edition" in licence_key_help("")


def test_licence_key_path_refusals(tmp_path: Path) -> None:
    empty = tmp_path / "empty.key"
    empty.touch()
    huge = tmp_path / "huge.key"
    huge.write_bytes(b"x" * (1024 * 1024 + 1))
    cases = {str(tmp_path / "nope.key"): "no such file", str(tmp_path): "not a regular file",
             str(empty): "is empty", str(huge): "too big"}
    for text, reason in cases.items():
        with pytest.raises(InvalidAnswer, match=reason):
            parse_licence_key_path(text)


def test_a_licence_key_is_checked_as_the_runtime_checks_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key the runtime would ignore is refused with the runtime's reason."""
    issuer = trust_issuer(tmp_path / "issuers", monkeypatch)
    cases = {b"LICENCE-KEY-DATA\n": "not a lockgate licence key",
             signed_key(None): "signature is invalid",
             signed_key(issuer, expires="2001-01-01"): "expired on 2001-01-01",
             signed_key(issuer, max_cluster_size=0): "no valid max_cluster_size"}
    for number, (data, reason) in enumerate(cases.items()):
        path = tmp_path / f"{number}.key"
        path.write_bytes(data)
        with pytest.raises(InvalidAnswer, match=reason) as caught:
            parse_licence_key_path(str(path))
        assert str(caught.value).startswith(f"{path}: ")


def test_services_director_answers(tmp_path: Path) -> None:
    from test_firstboot_apply_register import make_cert

    assert parse_sd_address(" sd.example.com:8100 ") == "sd.example.com:8100"
    assert parse_sd_address("[2001:db8::1]:443") == "[2001:db8::1]:443"
    for bad in ("", "sd.example.com", "sd.example.com:0", "bad host:80"):
        with pytest.raises(InvalidAnswer):
            parse_sd_address(bad)
    assert parse_sd_registration_key(" policy-7 ") == "policy-7"
    for bad in ("", "two words", "x" * 257):
        with pytest.raises(InvalidAnswer):
            parse_sd_registration_key(bad)
    cert = make_cert()
    assert parse_sd_cert(cert.pem) == cert.sd_cert  # pasted with its BEGIN/END lines
    assert parse_sd_cert(cert.sd_cert) == cert.sd_cert
    assert parse_sd_cert("  ") is None
    with pytest.raises(InvalidAnswer, match=r"X\.509"):
        parse_sd_cert("aGVsbG8=")
