"""Parse cloud user-data into :class:`~lockgate.firstboot.settings.Settings`.

The contract (ARCHITECTURE.md, "User-data"): whitespace-separated
``key=value`` pairs split on the first ``=``; the same text may arrive
gzip-compressed and/or base64-encoded, or as a ``#cloud-config`` YAML
mapping with the same keys. Everything is checked here, once, so the apply
steps downstream never see a half-valid value.

This module sits on the boot path, so it imports only the standard library's
cheap modules at the top; PyYAML, ``zoneinfo``, ``ipaddress`` and
``cryptography`` are imported only when the input needs them.

Secrets (``password``, ``owner_secret`` and unknown keys that look secret)
never appear in an error or a warning.
"""

from __future__ import annotations

import binascii
import re
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lockgate.errors import BadInput
from lockgate.firstboot.settings import (
    DEFAULT_CLUSTER_PORT,
    DEFAULT_TIMEZONE,
    DEFAULT_USER,
    CfnSettings,
    Settings,
    looks_secret,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import yaml

KEYS: tuple[str, ...] = (
    "password",
    "accept_license",
    "timezone",
    "cluster_host",
    "user",
    "join_tips",
    "cluster_fingerprint",
    "cluster_location",
    "sd_address",
    "sd_cert",
    "registration_policy",
    "owner",
    "owner_secret",
    "cfn_stack",
    "cfn_resource",
    "cfn_region",
)
CFN_KEYS = ("cfn_stack", "cfn_resource", "cfn_region")

# EC2 caps user-data at 16 KiB; 1 MiB leaves room for every cloud and still
# stops a gzip bomb from filling memory on a small appliance.
MAX_SIZE = 1024 * 1024
# gzip inside base64 inside gzip ... real user-data has at most two layers.
MAX_LAYERS = 4
# One warning line per unknown key, up to this many; then a count.
MAX_UNKNOWN_WARNINGS = 20

GZIP_MAGIC = b"\x1f\x8b"
TRUE_WORDS = frozenset({"y", "yes", "true"})
FALSE_WORDS = frozenset({"n", "no", "false"})

_ASCII_SPACE = " \t\r\n\v\f"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_WORD_SPACE = re.compile(r"[ \t\v\f]+")
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+={0,2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_NOT_SPACE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_HEX40 = re.compile(r"[0-9A-Fa-f]{40}")
_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){19}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")
_TZ_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+){0,3}")
_TZ_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_CFN_STACK = re.compile(
    r"[A-Za-z][A-Za-z0-9-]{0,127}|arn:aws[a-z-]*:cloudformation:[a-z0-9-]+:[0-9]{12}:stack/[A-Za-z0-9/-]+"
)
_CFN_RESOURCE = re.compile(r"[A-Za-z0-9]{1,255}")
_CFN_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")


