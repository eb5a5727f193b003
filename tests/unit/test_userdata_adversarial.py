"""Hostile user-data: huge, deep, tricky encodings. Bounded time, clean errors, no leaks."""

from __future__ import annotations

import base64
import gzip
import time
import zlib

import pytest

from lockgate.firstboot.settings import Settings
from lockgate.firstboot.userdata import MAX_SIZE, MAX_UNKNOWN_WARNINGS, UserDataError, parse

# Generous: the worst case measured is ~1.5 s on a shared 2-core machine.
TIME_LIMIT_S = 15.0


def _fit(words: list[str], sep: str = " ", head: str = "") -> bytes:
    """As many words as fit in MAX_SIZE bytes."""
    out, size = [], len(head)
    for word in words:
        if size + len(word) + len(sep) > MAX_SIZE:
            break
        out.append(word)
        size += len(word) + len(sep)
    return (head + sep.join(out)).encode()


def _timed_parse(data: bytes) -> tuple[Settings | None, list[str], str]:
    began = time.monotonic()
    try:
        settings, warnings = parse(data)
        error = ""
    except UserDataError as exc:
        settings, warnings, error = None, [], exc.format_message()
    elapsed = time.monotonic() - began
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.1f} s"
    return settings, warnings, error


def test_many_unknown_keys_cap_the_warnings() -> None:
    settings, warnings, error = _timed_parse(_fit([f"k{i}=v" for i in range(300_000)]))
    assert error == ""
    assert settings is not None and len(settings.unknown) > 100_000
    assert len(warnings) == MAX_UNKNOWN_WARNINGS + 1
    assert warnings[-1].startswith("... and ") and warnings[-1].endswith(" more unknown user-data keys ignored")


def test_many_unknown_keys_in_cloud_config() -> None:
    data = _fit([f"k{i}: v" for i in range(300_000)], "\n", "#cloud-config\n")
    settings, warnings, error = _timed_parse(base64.b64encode(gzip.compress(data)))
    assert error == ""
    assert settings is not None and len(warnings) == MAX_UNKNOWN_WARNINGS + 1


