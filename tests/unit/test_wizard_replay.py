"""Replay files: parsing, the exact errors, and the round trip from --record-to."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from licence_keys import signed_key, trust_issuer

from lockgate.errors import BadInput
from lockgate.firstboot.wizard.model import Answers
from lockgate.firstboot.wizard.prompter import ReplayAnswers
from lockgate.firstboot.wizard.questions import (
    ACCEPT_LICENSE,
    LICENSE_KEY,
    NTP_SERVER,
    PASSWORD,
    SSH_INTRUSION_PREVENTION,
    InvalidAnswer,
    Question,
    parse_password,
    timezone_question,
)
from lockgate.firstboot.wizard.replay import format_replay, parse_replay, read_replay, write_replay


def test_parse_splits_at_the_first_equals_and_keeps_the_value_verbatim() -> None:
    text = "# comment\n\n  password= pa=ss word \naccept_license=Yes\r\nTimezone=UTC\n"
    assert parse_replay(text) == {"password": " pa=ss word ", "accept_license": "Yes",
                                  "timezone": "UTC"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("password\n", "replay file: line 1: expected key=value"),
        ("# x\npasword=secret\n", "replay file: line 2: unknown key 'pasword'"),
        ("timezone=UTC\ntimezone=UTC\n", "replay file: line 2: 'timezone' is given twice"),
    ],
)
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_replay(text)
    assert caught.value.format_message().startswith(message)
    assert caught.value.exit_code == 2


def test_read_replay_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="replay file: cannot read"):
        read_replay(tmp_path / "none.txt")


def sample(password: str = "secret-1", key: Path | None = None) -> Answers:
    return Answers(password=password, timezone="Europe/Paris", ntp_server="pool.ntp.org",
                   ssh_intrusion_prevention=False, licence_key=key)


def replay_back(text: str) -> Answers:
    source = ReplayAnswers(parse_replay(text))
    return Answers(
        password=source.answer(PASSWORD),
        timezone=source.answer(timezone_question("UTC")),
        ntp_server=source.answer(NTP_SERVER),
        ssh_intrusion_prevention=source.answer(SSH_INTRUSION_PREVENTION),
        licence_key=source.answer(LICENSE_KEY),
        accept_license=source.answer(ACCEPT_LICENSE),
    )


def test_format_then_parse_gives_the_same_answers(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "k.key"
    key.write_bytes(signed_key(trust_issuer(tmp_path / "issuers", monkeypatch)))
    for answers in (sample(), sample(key=key.resolve())):
        assert replay_back(format_replay(answers)) == answers


def test_a_services_director_registration_replays_through_the_wizard_steps(
        tmp_path: Path) -> None:
    from test_firstboot_apply_register import make_cert

    from lockgate.firstboot.wizard.flow import Context, collect_answers

    cert = make_cert()
    answers = Answers(password="secret-1", timezone="UTC", ntp_server=None,
                      ssh_intrusion_prevention=True, licence_key=None,
                      sd_address="sd.example.com:8100", sd_registration_key="policy-7",
                      sd_cert=cert.sd_cert)
    text = format_replay(answers)
    assert "register_sd=y\nsd_address=sd.example.com:8100\n" in text
    context = Context(root=tmp_path, current_timezone="UTC", licence_text=None,
                      already_configured=False)
    assert collect_answers(ReplayAnswers(parse_replay(text)), context) == answers
    with pytest.raises(BadInput, match=r"^services director: the replay file has no "
                                       r"'sd_registration_key=' line"):
        collect_answers(ReplayAnswers(parse_replay(
            "password=secret-1\naccept_license=y\nregister_sd=y\nsd_address=sd.x:1\n")),
            context)


@given(st.text(min_size=6, alphabet=st.characters(blacklist_characters="\r\n\0")))
def test_any_valid_password_survives_the_round_trip(password: str) -> None:
    try:
        parse_password(password)
    except InvalidAnswer:
        return  # only passwords the wizard accepts are ever recorded
    assert replay_back(format_replay(sample(password))).password == password


def test_missing_answers_fall_back_to_defaults_except_the_required_ones() -> None:
    source = ReplayAnswers({"password": "secret-1"})
    assert source.answer(timezone_question("Asia/Tokyo")) == "Asia/Tokyo"
    assert source.answer(NTP_SERVER) is None
    assert source.answer(SSH_INTRUSION_PREVENTION) is True
    assert source.answer(LICENSE_KEY) is None
    with pytest.raises(BadInput, match=r"^licence: the replay file has no 'accept_license=' line$"):
        source.answer(ACCEPT_LICENSE)
    with pytest.raises(BadInput, match=r"^password: the replay file has no 'password=' line$"):
        ReplayAnswers({}).answer(PASSWORD)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("password", "abc", "password: the password must be at least 6 characters long"),
        ("timezone", "Mars/Base", "timezone: unknown timezone 'Mars/Base'"),
        ("ntp_server", "bad host", "ntp: 'bad host' is not a valid host name"),
        ("ssh_intrusion_prevention", "sometimes", "security: answer y or n"),
        ("license_key", "/nonexistent/x.key", "licence key: /nonexistent/x.key: no such file"),
    ],
)
def test_bad_replay_answers_name_the_step(key: str, value: str, message: str) -> None:
    questions: dict[str, Question[Any]] = {
        "password": PASSWORD, "timezone": timezone_question("UTC"), "ntp_server": NTP_SERVER,
        "ssh_intrusion_prevention": SSH_INTRUSION_PREVENTION, "license_key": LICENSE_KEY}
    question = questions[key]
    with pytest.raises(BadInput) as caught:
        ReplayAnswers({key: value}).answer(question)
    assert caught.value.format_message().startswith(message)


def test_write_replay_is_0600_even_over_a_looser_file(tmp_path: Path) -> None:
    path = tmp_path / "answers.txt"
    path.write_text("old")
    path.chmod(0o644)
    write_replay(path, sample())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "password=secret-1\n" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["answers.txt"]  # no temporary file left


def test_passwords_with_unusual_separators_round_trip() -> None:
    password = "form\x0cfeed\u2028line\x85sep"
    assert replay_back(format_replay(sample(password))).password == password


def test_write_replay_does_not_follow_a_planted_temporary_symlink(tmp_path: Path) -> None:
    """--record-to in a shared folder (/tmp): a symlink at the temporary name must not
    make the password land in (or truncate) the file it points at."""
    import os

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    path = tmp_path / "answers.txt"
    (tmp_path / f".answers.txt.tmp{os.getpid()}").symlink_to(victim)
    write_replay(path, sample())
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not path.is_symlink() and "password=secret-1\n" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
