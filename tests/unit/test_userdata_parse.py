"""Table tests for the user-data parser: every key, every rejection, every wrapping."""

from __future__ import annotations

import base64
import datetime
import gzip
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lockgate.errors import BadInput
from lockgate.firstboot.settings import CfnSettings, Settings
from lockgate.firstboot.userdata import KEYS, UserDataError, decode, parse, render

FP_COLONS = "FB:1F:9F:5C:FC:CF:58:83:5C:99:4F:00:0B:B5:3A:20:E7:3D:8E:7D"
FP_PLAIN_LOWER = FP_COLONS.replace(":", "").lower()


def make_cert_body() -> str:
    """A real self-signed certificate's PEM body, as sd_cert wants it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sd.example")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


CERT_BODY = make_cert_body()


def ok(text: str | bytes) -> Settings:
    settings, _ = parse(text)
    return settings


def error_of(text: str | bytes) -> str:
    with pytest.raises(UserDataError) as info:
        parse(text)
    return str(info.value.format_message())


# --- defaults, empty input ---------------------------------------------------


@pytest.mark.parametrize("text", ["", b"", "   ", "\n\r\n\t", b"\xef\xbb\xbf", "# only a comment\n"])
def test_empty_input_gives_defaults(text: str | bytes) -> None:
    settings, warnings = parse(text)
    assert settings == Settings()
    assert warnings == []
    assert settings.timezone == "America/Los_Angeles"
    assert settings.user == "admin"
    assert settings.join_tips is False
    assert settings.cluster_port is None


def test_error_is_bad_input_with_key_and_reason() -> None:
    with pytest.raises(UserDataError) as info:
        parse("accept_license=maybe")
    assert isinstance(info.value, BadInput)
    assert info.value.exit_code == 2
    assert info.value.key == "accept_license"
    assert str(info.value) == f"accept_license: {info.value.reason}"


# --- every key, accepted forms ------------------------------------------------

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("password=s3cret", {"password": "s3cret"}),
    ("password=a=b==", {"password": "a=b=="}),
    ("password=%41%20", {"password": "%41%20"}),  # values are not URL-decoded
    ("password=pässwörd€", {"password": "pässwörd€"}),
    ("password=#not-a-comment", {"password": "#not-a-comment"}),
    ("accept_license=y", {"accept_license": True}),
    ("accept_license=Yes", {"accept_license": True}),
    ("accept_license=YES", {"accept_license": True}),
    ("accept_license=true", {"accept_license": True}),
    ("accept_license=True", {"accept_license": True}),
    ("accept_license=N", {"accept_license": False}),
    ("accept_license=no", {"accept_license": False}),
    ("accept_license=FALSE", {"accept_license": False}),
    ("timezone=Europe/London", {"timezone": "Europe/London"}),
    ("timezone=UTC", {"timezone": "UTC"}),
    ("timezone=Etc/GMT+5", {"timezone": "Etc/GMT+5"}),
    ("timezone=America/Argentina/Buenos_Aires", {"timezone": "America/Argentina/Buenos_Aires"}),
    ("user=admin2", {"user": "admin2"}),
    ("user=_svc-ops", {"user": "_svc-ops"}),
    ("user=" + "a" * 32, {"user": "a" * 32}),
    ("join_tips=Y", {"join_tips": True}),
    ("join_tips=n", {"join_tips": False}),
    ("cluster_location=rack-4", {"cluster_location": "rack-4"}),
    ("sd_address=sd.example.com:8100", {"sd_address": "sd.example.com:8100"}),
    ("sd_address=10.1.2.3:443", {"sd_address": "10.1.2.3:443"}),
    ("sd_address=[2001:db8::1]:8100", {"sd_address": "[2001:db8::1]:8100"}),
    (f"sd_cert={CERT_BODY}", {"sd_cert": CERT_BODY}),
    ("registration_policy=policy-1", {"registration_policy": "policy-1"}),
    ("owner=Owner-7", {"owner": "Owner-7"}),
    ("owner_secret=tok=en==", {"owner_secret": "tok=en=="}),
    (
        "cfn_stack=web-stack cfn_resource=Appliance1 cfn_region=eu-west-2",
        {"cfn": CfnSettings("web-stack", "Appliance1", "eu-west-2")},
    ),
    (
        "cfn_region=us-gov-west-1 cfn_stack=arn:aws:cloudformation:us-gov-west-1:123456789012:stack/s/1a-2b"
        " cfn_resource=R",
        {
            "cfn": CfnSettings(
                "arn:aws:cloudformation:us-gov-west-1:123456789012:stack/s/1a-2b", "R", "us-gov-west-1"
            )
        },
    ),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED, ids=[t[:40] for t, _ in ACCEPTED])
def test_accepted_values(text: str, expected: dict[str, Any]) -> None:
    settings = ok(text)
    for field, value in expected.items():
        assert getattr(settings, field) == value
    untouched = {f: getattr(Settings(), f) for f in Settings.__dataclass_fields__ if f not in expected}
    assert {f: getattr(settings, f) for f in untouched} == untouched


CLUSTER: list[tuple[str, str, int, str]] = [
    # (cluster_host value, host, port, fingerprint value) -> normalised fingerprint FP_COLONS
    ("ip-10-0-1-65", "ip-10-0-1-65", 9090, FP_COLONS),
    ("ip-10-0-1-65:9090", "ip-10-0-1-65", 9090, FP_COLONS.lower()),
    ("tm1.example.com:1", "tm1.example.com", 1, FP_PLAIN_LOWER),
    ("10.0.0.5:65535", "10.0.0.5", 65535, FP_PLAIN_LOWER.upper()),
    ("[::1]:9090", "::1", 9090, FP_COLONS),
    ("[2001:db8::7]", "2001:db8::7", 9090, FP_COLONS),
    ("[fe80::1%eth0]:80", "fe80::1%eth0", 80, FP_COLONS),
    ("localhost", "localhost", 9090, FP_COLONS),
]


@pytest.mark.parametrize(("value", "host", "port", "fingerprint"), CLUSTER)
def test_cluster_host_forms(value: str, host: str, port: int, fingerprint: str) -> None:
    settings = ok(f"cluster_host={value} cluster_fingerprint={fingerprint}")
    assert (settings.cluster_host, settings.cluster_port) == (host, port)
    assert settings.cluster_fingerprint == FP_COLONS


@pytest.mark.parametrize("word", ["unsafe", "UNSAFE", "Unsafe"])
def test_fingerprint_unsafe(word: str) -> None:
    assert ok(f"cluster_host=a cluster_fingerprint={word}").cluster_fingerprint == "unsafe"


def test_cluster_port_only_with_host() -> None:
    assert ok("password=x").cluster_port is None


# --- every rejection ----------------------------------------------------------

GZ = gzip.compress(b"password=x" * 10)
REJECTED: list[tuple[str | bytes, str]] = [
    # whole-input problems
    ("foo", "user-data: line 1: 'foo' is not key=value"),
    ("user=x\n\n  stray", "user-data: line 3: 'stray' is not key=value"),
    ("a" * 100, "user-data: line 1: 'aaaaaaaaaaaaaaaaaaaaaaaa...' is not key=value"),
    ("user=x #comment", "user-data: line 1: '#comment' is not key=value; comments must start their own line"),
    ("sd_cert=-----BEGIN CERTIFICATE----- MIIB", "user-data: line 1: 'CERTIFICATE-----' is not key=value; sd_cert takes"),
    ("sd_cert=MIIB MIIC", "user-data: line 1: 'MIIC' is not key=value; sd_cert takes the PEM body only"),
    ("sd_cert=-----BEGIN", "sd_cert: not base64: give the PEM body without the -----BEGIN/END lines"),
    ("=value", "user-data: line 1: '' is not a valid key name"),
    ("1abc=2", "user-data: line 1: '1abc' is not a valid key name"),
    ("k\x01=2", "user-data: line 1: 'k\\x01' is not a valid key name"),
    ("#!/bin/sh\necho hi\n", "user-data: looks like a script (#!)"),
    (b"password=\xff", "user-data: not UTF-8 text (bad byte at offset 9)"),
    (b"\x1f\x8b\x08\x00garbage", "user-data: truncated gzip data"),
    (GZ[:10] + b"\xff" * 6 + GZ[16:], "user-data: corrupt gzip data (Error -3 while decompressing data: invalid block"),
    (GZ[:-8] + b"\x00" * 8, "user-data: corrupt gzip data (Error -3 while decompressing data: incorrect data check)"),
    (gzip.compress(b"password=x")[:-6], "user-data: truncated gzip data"),
    (gzip.compress(b"password=x") + b"trailing", "user-data: unexpected bytes after the gzip data"),
    (b"x" * (1024 * 1024 + 1), "user-data: larger than 1024 KiB"),
    (gzip.compress(b" " * (1024 * 1024 + 1)), "user-data: larger than 1024 KiB after gunzip"),
    ("#cloud-config\npassword: [x\n", "user-data: invalid #cloud-config YAML: line 3"),
    ("#cloud-config\n- password\n", "user-data: #cloud-config must be a mapping of key: value"),
    ("#cloud-config\n? [a, b]\n: c\n", "user-data: line 2: keys must be plain words"),
    ("#cloud-config\npassword: [a, b]\n", "password: line 2: expected a single value, not a list or mapping"),
    ("#cloud-config\na: 1\n---\nb: 2\n", "user-data: invalid #cloud-config YAML"),
    # duplicates
    ("password=a password=b", "password: given twice on line 1; give it once"),
    ("user=a\nuser=b", "user: given twice (line 1 and line 2); give it once"),
    ("#cloud-config\ntimezone: UTC\ntimezone: UTC\n", "timezone: given twice (line 2 and line 3)"),
    ("foo=1 foo=2", "foo: given twice on line 1"),
    # empty values / control characters
    ("password=", "password: empty value; leave the key out to use the default"),
    ("timezone=", "timezone: empty value"),
    ("#cloud-config\npassword:\n", "password: empty value"),
    ("password=a\x07b", "password: contains control characters"),
    ("owner=a\x7fb", "owner: contains control characters"),
    ("password=a\x85b", "password: contains control characters"),
    ('#cloud-config\npassword: "a\\tb"\n', "password: contains control characters"),
    ("#cloud-config\npassword: |\n  pw\n", "password: contains control characters (a line break: keep the value on one line)"),
    ("#cloud-config\npassword: a\x01\n", "user-data: invalid #cloud-config YAML: a character YAML does not allow at offset 25"),
    # accept_license / join_tips
    ("accept_license=maybe", "accept_license: expected y/yes/true or n/no/false, got 'maybe'"),
    ("accept_license=1", "accept_license: expected y/yes/true or n/no/false, got '1'"),
    ("accept_license=on", "accept_license: expected y/yes/true or n/no/false"),
    ("join_tips=yep", "join_tips: expected y/yes/true or n/no/false, got 'yep'"),
    # timezone
    ("timezone=Mars/Olympus", "timezone: unknown time zone 'Mars/Olympus' (use an IANA name"),
    ("timezone=europe/london", "timezone: unknown time zone 'europe/london' (did you mean 'Europe/London'?"),
    ("timezone=../../etc/passwd", "timezone: '../../etc/passwd' is not an IANA time zone name"),
    ("timezone=/etc/localtime", "timezone: '/etc/localtime' is not an IANA time zone name"),
    ("timezone=localtime", "timezone: 'localtime' is not an IANA time zone name"),
    ("timezone=America", "timezone: unknown time zone 'America'"),
    ("timezone=zone.tab", "timezone: 'zone.tab' is not an IANA time zone name"),
    ("timezone=right/UTC", "timezone: 'right/UTC' is not an IANA time zone name"),
    ("timezone=" + "A" * 300, "timezone: unknown time zone"),
    # user
    ("user=Admin", "user: 'Admin' is not a valid user name"),
    ("user=9lives", "user: '9lives' is not a valid user name"),
    ("user=" + "a" * 33, "user: 'aaaaaaaaaaaaaaaaaaaaaaaa...' is not a valid user name"),
    ("user=a.b", "user: 'a.b' is not a valid user name"),
    ("user=root;rm", "user: 'root;rm' is not a valid user name"),
    # cluster host / port / fingerprint
    ("cluster_host=a", "cluster_fingerprint: required with cluster_host"),
    ("cluster_fingerprint=unsafe", "cluster_host: required with cluster_fingerprint"),
    ("cluster_fingerprint=" + FP_COLONS, "cluster_host: required with cluster_fingerprint"),
    ("cluster_host=a:0 cluster_fingerprint=unsafe", "cluster_host: port must be a number from 1 to 65535, got '0'"),
    ("cluster_host=a:65536 cluster_fingerprint=unsafe", "cluster_host: port must be a number from 1 to 65535"),
    ("cluster_host=a: cluster_fingerprint=unsafe", "cluster_host: port must be a number from 1 to 65535, got ''"),
    ("cluster_host=a:+80 cluster_fingerprint=unsafe", "cluster_host: port must be a number"),
    ("cluster_host=a:80:90 cluster_fingerprint=unsafe", "cluster_host: put an IPv6 address in brackets"),
    ("cluster_host=::1 cluster_fingerprint=unsafe", "cluster_host: put an IPv6 address in brackets"),
    ("cluster_host=[::1 cluster_fingerprint=unsafe", "cluster_host: missing ']' after the IPv6 address"),
    ("cluster_host=[::1]x cluster_fingerprint=unsafe", "cluster_host: unexpected text after ']'"),
    ("cluster_host=[1.2.3.4] cluster_fingerprint=unsafe", "cluster_host: '1.2.3.4' in brackets is not an IPv6"),
    ("cluster_host=:9090 cluster_fingerprint=unsafe", "cluster_host: missing host name"),
    ("cluster_host=999.1.1.1 cluster_fingerprint=unsafe", "cluster_host: '999.1.1.1' is not a valid IPv4"),
    ("cluster_host=-bad-.com cluster_fingerprint=unsafe", "cluster_host: '-bad-.com' is not a valid host name"),
    ("cluster_host=a..b cluster_fingerprint=unsafe", "cluster_host: 'a..b' is not a valid host name"),
    ("cluster_host=a/b cluster_fingerprint=unsafe", "cluster_host: 'a/b' is not a valid host name"),
    ("cluster_host=" + "a" * 64 + " cluster_fingerprint=unsafe", "cluster_host: 'aaaa"),
    ("cluster_host=a cluster_fingerprint=" + FP_PLAIN_LOWER[:-1], "cluster_fingerprint: expected a SHA-1"),
    ("cluster_host=a cluster_fingerprint=" + FP_PLAIN_LOWER + "0", "cluster_fingerprint: expected a SHA-1"),
    ("cluster_host=a cluster_fingerprint=" + "G" * 40, "cluster_fingerprint: expected a SHA-1"),
    ("cluster_host=a cluster_fingerprint=" + FP_COLONS + ":", "cluster_fingerprint: expected a SHA-1"),
    ("cluster_host=a cluster_fingerprint=" + FP_COLONS.replace(":", "::"), "cluster_fingerprint: expected"),
    ("cluster_host=a cluster_fingerprint=FB1:F" + FP_COLONS[4:], "cluster_fingerprint: expected a SHA-1"),
    ("cluster_host=a cluster_fingerprint=" + "ab" * 32, "cluster_fingerprint: this is a SHA-256 fingerprint"),
    ("cluster_host=a cluster_fingerprint=safe", "cluster_fingerprint: expected a SHA-1 fingerprint"),
    # sd_address / sd_cert
    ("sd_address=sd.example.com", "sd_address: missing port (expected host:port)"),
    ("sd_address=[::1]", "sd_address: missing port"),
    ("sd_address=sd:http", "sd_address: port must be a number from 1 to 65535, got 'http'"),
    ("sd_cert=!!!!", "sd_cert: not base64"),
    ("sd_cert=\u00a0", "sd_cert: not base64"),
    ("sd_cert=MIIé", "sd_cert: not base64"),
    ("sd_cert=" + CERT_BODY[:-4], "sd_cert: "),
    ("sd_cert=" + base64.b64encode(b"not a certificate").decode(), "sd_cert: base64 decodes, but not to an X.509"),
    # cfn
    ("cfn_stack=s", "cfn_resource: required with cfn_stack (give all three cfn_ keys or none)"),
    ("cfn_stack=s cfn_resource=r", "cfn_region: required with cfn_stack and cfn_resource"),
    ("cfn_region=us-east-1", "cfn_stack: required with cfn_region"),
    ("cfn_stack=-s cfn_resource=r cfn_region=us-east-1", "cfn_stack: '-s' is not a CloudFormation stack name"),
    ("cfn_stack=s cfn_resource=r-1 cfn_region=us-east-1", "cfn_resource: 'r-1' is not a logical resource ID"),
    ("cfn_stack=s cfn_resource=r cfn_region=--help", "cfn_region: '--help' is not an AWS region"),
    ("cfn_stack=s cfn_resource=r cfn_region=US-EAST-1", "cfn_region: 'US-EAST-1' is not an AWS region"),
]


@pytest.mark.parametrize(("text", "message"), REJECTED, ids=[repr(t[:40]) for t, _ in REJECTED])
def test_rejected(text: str | bytes, message: str) -> None:
    assert error_of(text).startswith(message)


def test_rejection_messages_are_one_line() -> None:
    for text, _ in REJECTED:
        assert "\n" not in error_of(text)


# --- secrets never in messages ------------------------------------------------

SECRET = "Hunter2Secret"


@pytest.mark.parametrize(
    "text",
    [
        f"password={SECRET} tail",  # a password with a space: the tail is secret too
        f"password=Hunter2 {SECRET}",
        f"owner_secret=x {SECRET}",
        f"db_password=x {SECRET}",
        f"password={SECRET}\x01",
        f"password={SECRET} password={SECRET}",
        f"password={SECRET} accept_license=maybe",
        f"password={SECRET} cluster_host=a",
        f"#cloud-config\npassword: {SECRET}\npassword: {SECRET}\n",
        f"#cloud-config\npassword: '{SECRET}\n",
        f"#cloud-config\npassword: {SECRET}\n\tbad: 1\n",
    ],
)
def test_secret_values_never_in_errors(text: str) -> None:
    message = error_of(text)
    assert SECRET not in message
    assert "Hunter2" not in message


def test_secret_looking_unknown_key_warns_without_value() -> None:
    settings, warnings = parse(f"api_token={SECRET} color=blue")
    assert settings.unknown == {"api_token": SECRET, "color": "blue"}
    assert all(SECRET not in w for w in warnings)
    assert settings.to_json()["unknown"] == {"api_token": "<redacted>", "color": "blue"}
    assert settings.to_json(show_secrets=True)["unknown"]["api_token"] == SECRET


# --- unknown keys and other warnings ------------------------------------------


def test_unknown_keys_kept_and_warned() -> None:
    settings, warnings = parse("Password=x colour=red password=y")
    assert settings.password == "y"
    assert settings.unknown == {"Password": "x", "colour": "red"}
    assert warnings == [
        "unknown user-data key 'Password' ignored (did you mean 'password'?)",
        "unknown user-data key 'colour' ignored",
    ]


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        ("join_tips=y", "join_tips has no effect without cluster_host"),
        ("cluster_location=l", "cluster_location has no effect without cluster_host"),
        (f"sd_cert={CERT_BODY}", "sd_cert has no effect without sd_address"),
        ("registration_policy=p", "registration_policy has no effect without sd_address"),
        ("owner=o", "owner has no effect without sd_address"),
        ("owner_secret=s sd_address=a:1", "owner_secret has no effect without owner"),
    ],
)
def test_no_effect_warnings(text: str, warning: str) -> None:
    assert parse(text)[1] == [warning]


# --- whitespace, splitting ------------------------------------------------------

FULL = "password=pw accept_license=yes timezone=Europe/Paris user=ops join_tips=y"


@pytest.mark.parametrize(
    "separator", [" ", "  ", "\t", "\n", "\r\n", "\r", " \t\r\n ", "\n\n\n", "\x0b", "\x0c"]
)
def test_any_ascii_whitespace_separates(separator: str) -> None:
    text = separator + separator.join(FULL.split(" ")) + separator
    assert ok(text) == ok(FULL)


def test_non_ascii_space_is_part_of_a_value() -> None:
    # U+00A0 and U+2028 are not separators: they stay in the password.
    assert ok("password=a\u00a0b\u2028c").password == "a\u00a0b\u2028c"


def test_split_on_first_equals_only() -> None:
    body = base64.b64encode(b"\x00\x01").decode()  # "AAE="
    settings = ok(f"owner_secret={body} owner=o sd_address=h:1 password===x=")
    assert settings.owner_secret == "AAE="
    assert settings.password == "==x="


def test_crlf_file_with_trailing_spaces_and_comments() -> None:
    text = "# lockgate user-data\r\npassword=pw   \r\n  # indented comment\r\naccept_license=Yes\r\n\r\n"
    assert ok(text) == Settings(password="pw", accept_license=True)


# --- the reference guide's samples ----------------------------------------------


def test_guide_sample_launch_password() -> None:
    assert ok("password=<secret>").password == "<secret>"


def test_guide_sample_preconfigure() -> None:
    text = "password=<Admin Password>\ntimezone=America/Los_Angeles\naccept_license=Yes\n"
    # The guide's placeholder has a space: that is the "value with whitespace" error.
    assert error_of(text).startswith("password: line 1: the value is followed by a word without '='")
    settings = ok(text.replace("<Admin Password>", "Adm1n!"))
    assert settings == Settings(password="Adm1n!", accept_license=True, timezone="America/Los_Angeles")
    assert settings.configured


def test_guide_sample_cluster_join() -> None:
    text = f"cluster_host=ip-10-0-1-65\ncluster_fingerprint={FP_COLONS}\npassword=ClusterPw\n"
    settings = ok(text)
    assert settings.cluster_host == "ip-10-0-1-65"
    assert settings.cluster_port == 9090
    assert settings.cluster_fingerprint == FP_COLONS
    assert settings.password == "ClusterPw"
    assert settings.accept_license is None
    assert not settings.configured


def test_guide_sample_everything_on_one_line() -> None:
    text = (
        "password=pw accept_license=Yes timezone=Europe/London cluster_host=tm1 user=admin "
        f"join_tips=Y cluster_fingerprint={FP_PLAIN_LOWER} cluster_location=dc1 "
        f"sd_address=sd.example:8100 sd_cert={CERT_BODY} registration_policy=pol owner=acme "
        "owner_secret=s3c cfn_stack=st cfn_resource=Res cfn_region=us-east-1"
    )
    settings, warnings = parse(text)
    assert warnings == []
    assert settings.to_json(show_secrets=True) == {
        "password": "pw",
        "accept_license": True,
        "timezone": "Europe/London",
        "user": "admin",
        "cluster_host": "tm1",
        "cluster_port": 9090,
        "cluster_fingerprint": FP_COLONS,
        "cluster_location": "dc1",
        "join_tips": True,
        "sd_address": "sd.example:8100",
        "sd_cert": CERT_BODY,
        "registration_policy": "pol",
        "owner": "acme",
        "owner_secret": "s3c",
        "cfn": {"stack": "st", "resource": "Res", "region": "us-east-1"},
        "unknown": {},
    }
    assert set(KEYS) == {line.split("=", 1)[0] for line in text.split()}


# --- wrappings ---------------------------------------------------------------

PLAIN = b"password=p4ss==\naccept_license=Yes\ntimezone=Europe/London\n"
EXPECTED = Settings(password="p4ss==", accept_license=True, timezone="Europe/London")


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


WRAPPED: list[tuple[str, bytes]] = [
    ("plain", PLAIN),
    ("gzip", gzip.compress(PLAIN)),
    ("base64", b64(PLAIN)),
    ("base64-wrapped-76", base64.encodebytes(PLAIN)),
    ("base64-no-padding", b64(PLAIN).rstrip(b"=")),
    ("base64-urlsafe", base64.urlsafe_b64encode(PLAIN)),
    ("base64-trailing-newline", b64(PLAIN) + b"\n"),
    ("base64(gzip)", b64(gzip.compress(PLAIN))),
    ("gzip(base64)", gzip.compress(b64(PLAIN))),
    ("base64(gzip) wrapped", base64.encodebytes(gzip.compress(PLAIN))),
    ("gzip two members", gzip.compress(PLAIN[:20]) + gzip.compress(PLAIN[20:])),
    ("gzip(base64(gzip))", gzip.compress(b64(gzip.compress(PLAIN)))),
    ("crlf", PLAIN.replace(b"\n", b"\r\n")),
    ("bom", b"\xef\xbb\xbf" + PLAIN),
    ("base64(bom)", b64(b"\xef\xbb\xbf" + PLAIN)),
    (
        "bom+cloud-config",
        b"\xef\xbb\xbf#cloud-config\npassword: p4ss==\naccept_license: Yes\ntimezone: Europe/London\n",
    ),
    ("str", PLAIN.decode()),  # type: ignore[list-item]
    (
        "cloud-config",
        b"#cloud-config\npassword: p4ss==\naccept_license: Yes\ntimezone: Europe/London\n",
    ),
    (
        "cloud-config quoted, bools",
        b"#cloud-config\r\n# a comment\r\npassword: 'p4ss=='\r\naccept_license: true\r\n"
        b'timezone: "Europe/London"\r\n',
    ),
    (
        "base64(gzip(cloud-config))",
        b64(gzip.compress(b"#cloud-config\n{password: p4ss==, accept_license: y, timezone: Europe/London}\n")),
    ),
]


@pytest.mark.parametrize(("name", "data"), WRAPPED, ids=[n for n, _ in WRAPPED])
def test_wrappings(name: str, data: bytes) -> None:
    assert ok(data) == EXPECTED


def test_plain_key_value_is_never_taken_for_base64() -> None:
    # All of these use only base64 letters apart from '=' - and are key=value text.
    for text in ["password=abc", "password=abcd", "user=abcd", "abcd=efgh", "owner=AAAA===="]:
        key, _, value = text.partition("=")
        settings, _ = parse(text)
        assert (getattr(settings, key, None) or settings.unknown.get(key)) == value


def test_base64_of_garbage_stays_text_and_errors_as_text() -> None:
    # Valid base64 alphabet, decodes to binary: reported as the stray word it is.
    assert error_of("QUJD/w") == "user-data: line 1: 'QUJD/w' is not key=value"


def test_base64_of_empty_text() -> None:
    assert ok(b64(b"   \n")) == Settings()
    assert ok(gzip.compress(b"")) == Settings()


def test_too_many_layers() -> None:
    data = PLAIN
    for _ in range(5):
        data = gzip.compress(data)
    assert error_of(data) == "user-data: more than 4 layers of gzip/base64"


def test_gzip_bomb_is_bounded() -> None:
    bomb = gzip.compress(b"a" * (50 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    assert "larger than" in error_of(bomb)


def test_decode_returns_text_for_each_wrapping() -> None:
    assert decode(b64(gzip.compress(PLAIN))) == PLAIN.decode()


# --- cloud-config specifics -----------------------------------------------------


def test_cloud_config_values_are_taken_as_written() -> None:
    text = (
        "#cloud-config\n"
        "password: yes\n"  # YAML 1.1 would make this True; the password is the word "yes"
        "owner_secret: 0755\n"  # ... and this 493
        "owner: acme\n"
        "sd_address: sd:8100\n"
        "cluster_host: tm1\n"
        "cluster_fingerprint: 12:34:56:12:34:56:12:34:56:12:34:56:12:34:56:12:34:56:12:34\n"
        "join_tips: on\n"
    )
    assert error_of(text) == "join_tips: expected y/yes/true or n/no/false, got 'on'"
    settings = ok(text.replace("join_tips: on", "join_tips: yes"))
    assert settings.password == "yes"
    assert settings.owner_secret == "0755"
    assert settings.cluster_fingerprint == "12:34:56:12:34:56:12:34:56:12:34:56:12:34:56:12:34:56:12:34"
    assert settings.join_tips is True


def test_cloud_config_allows_spaces_and_multiline_cert() -> None:
    pem_lines = "\n".join("  " + CERT_BODY[i : i + 64] for i in range(0, len(CERT_BODY), 64))
    text = (
        "#cloud-config\n"
        "password: two words\n"
        "cluster_location: rack 4\n"
        "sd_address: sd:1\n"
        "sd_cert: |\n"
        "  -----BEGIN CERTIFICATE-----\n"
        f"{pem_lines}\n"
        "  -----END CERTIFICATE-----\n"
    )
    settings = ok(text)
    assert settings.password == "two words"
    assert settings.cluster_location == "rack 4"
    assert settings.sd_cert == CERT_BODY
    with pytest.raises(ValueError, match="whitespace"):
        render(settings)


def test_cloud_config_unknown_nested_values_kept_as_text() -> None:
    settings, warnings = parse("#cloud-config\npackages: [nginx, curl]\nruncmd:\n  - echo hi\npassword: x\n")
    assert settings.password == "x"
    assert settings.unknown == {"packages": "[nginx, curl]", "runcmd": "- echo hi"}
    assert len(warnings) == 2


def test_cloud_config_header_must_be_first_line() -> None:
    assert error_of("\n#cloud-config\npassword: x\n") == "user-data: line 3: 'password:' is not key=value"


def test_cloud_config_only_header() -> None:
    assert ok("#cloud-config\n") == Settings()
    assert ok("#cloud-config") == Settings()


# --- render -------------------------------------------------------------------


def test_render_round_trip_full() -> None:
    text = (
        "password=pw== accept_license=n timezone=UTC cluster_host=[::1]:99 user=ops join_tips=y "
        f"cluster_fingerprint=unsafe cluster_location=l sd_address=s:1 sd_cert={CERT_BODY} "
        "registration_policy=p owner=o owner_secret=os cfn_stack=a cfn_resource=b cfn_region=eu-west-1 extra=1"
    )
    settings = ok(text)
    assert ok(render(settings)) == settings


def test_render_defaults_is_empty() -> None:
    assert render(Settings()) == ""