class UserDataError(BadInput):
    """Invalid user-data: ``<key>: <reason>`` (exit 2 via the CLI).

    ``key`` is the user-data key the problem is about, or ``user-data`` when
    the input as a whole is wrong (bad gzip, bad YAML, a stray word).
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def parse(data: bytes | str) -> tuple[Settings, list[str]]:
    """Parse raw user-data into settings plus warnings for stderr.

    Raises :class:`UserDataError` for anything invalid; never anything else.
    """
    text = decode(data)
    if _is_cloud_config(text):
        pairs = list(_cloud_config_pairs(text))
    else:
        pairs = list(_key_value_pairs(text))
    return _build(pairs)


def render(settings: Settings) -> str:
    """The ``key=value`` user-data text that parses back to ``settings``.

    Defaults are left out. Raises ``ValueError`` when a value contains
    whitespace (possible only from ``#cloud-config``), which this form
    cannot carry.
    """
    values: dict[str, str | None] = {
        "password": settings.password,
        "accept_license": None if settings.accept_license is None else _yes_no(settings.accept_license),
        "timezone": None if settings.timezone == DEFAULT_TIMEZONE else settings.timezone,
        "cluster_host": _render_host_port(settings.cluster_host, settings.cluster_port),
        "user": None if settings.user == DEFAULT_USER else settings.user,
        "join_tips": "y" if settings.join_tips else None,
        "cluster_fingerprint": settings.cluster_fingerprint,
        "cluster_location": settings.cluster_location,
        "sd_address": settings.sd_address,
        "sd_cert": settings.sd_cert,
        "registration_policy": settings.registration_policy,
        "owner": settings.owner,
        "owner_secret": settings.owner_secret,
        "cfn_stack": settings.cfn.stack if settings.cfn else None,
        "cfn_resource": settings.cfn.resource if settings.cfn else None,
        "cfn_region": settings.cfn.region if settings.cfn else None,
    }
    values.update(settings.unknown)
    words = []
    for key, value in values.items():
        if value is None:
            continue
        if not _KEY_NAME.fullmatch(key):
            raise ValueError(f"{key!r} cannot be written as a key=value key")
        if any(c in _ASCII_SPACE for c in value):
            raise ValueError(f"{key}: value contains whitespace; key=value text cannot carry it")
        words.append(f"{key}={value}")
    return "\n".join(words) + ("\n" if words else "")


# --- unwrapping: gzip, base64, text ---------------------------------------


def decode(data: bytes | str) -> str:
    """Undo gzip/base64 wrapping (any order, a few layers) and return the text."""
    # Lone surrogates in a str survive "surrogatepass" and fail UTF-8 decoding below.
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_SIZE:
        raise UserDataError("user-data", f"larger than {MAX_SIZE // 1024} KiB")
    for _ in range(MAX_LAYERS):
        if raw.startswith(GZIP_MAGIC):
            raw = _gunzip(raw)
            continue
        unwrapped = _unbase64(raw)
        if unwrapped is None:
            break
        raw = unwrapped
    else:
        raise UserDataError("user-data", f"more than {MAX_LAYERS} layers of gzip/base64")
    return _to_text(raw)


def _gunzip(raw: bytes) -> bytes:
    out = bytearray()
    rest = raw
    # Concatenated gzip members are one valid stream (gzip -c a b).
    while rest:
        if not rest.startswith(GZIP_MAGIC):
            raise UserDataError("user-data", "unexpected bytes after the gzip data")
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(rest, MAX_SIZE + 1 - len(out))
        except zlib.error as exc:
            raise UserDataError("user-data", f"corrupt gzip data ({exc})") from None
        if len(out) > MAX_SIZE:
            raise UserDataError("user-data", f"larger than {MAX_SIZE // 1024} KiB after gunzip")
        if not inflater.eof:
            raise UserDataError("user-data", "truncated gzip data")
        rest = inflater.unused_data
    return bytes(out)


def _unbase64(raw: bytes) -> bytes | None:
    """The decoded bytes if ``raw`` is base64 of gzip or of user-data text.

    Plain ``key=value`` text is never valid base64: its ``=`` sits between
    a key and a non-empty value, and base64 allows ``=`` only as trailing
    padding. The decoded result must also look like user-data, so a stray
    word that happens to use the base64 alphabet stays plain text.
    """
    try:
        compact = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    compact = "".join(compact.split())
    if not compact or not _BASE64.fullmatch(compact):
        return None
    if "=" not in compact:
        if len(compact) % 4 == 1:
            return None
        compact += "=" * (-len(compact) % 4)
    elif len(compact) % 4:
        return None
    compact = compact.replace("-", "+").replace("_", "/")
    try:
        decoded = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        return None
    if decoded.startswith(GZIP_MAGIC):
        return decoded
    try:
        text = decoded.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None
    if _CONTROL_NOT_SPACE.search(text):
        return None
    if _is_cloud_config(text) or not text.strip():
        return decoded
    if _BASE64.fullmatch("".join(text.split())):
        # base64 of base64: a tool encoded text that was already encoded.
        # The next layer must again pass these checks.
        return decoded
    key, eq, _ = text.split(None, 1)[0].partition("=")
    return decoded if eq and _KEY_NAME.fullmatch(key) else None


def _to_text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserDataError(
            "user-data", f"not UTF-8 text (bad byte at offset {exc.start}); "
            "give key=value text, optionally gzip-compressed and/or base64-encoded"
        ) from None
    return text.removeprefix("\ufeff")


# --- the two text forms -----------------------------------------------------

# (key, value, where): ``where`` is "line N", for messages.
Pair = tuple[str, str, str]


def _is_cloud_config(text: str) -> bool:
    first_line = _LINE_BREAK.split(text, 1)[0]
    return first_line.rstrip(" \t") == "#cloud-config"


def _key_value_pairs(text: str) -> Iterator[Pair]:
    if text.startswith("#!"):
        raise UserDataError(
            "user-data", "looks like a script (#!); give key=value pairs or #cloud-config YAML"
        )
    previous_key = ""
    for number, line in enumerate(_LINE_BREAK.split(text), start=1):
        stripped = line.strip(" \t\v\f")
        if stripped.startswith("#"):  # a comment line: documented, not in the contract
            continue
        for word in _WORD_SPACE.split(stripped):
            if not word:
                continue
            key, eq, value = word.partition("=")
            if not eq:
                _stray_word(word, number, previous_key)
            if not _KEY_NAME.fullmatch(key):
                if previous_key and looks_secret(previous_key):
                    # Most likely the rest of a secret that contained a space: never
                    # echo it (errors reach the console, journal and status file).
                    raise UserDataError(
                        previous_key, f"line {number}: the value is followed by a word that "
                        "is not key=value (values cannot contain whitespace in key=value "
                        "form; use #cloud-config)"
                    )
                raise UserDataError(
                    "user-data", f"line {number}: {_show(key)} is not a valid key name "
                    "(letters, digits, '_', '-', '.')"
                )
            previous_key = key
            yield key, value, f"line {number}"


def _stray_word(word: str, line: int, previous_key: str) -> None:
    if previous_key and looks_secret(previous_key):
        # The word is most likely the rest of a secret that contained a space.
        raise UserDataError(
            previous_key, f"line {line}: the value is followed by a word without '=' "
            "(values cannot contain whitespace in key=value form; use #cloud-config)"
        )
    hint = ""
    if word.startswith("#"):
        hint = "; comments must start their own line"
    elif "-----" in word or previous_key == "sd_cert":
        hint = "; sd_cert takes the PEM body only, without -----BEGIN/END lines or newlines"
    raise UserDataError(
        "user-data", f"line {line}: {_show(word)} is not key=value{hint}"
    )


def _cloud_config_pairs(text: str) -> Iterator[Pair]:
    import yaml  # only here: PyYAML costs ~20 ms to import on the boot path

    try:
        # BaseLoader keeps every scalar as the text the user wrote: no YAML
        # 1.1 surprises (a password "yes" turning into True, "0755" into 493,
        # a fingerprint "12:34:56" into a base-60 number).
        # LibYAML's loader is 5x faster and caps nesting depth itself.
        loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
        root = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise UserDataError("user-data", f"invalid #cloud-config YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise UserDataError("user-data", "#cloud-config YAML is nested too deeply") from None
    if root is None:
        return
    if not isinstance(root, yaml.MappingNode):
        raise UserDataError("user-data", "#cloud-config must be a mapping of key: value")
    for key_node, value_node in root.value:
        where = f"line {key_node.start_mark.line + 1}"
        if not isinstance(key_node, yaml.ScalarNode):
            raise UserDataError("user-data", f"{where}: keys must be plain words")
        key = key_node.value
        if isinstance(value_node, yaml.ScalarNode):
            value = value_node.value
        elif key in KEYS:
            raise UserDataError(key, f"{where}: expected a single value, not a list or mapping")
        else:
            # Kept as the YAML text the user wrote, for the warning and JSON.
            value = text[value_node.start_mark.index : value_node.end_mark.index].strip()
        if key == "sd_cert":
            value = _pem_body(value)
        yield key, value, where


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # Only the problem and its line: the snippet PyYAML adds could show a password.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem is None:
        position = getattr(exc, "position", None)
        where = f" at offset {position}" if position is not None else ""
        return f"a character YAML does not allow{where} (control characters, byte-order marks)"
    return f"line {mark.line + 1}: {problem}" if mark is not None else str(problem)


def _pem_body(value: str) -> str:
    # YAML can carry a pasted multi-line PEM; keep only the base64 body.
    lines = [ln for ln in value.split() if ln]
    if any(ln.startswith("-----") for ln in lines):
        lines = [ln for ln in re.sub(r"-----[A-Z0-9 ]+-----", " ", value).split() if ln]
    return "".join(lines)


# --- building and checking the settings -------------------------------------


def _build(pairs: list[Pair]) -> tuple[Settings, list[str]]:
    seen: dict[str, str] = {}
    known: dict[str, str] = {}
    unknown: dict[str, str] = {}
    warnings: list[str] = []
    for key, value, where in pairs:
        if key in seen:
            places = f"twice on {where}" if seen[key] == where else f"twice ({seen[key]} and {where})"
            raise UserDataError(key, f"given {places}; give it once")
        seen[key] = where
        if key in KEYS:
            known[key] = value
        else:
            unknown[key] = value
            if len(unknown) <= MAX_UNKNOWN_WARNINGS:
                warnings.append(_unknown_warning(key))
    if len(unknown) > MAX_UNKNOWN_WARNINGS:
        warnings.append(f"... and {len(unknown) - MAX_UNKNOWN_WARNINGS} more unknown user-data keys ignored")

    for key, value in known.items():
        if value == "":
            raise UserDataError(key, "empty value; leave the key out to use the default")
        if _CONTROL.search(value):
            hint = " (a line break: keep the value on one line)" if "\n" in value or "\r" in value else ""
            raise UserDataError(key, f"contains control characters{hint}")

    cluster_host = cluster_port = None
    if "cluster_host" in known:
        cluster_host, port = _host_port(known["cluster_host"], "cluster_host", port_required=False)
        cluster_port = DEFAULT_CLUSTER_PORT if port is None else port
    fingerprint = _fingerprint(known["cluster_fingerprint"]) if "cluster_fingerprint" in known else None
    if cluster_host is not None and fingerprint is None:
        raise UserDataError(
            "cluster_fingerprint", "required with cluster_host: give the SHA-1 fingerprint "
            "of the cluster member's certificate (40 hex digits) or 'unsafe'"
        )
    if fingerprint is not None and cluster_host is None:
        raise UserDataError("cluster_host", "required with cluster_fingerprint")
    if "sd_address" in known:
        _host_port(known["sd_address"], "sd_address", port_required=True)

    settings = Settings(
        password=known.get("password"),
        accept_license=_yes_no_value("accept_license", known.get("accept_license")),
        timezone=_timezone(known["timezone"]) if "timezone" in known else DEFAULT_TIMEZONE,
        user=_username(known["user"]) if "user" in known else DEFAULT_USER,
        cluster_host=cluster_host,
        cluster_port=cluster_port,
        cluster_fingerprint=fingerprint,
        cluster_location=known.get("cluster_location"),
        join_tips=_yes_no_value("join_tips", known.get("join_tips")) or False,
        sd_address=known.get("sd_address"),
        sd_cert=_certificate(known["sd_cert"]) if "sd_cert" in known else None,
        registration_policy=known.get("registration_policy"),
        owner=known.get("owner"),
        owner_secret=known.get("owner_secret"),
        cfn=_cfn(known),
        unknown=unknown,
    )
    warnings += _no_effect_warnings(known)
    return settings, warnings


def _unknown_warning(key: str) -> str:
    import difflib  # only on this rare path

    message = f"unknown user-data key {_show(key)} ignored"
    close = difflib.get_close_matches(key.lower(), KEYS, n=1, cutoff=0.75)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message


def _no_effect_warnings(known: dict[str, str]) -> list[str]:
    warnings = []
    for key, needs in (
        ("join_tips", "cluster_host"),
        ("cluster_location", "cluster_host"),
        ("sd_cert", "sd_address"),
        ("registration_policy", "sd_address"),
        ("owner", "sd_address"),
        ("owner_secret", "owner"),
    ):
        if key in known and needs not in known:
            warnings.append(f"{key} has no effect without {needs}")
    return warnings


def _yes_no(value: bool) -> str:
    return "y" if value else "n"


def _yes_no_value(key: str, value: str | None) -> bool | None:
    if value is None:
        return None
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UserDataError(key, f"expected y/yes/true or n/no/false, got {_show(value)}")


def _timezone(name: str) -> str:
    if not _TZ_NAME.fullmatch(name) or name in _TZ_NOT_ZONES or name.startswith("right/"):
        raise UserDataError("timezone", f"{_show(name)} is not an IANA time zone name (e.g. Europe/London)")
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise UserDataError("timezone", _unknown_zone(name)) from None
    return name


def _unknown_zone(name: str) -> str:
    import zoneinfo

    message = f"unknown time zone {_show(name)}"
    by_lower = {zone.lower(): zone for zone in zoneinfo.available_timezones()}
    if name.lower() in by_lower:
        message += f" (did you mean {by_lower[name.lower()]!r}? names are case-sensitive)"
    else:
        message += " (use an IANA name such as Europe/London)"
    return message


def _username(name: str) -> str:
    if not _USERNAME.fullmatch(name):
        raise UserDataError(
            "user", f"{_show(name)} is not a valid user name "
            "(lower-case letter or '_', then up to 31 of a-z 0-9 _ -)"
        )
    return name


def _fingerprint(value: str) -> str:
    if value.lower() == "unsafe":
        return "unsafe"
    if ":" in value:
        if not _HEX_PAIRS.fullmatch(value):
            raise UserDataError("cluster_fingerprint", _fingerprint_problem(value))
        digits = value.replace(":", "")
    elif _HEX40.fullmatch(value):
        digits = value
    else:
        raise UserDataError("cluster_fingerprint", _fingerprint_problem(value))
    digits = digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, 40, 2))


def _fingerprint_problem(value: str) -> str:
    digits = value.replace(":", "")
    if re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        return "this is a SHA-256 fingerprint; give the SHA-1 one (40 hex digits) or 'unsafe'"
    return (
        "expected a SHA-1 fingerprint: 40 hex digits, optionally as 20 colon-separated "
        f"pairs, or 'unsafe' (got {len(value)} characters)"
    )


def _host_port(value: str, key: str, *, port_required: bool) -> tuple[str, int | None]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; check both parts."""
    form = "host:port" if port_required else "host or host:port"
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise UserDataError(key, f"missing ']' after the IPv6 address (expected {form})")
        host, rest = value[1:end], value[end + 1 :]
        if not _is_ipv6(host):
            raise UserDataError(key, f"{_show(host)} in brackets is not an IPv6 address")
        if rest and not rest.startswith(":"):
            raise UserDataError(key, f"unexpected text after ']' (expected {form})")
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:
        raise UserDataError(key, f"put an IPv6 address in brackets, e.g. [{value}] or [::1]:9090")
    else:
        host, colon, port_text_or_empty = value.partition(":")
        port_text = port_text_or_empty if colon else None
        _check_hostname(host, key)
    if port_text is None:
        if port_required:
            raise UserDataError(key, f"missing port (expected {form})")
        return host, None
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise UserDataError(key, f"port must be a number from 1 to 65535, got {_show(port_text)}")
    return host, int(port_text)


def _check_hostname(host: str, key: str) -> None:
    if not host:
        raise UserDataError(key, "missing host name")
    if re.fullmatch(r"[0-9.]+", host):
        import ipaddress

        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UserDataError(key, f"{_show(host)} is not a valid IPv4 address") from None
        return
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise UserDataError(key, f"{_show(host)} is not a valid host name or IP address")


def _is_ipv6(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _certificate(body: str) -> str:
    try:
        der = binascii.a2b_base64(body, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise UserDataError(
            "sd_cert", "not base64: give the PEM body without the -----BEGIN/END lines or newlines"
        ) from None
    # Only now: cryptography's import is tens of milliseconds.
    from cryptography import x509

    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        raise UserDataError("sd_cert", "base64 decodes, but not to an X.509 certificate") from None
    return body


def _cfn(known: dict[str, str]) -> CfnSettings | None:
    given = [key for key in CFN_KEYS if key in known]
    if not given:
        return None
    missing = [key for key in CFN_KEYS if key not in known]
    if missing:
        raise UserDataError(missing[0], f"required with {' and '.join(given)} (give all three cfn_ keys or none)")
    checks: tuple[tuple[str, re.Pattern[str], str], ...] = (
        ("cfn_stack", _CFN_STACK, "a CloudFormation stack name or stack ARN"),
        ("cfn_resource", _CFN_RESOURCE, "a logical resource ID (letters and digits)"),
        ("cfn_region", _CFN_REGION, "an AWS region such as us-east-1"),
    )
    for key, pattern, what in checks:
        if not pattern.fullmatch(known[key]):
            raise UserDataError(key, f"{_show(known[key])} is not {what}")
    return CfnSettings(known["cfn_stack"], known["cfn_resource"], known["cfn_region"])


def _render_host_port(host: str | None, port: int | None) -> str | None:
    if host is None:
        return None
    shown = f"[{host}]" if ":" in host else host
    return shown if port in (None, DEFAULT_CLUSTER_PORT) else f"{shown}:{port}"


def _show(text: str, limit: int = 24) -> str:
    """A short, quoted, escaped form of user text for one-line messages."""
    short = text if len(text) <= limit else text[:limit] + "..."
    return repr(short)