@pytest.mark.parametrize(
    "data",
    [
        b"\n" * MAX_SIZE,
        b"\r\n" * (MAX_SIZE // 2),
        b"#\n" * (MAX_SIZE // 2),
        b" " * MAX_SIZE,
        b"password=" + b"p" * (MAX_SIZE - 9),
    ],
    ids=["newlines", "crlf", "comments", "spaces", "huge-password"],
)
def test_largest_allowed_inputs_are_fast(data: bytes) -> None:
    assert len(data) == MAX_SIZE
    _, _, error = _timed_parse(data)
    assert error == ""


def test_one_byte_over_the_limit() -> None:
    _, _, error = _timed_parse(b" " * (MAX_SIZE + 1))
    assert error == "user-data: larger than 1024 KiB"


@pytest.mark.parametrize(
    "data",
    [
        b"=" * MAX_SIZE,
        b"A" * MAX_SIZE,
        b"\x1f\x8b" * (MAX_SIZE // 2),
        b"\x00" * MAX_SIZE,
        b"#cloud-config\n" + b"[" * (MAX_SIZE - 14),
        b"#cloud-config\n" + b"- " * ((MAX_SIZE - 14) // 2),
        b"#cloud-config\n" + b"{a: " * ((MAX_SIZE - 14) // 4),
        b"#cloud-config\n" + b"'" * (MAX_SIZE - 14),
        b"#cloud-config\n" + b"a: &x b\n" + b"c: *y\n",
        b"#cloud-config\n!!python/object/apply:os.system ['true']\n",
    ],
    ids=["equals", "base64-alphabet", "gzip-magic", "nul", "flow-deep",
         "block-deep", "map-deep", "quote", "bad-alias", "python-tag"],
)
def test_hostile_inputs_fail_cleanly_and_fast(data: bytes) -> None:
    _, _, error = _timed_parse(data)
    assert error.startswith("user-data: ")
    assert "\n" not in error


def test_deep_block_nesting_under_a_key() -> None:
    text = "#cloud-config\nx:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 1400))
    settings, _, error = _timed_parse(text.encode())
    # Either LibYAML's depth limit, or kept as unknown text: never a crash.
    assert error.startswith("user-data: ") or (settings is not None and "x" in settings.unknown)


def test_python_tags_build_nothing() -> None:
    _, _, error = _timed_parse(b"#cloud-config\npassword: !!python/object/apply:os.getcwd []\n")
    assert error == "password: line 2: expected a single value, not a list or mapping"
    settings, _, error = _timed_parse(b"#cloud-config\npassword: !!python/name:os.system x\n")
    assert settings is not None and settings.password == "x"


def test_alias_bomb_is_not_expanded() -> None:
    lines = ["#cloud-config", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    settings, _, error = _timed_parse("\n".join(lines).encode())
    assert error == ""
    assert settings is not None
    assert len(settings.unknown["a11"]) < 200  # the text as written, not 10**12 "lol"s


def test_gzip_bomb_through_base64() -> None:
    bomb = base64.b64encode(gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9))
    _, _, error = _timed_parse(bomb)
    assert error == "user-data: larger than 1024 KiB after gunzip"


def test_many_gzip_members_stay_bounded() -> None:
    member = gzip.compress(b"")
    data = member * (MAX_SIZE // len(member))
    _, _, error = _timed_parse(data)
    assert error == ""


def test_raw_deflate_and_zlib_are_not_gzip() -> None:
    for data in (zlib.compress(b"password=x"), zlib.compress(b"password=x")[2:]):
        _, _, error = _timed_parse(data)
        assert error.startswith("user-data: ")


def test_lone_surrogate_in_text() -> None:
    _, _, error = _timed_parse("password=a\udcffb".encode("utf-8", "surrogatepass"))
    assert error.startswith("user-data: not UTF-8 text")
    with pytest.raises(UserDataError, match="not UTF-8"):
        parse("password=a\udcffb")


def test_utf16_input_is_rejected_not_misread() -> None:
    _, _, error = _timed_parse("password=x".encode("utf-16"))
    assert error.startswith("user-data: not UTF-8 text")


def test_base64_that_decodes_to_a_script_is_left_alone() -> None:
    data = base64.b64encode(b"#!/bin/sh\necho pwned\n")
    _, _, error = _timed_parse(data)
    assert error.startswith("user-data: line 1: ")  # the base64 word itself, not the script


@pytest.mark.parametrize(
    "data",
    [b"A" * (MAX_SIZE - 1) + b"=", b"a=" * (MAX_SIZE // 2)],
    ids=["one-key-empty-value", "one-key-long-value"],
)
def test_single_huge_unknown_word_is_an_unknown_key(data: bytes) -> None:
    settings, warnings, error = _timed_parse(data)
    assert error == ""
    assert settings is not None and len(settings.unknown) == 1 and len(warnings) == 1


def test_base64_of_base64_is_unwrapped() -> None:
    # A launch tool that base64-encodes user-data that already was.
    for plain in (b"password=x", b"password=xy", b"password=xyz"):
        settings, _, error = _timed_parse(base64.b64encode(base64.b64encode(plain)))
        assert error == ""
        assert settings is not None and settings.password == plain.decode().split("=", 1)[1]


def test_base64_layers_are_bounded() -> None:
    data = b"password=x"
    for _ in range(6):
        data = base64.b64encode(data)
    _, _, error = _timed_parse(data)
    assert error == "user-data: more than 4 layers of gzip/base64"


def test_mime_multipart_gets_a_clean_error() -> None:
    data = b'Content-Type: multipart/mixed; boundary="b"\nMIME-Version: 1.0\n\n--b\n'
    _, _, error = _timed_parse(data)
    assert error == "user-data: line 1: 'Content-Type:' is not key=value"


@pytest.mark.parametrize(
    "text",
    [
        "password=x\x00y",
        "owner_secret=\x1b[2J",
        "#cloud-config\npassword: \"a\\0b\"\n",
        "#cloud-config\npassword: \"a\\x07\"\n",
        "#cloud-config\npassword: \"\\u0085\"\n",
    ],
)
def test_control_characters_in_secrets_are_rejected_without_echo(text: str) -> None:
    _, _, error = _timed_parse(text.encode())
    assert error.endswith("contains control characters")


def test_crlf_inside_cloud_config_values_is_not_whitespace_split() -> None:
    settings, _, error = _timed_parse(b"#cloud-config\r\npassword: 'a b'\r\naccept_license: 'YES'\r\n")
    assert error == ""
    assert settings is not None and settings.password == "a b" and settings.accept_license is True


@pytest.mark.parametrize("text", ["password=abc d$f=1", "owner_secret=abc x/y=2 owner=me"])
def test_the_rest_of_a_secret_with_a_space_is_not_echoed(text: str) -> None:
    """Errors reach the console, the journal and the status file: the words after a
    secret with a space in it are most likely the rest of the secret."""
    with pytest.raises(UserDataError) as info:
        parse(text.encode())
    message = info.value.format_message()
    fragment = text.split(" ")[1].split("=")[0]
    assert fragment not in message
    assert message.startswith(text.split("=")[0] + ": line 1: the value is followed by")
