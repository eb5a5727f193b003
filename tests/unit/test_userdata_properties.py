"""Property-based tests of the user-data parser (hypothesis, 12,300 inputs in all).

- nothing but ``UserDataError`` ever escapes, whatever the bytes or text;
- valid settings survive rendering to ``key=value`` text (and its gzip,
  base64 and ``#cloud-config`` forms) and parsing back;
- whatever parses, renders and parses back to the same settings;
- values containing ``=`` (base64) are split on the first ``=`` only;
- secret values never appear in an error message.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import string

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lockgate.firstboot.settings import CfnSettings, Settings
from lockgate.firstboot.userdata import KEYS, UserDataError, parse, render

# No example database: the working tree is shared; CI runs stay independent.
FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _cert_body() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sd.test")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


CERT_BODY = _cert_body()
ZONES = ["America/Los_Angeles", "Europe/London", "UTC", "Asia/Kolkata", "Etc/GMT-14", "America/Argentina/Salta"]
REGIONS = ["us-east-1", "eu-west-2", "ap-southeast-3", "us-gov-west-1", "cn-north-1"]
ASCII_SPACE = " \t\r\n\v\f"

# --- strategies ------------------------------------------------------------------

# Any printable value: no ASCII whitespace (it separates words), no control
# characters (rejected), no surrogates (not UTF-8).
value_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters=ASCII_SPACE), min_size=1, max_size=30
)
LOWER_DIGITS = string.ascii_lowercase + string.digits


def _word(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    """first-character set + up to ``max_rest`` more (faster than from_regex)."""
    return st.builds(str.__add__, st.sampled_from(first), st.text(st.sampled_from(rest), max_size=max_rest))


label = st.one_of(
    st.text(st.sampled_from(LOWER_DIGITS), min_size=1, max_size=10),
    st.builds(lambda a, mid, b: a + mid + b, st.sampled_from(LOWER_DIGITS),
              st.text(st.sampled_from(LOWER_DIGITS + "-"), max_size=8), st.sampled_from(LOWER_DIGITS)),
)
hostname = (
    st.lists(label, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda h: not set(h) <= set(string.digits + "."))
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
host = st.one_of(hostname, ipv4, ipv6)
port = st.integers(1, 65535)
fingerprint = st.one_of(
    st.just("unsafe"), st.binary(min_size=20, max_size=20).map(lambda b: ":".join(f"{x:02X}" for x in b))
)
unknown_key = _word(string.ascii_lowercase, LOWER_DIGITS + "_", 10).filter(lambda k: k not in KEYS)
cfn = st.builds(
    CfnSettings,
    _word(string.ascii_letters, string.ascii_letters + string.digits + "-", 20),
    _word(string.ascii_letters + string.digits, string.ascii_letters + string.digits, 19),
    st.sampled_from(REGIONS),
)


def _address(h: str, p: int) -> str:
    return f"[{h}]:{p}" if ":" in h else f"{h}:{p}"


@st.composite
def valid_settings(draw: st.DrawFn) -> Settings:
    cluster = draw(st.none() | st.tuples(host, port, fingerprint))
    return Settings(
        password=draw(st.none() | value_text),
        accept_license=draw(st.none() | st.booleans()),
        timezone=draw(st.sampled_from(ZONES)),
        user=draw(_word(string.ascii_lowercase + "_", LOWER_DIGITS + "_-", 31)),
        cluster_host=cluster[0] if cluster else None,
        cluster_port=cluster[1] if cluster else None,
        cluster_fingerprint=cluster[2] if cluster else None,
        cluster_location=draw(st.none() | value_text),
        join_tips=draw(st.booleans()),
        sd_address=draw(st.none() | st.builds(_address, host, port)),
        sd_cert=draw(st.sampled_from([None, CERT_BODY])),
        registration_policy=draw(st.none() | value_text),
        owner=draw(st.none() | value_text),
        owner_secret=draw(st.none() | value_text),
        cfn=draw(st.none() | cfn),
        unknown=draw(st.dictionaries(unknown_key, value_text, max_size=3)),
    )


def _wrap(kind: str, text: str) -> bytes:
    raw = text.encode()
    if kind == "gzip":
        return gzip.compress(raw)
    if kind == "base64":
        return base64.b64encode(raw)
    if kind == "base64(gzip)":
        return base64.encodebytes(gzip.compress(raw))
    return raw


def _as_cloud_config(s: Settings) -> str:
    rendered = render(s)
    mapping = dict(line.split("=", 1) for line in rendered.splitlines())
    return "#cloud-config\n" + yaml.safe_dump(mapping, allow_unicode=True, width=10**6)


# Words that look like user-data: known and unknown keys, typical and odd values.
word_value = st.one_of(
    value_text,
    st.sampled_from(["y", "Yes", "n", "FALSE", "maybe", "unsafe", "", "0", "65536", "[::1]", "[::1]:9090", "a:b:c"]),
    st.builds(_address, host, st.integers(0, 70000)),
    host,
    fingerprint,
    st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(ZONES + REGIONS + [CERT_BODY, "Mars/Base", "../x", "right/UTC"]),
)
word = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS) | unknown_key, word_value),
    value_text,
    st.sampled_from(["#", "#cloud-config", "=", "==", "#!/bin/sh", "-----BEGIN"]),
)
separator = st.text(st.sampled_from(list(ASCII_SPACE)), min_size=1, max_size=3)


@st.composite
def word_soup(draw: st.DrawFn) -> str:
    words = draw(st.lists(word, max_size=12))
    lead = draw(st.sampled_from(["", " ", "\n"]))
    seps = draw(st.lists(separator, min_size=len(words), max_size=len(words)))
    return lead + "".join(w + s for w, s in zip(words, seps, strict=True))


# --- nothing but UserDataError --------------------------------------------------


def _parse_or_user_error(data: bytes | str) -> Settings | None:
    try:
        settings_, warnings = parse(data)
    except UserDataError as exc:
        message = exc.format_message()
        assert message.startswith(f"{exc.key}: ")
        assert "\n" not in message
        return None
    assert isinstance(settings_, Settings)
    assert all(isinstance(w, str) and "\n" not in w for w in warnings)
    return settings_


@settings(FAST, max_examples=3500)
@given(st.binary(max_size=600))
@example(b"\x1f\x8b")
@example(b"#cloud-config\n\x00")
def test_arbitrary_bytes_raise_only_user_data_error(data: bytes) -> None:
    _parse_or_user_error(data)


@settings(FAST, max_examples=1500)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_user_data_error(text: str) -> None:
    _parse_or_user_error(text)


@settings(FAST, max_examples=1000)
@given(st.sampled_from(["gzip", "base64", "base64(gzip)", "cloud"]), st.binary(max_size=300))
def test_wrapped_garbage_raises_only_user_data_error(kind: str, data: bytes) -> None:
    if kind == "gzip":
        wrapped = gzip.compress(data)
    elif kind == "base64":
        wrapped = base64.b64encode(data)
    elif kind == "base64(gzip)":
        wrapped = base64.b64encode(gzip.compress(data))
    else:
        wrapped = b"#cloud-config\n" + data
    _parse_or_user_error(wrapped)


@settings(FAST, max_examples=2000)
@given(word_soup(), st.sampled_from(["plain", "gzip", "base64", "base64(gzip)"]))
def test_word_soup_parses_or_fails_cleanly_and_round_trips(text: str, kind: str) -> None:
    result = _parse_or_user_error(_wrap(kind, text))
    if result is None:
        return
    # Invariants of anything that parses.
    if result.cluster_host is not None:
        assert result.cluster_port is not None and 1 <= result.cluster_port <= 65535
        fp = result.cluster_fingerprint
        assert fp == "unsafe" or (fp is not None and len(fp) == 59 and fp == fp.upper())
    assert result.user and result.timezone
    try:
        text_again = render(result)
    except ValueError:  # only #cloud-config can carry values with spaces
        return
    assert parse(text_again)[0] == result


# --- valid settings round-trip --------------------------------------------------


@settings(FAST, max_examples=1500)
@given(valid_settings(), st.sampled_from(["plain", "gzip", "base64", "base64(gzip)"]))
def test_valid_settings_round_trip_through_key_value_text(expected: Settings, kind: str) -> None:
    text = render(expected)
    assert parse(_wrap(kind, text))[0] == expected
    # CRLF and tabs instead of newlines change nothing.
    assert parse(text.replace("\n", "\r\n"))[0] == expected
    assert parse(text.replace("\n", "\t"))[0] == expected


@settings(FAST, max_examples=600)
@given(valid_settings())
def test_valid_settings_round_trip_through_cloud_config(expected: Settings) -> None:
    assert parse(_as_cloud_config(expected))[0] == expected


# --- split on the first "=" -----------------------------------------------------


@settings(FAST, max_examples=1200)
@given(
    st.sampled_from(["password", "owner_secret", "cluster_location", "registration_policy", "owner", "x_blob"]),
    st.binary(min_size=1, max_size=64),
    st.sampled_from(["plain", "gzip", "base64", "base64(gzip)"]),
)
def test_base64_values_keep_their_equals_signs(key: str, blob: bytes, kind: str) -> None:
    value = base64.b64encode(blob).decode()
    text = f"accept_license=y {key}={value} timezone=UTC"
    parsed, _ = parse(_wrap(kind, text))
    got = getattr(parsed, key) if key in KEYS else parsed.unknown[key]
    assert got == value
    assert got.count("=") == value.count("=")


# --- secrets stay out of errors -------------------------------------------------

no_marker = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters=ASCII_SPACE + "Z"), max_size=12
)


@settings(FAST, max_examples=1000)
@given(
    st.sampled_from(["password", "owner_secret"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cn"), blacklist_characters=ASCII_SPACE), max_size=10),
    st.lists(st.one_of(no_marker, st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), no_marker)), max_size=6),
    st.integers(0, 6),
)
def test_secret_values_never_in_error_messages(key: str, tail: str, others: list[str], at: int) -> None:
    secret = "ZZsecretZZ" + tail
    words = list(others)
    index = min(at, len(words))
    words.insert(index, f"{key}={secret}")
    if at % 2:  # the secret "continues" after a space: that word is secret too
        words.insert(index + 1, "ZZmoreZZ")
    try:
        parse(" ".join(words))
    except UserDataError as exc:
        assert "ZZ" not in exc.format_message()
