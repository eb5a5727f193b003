"""The one HTTP client lockgate uses (metadata services, registration, cluster join).

Everything goes through :func:`read_url`: one place for per-try timeouts, an
overall deadline, exponential backoff and the decision what is worth retrying
(5xx, timeouts, refused/reset/dropped connections, an unreachable network at
early boot). 4xx replies are *returned*, not retried: what a 401, 403 or 404
means is the caller's business (an expired token, a disabled service, no
user-data). When the deadline passes, :class:`UrlError` says in one line which
URL, what went wrong last, how many tries and how long it took.

TLS pinning for the two cases the appliance needs:

* :func:`pinned_context` trusts exactly one certificate (Services Director's
  ``sd_cert``), whatever signed it and whatever name it carries.
* ``read_url(..., pin_sha1="AA:BB:...")`` (or :func:`fingerprint_pinned_request`)
  accepts a self-signed server only when the SHA-1 fingerprint of its
  certificate matches (cluster join); ``pin_sha1="unsafe"`` accepts any.

Request headers and bodies are never logged (they carry tokens and secrets).
This module sits on the boot path, so it imports only the standard library
modules ``http.client`` already needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

log = logging.getLogger("lockgate.http")

UNSAFE = "unsafe"
MAX_BODY = 16 * 1024 * 1024  # metadata replies are small; refuse to buffer a runaway stream

RetryOn = Iterable[int | type[BaseException]]

#: What is retried by default: server errors, throttling, timeouts, any socket
#: level failure (refused, reset, unreachable network, DNS not up yet) and
#: malformed or cut-off replies. TLS errors are never retried (see _retryable).
DEFAULT_RETRY_ON: tuple[int | type[BaseException], ...] = (
    429,
    *range(500, 600),
    TimeoutError,
    OSError,
    http.client.HTTPException,
)


class UrlError(Exception):
    """The request could not be completed before the deadline (or failed for good)."""

    def __init__(self, message: str, *, url: str, tries: int, elapsed: float,
                 last_problem: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.tries = tries
        self.elapsed = elapsed
        self.last_problem = last_problem
        self.status = status  # the last HTTP status, when the last problem was one


class PinMismatch(UrlError):
    """The server's certificate is not the one we were told to trust."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message = field(repr=False)  # case-insensitive: headers["Content-Type"]
    body: bytes = field(repr=False)
    url: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        charset = self.headers.get_content_charset() or "utf-8"
        return self.body.decode(charset, errors="replace")

    def json(self) -> object:
        import json  # only callers that read JSON pay for it

        return json.loads(self.body)


# --- fingerprints -----------------------------------------------------------------


def normalize_fingerprint(value: str) -> str:
    """``aabb..`` / ``AA:BB:..`` (40 hex digits) -> ``AA:BB:...``; ``unsafe`` stays."""
    text = value.strip()
    if text.lower() == UNSAFE:
        return UNSAFE
    digits = text.replace(":", "").upper()
    if len(digits) != 40 or any(c not in "0123456789ABCDEF" for c in digits):
        raise ValueError(f"not a SHA-1 fingerprint (40 hex digits, colons optional): {value!r}")
    return ":".join(digits[i:i + 2] for i in range(0, 40, 2))


def sha1_fingerprint(der: bytes) -> str:
    """SHA-1 of a DER certificate as ``AA:BB:...`` (what browsers and the console show)."""
    return normalize_fingerprint(hashlib.sha1(der).hexdigest())  # a fingerprint, not a signature


def fingerprint_matches(der: bytes, expected: str) -> bool:
    expected = normalize_fingerprint(expected)
    return expected == UNSAFE or sha1_fingerprint(der) == expected


def _certificate_der(cert: bytes | str) -> bytes:
    """Accept PEM, DER, or the bare base64 body (``sd_cert`` carries no header lines)."""
    raw = cert.encode() if isinstance(cert, str) else cert
    stripped = raw.strip()
    if stripped.startswith(b"-----BEGIN"):
        return ssl.PEM_cert_to_DER_cert(stripped.decode("ascii"))
    if stripped[:1] == b"\x30":  # ASN.1 SEQUENCE: already DER
        return stripped
    try:
        return base64.b64decode(b"".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("certificate is neither PEM, DER nor a base64 PEM body") from exc


def pinned_context(cert: bytes | str) -> ssl.SSLContext:
    """A client context that trusts exactly this one certificate and nothing else.

    The certificate is a trust anchor by itself (partial-chain verification),
    so a leaf signed by an unknown CA works too. Host names are not checked:
    the pin already names the server, and registration is often by IP address.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cadata=_certificate_der(cert))
    return ctx


def unverified_context() -> ssl.SSLContext:
    """A context that accepts any certificate; only ever used with a fingerprint pin."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_fingerprint(host: str, port: int, *, timeout: float = 5.0) -> str:
    """Connect once and return the server certificate's SHA-1 fingerprint."""
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            unverified_context().wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError(f"{host}:{port} sent no certificate")
    return sha1_fingerprint(der)


# --- the client -------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class _Pinned(Exception):
    def __init__(self, got: str, expected: str) -> None:
        super().__init__(f"certificate fingerprint {got} does not match the pinned {expected}")


def _connect(scheme: str, host: str, port: int | None, timeout: float,
             ssl_context: ssl.SSLContext | None, pin: str | None) -> http.client.HTTPConnection:
    if scheme == "http":
        return http.client.HTTPConnection(host, port, timeout=timeout)
    if scheme != "https":
        raise ValueError(f"unsupported URL scheme {scheme!r} (http or https)")
    if pin is None:
        return http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=ssl_context or ssl.create_default_context())
    conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                       context=ssl_context or unverified_context())
    conn.connect()
    assert isinstance(conn.sock, ssl.SSLSocket)
    der = conn.sock.getpeercert(binary_form=True) or b""
    if not fingerprint_matches(der, pin):
        got = sha1_fingerprint(der) if der else "(none)"
        conn.close()
        raise _Pinned(got, pin)
    return conn


def _read_body(resp: http.client.HTTPResponse, conn: http.client.HTTPConnection,
               try_ends: float, max_bytes: int) -> bytes:
    """Read the whole body, holding a trickling server to the per-try timeout too."""
    chunks: list[bytes] = []
    size = 0
    while True:
        left = try_ends - time.monotonic()
        if left <= 0:
            raise TimeoutError("reply body not complete within the per-try timeout")
        if conn.sock is not None:
            conn.sock.settimeout(left)
        chunk = resp.read1(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise _TooLarge(f"reply larger than {max_bytes} bytes")
        chunks.append(chunk)


def _retryable(status: int | None, exc: BaseException | None, retry_on: tuple[object, ...]) -> bool:
    if exc is not None:
        # A certificate problem will not go away by asking again.
        if isinstance(exc, ssl.SSLCertVerificationError | _Pinned):
            return False
        return any(isinstance(r, type) and isinstance(exc, r) for r in retry_on)
    return status in retry_on


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, http.client.RemoteDisconnected):
        return "server closed the connection without a reply"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return text


def read_url(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    data: bytes | str | None = None,
    timeout: float = 5.0,
    deadline: float = 30.0,
    retries: int | None = None,
    backoff: float = 0.25,
    backoff_cap: float = 4.0,
    retry_on: RetryOn = DEFAULT_RETRY_ON,
    ssl_context: ssl.SSLContext | None = None,
    pin_sha1: str | None = None,
    max_bytes: int = MAX_BODY,
) -> Response:
    """Make one HTTP request, retrying transient failures until ``deadline``.

    ``timeout`` bounds each try (connect, and the whole reply), ``deadline``
    the whole call in seconds from now, ``retries`` the number of tries
    (``None``: as many as fit before the deadline). Waits between tries start
    at ``backoff`` seconds and double up to ``backoff_cap``. ``retry_on`` lists
    HTTP statuses and exception classes worth another try. Any other reply,
    including 4xx, is returned. Raises :class:`UrlError` when giving up and
    :class:`PinMismatch` at once when ``pin_sha1`` does not match.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    body = data.encode() if isinstance(data, str) else data
    send_headers = dict(headers or {})
    if body is not None:
        send_headers.setdefault("Content-Length", str(len(body)))
    # Metadata services and the wire server speak HTTP/1.0-style one-shot
    # exchanges happily; asking to close keeps sockets from piling up on retries.
    send_headers.setdefault("Connection", "close")
    pin = normalize_fingerprint(pin_sha1) if pin_sha1 is not None else None
    retry_set = tuple(retry_on)
    max_tries = retries if retries is not None else 1_000_000
    if max_tries < 1:
        raise ValueError("retries must be at least 1")

    started = time.monotonic()
    ends = started + deadline
    tries = 0
    delay = backoff
    last_problem = "deadline reached before the first try"
    last_status: int | None = None
    while tries < max_tries:
        remaining = ends - time.monotonic()
        if remaining <= 0:
            break
        tries += 1
        per_try = min(timeout, remaining)
        try_ends = time.monotonic() + per_try
        conn: http.client.HTTPConnection | None = None
        status: int | None = None
        problem: BaseException | None = None
        try:
            conn = _connect(parts.scheme, parts.hostname, parts.port, per_try, ssl_context, pin)
            conn.request(method, target, body=body, headers=send_headers)
            reply = conn.getresponse()
            payload = _read_body(reply, conn, try_ends, max_bytes)
            status = reply.status
            response = Response(status, reply.headers, payload, url, reply.reason)
        except _Pinned as exc:
            elapsed = time.monotonic() - started
            raise PinMismatch(f"{method} {url}: {exc}", url=url, tries=tries, elapsed=elapsed,
                              last_problem=str(exc)) from None
        except _TooLarge as exc:
            elapsed = time.monotonic() - started
            raise UrlError(f"{method} {url}: {exc}", url=url, tries=tries, elapsed=elapsed,
                           last_problem=str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            problem = exc
        finally:
            if conn is not None:
                conn.close()
        if problem is None:
            log.debug("%s %s -> %d (try %d, %.2f s)", method, url, status,
                      tries, time.monotonic() - started)
            if not _retryable(status, None, retry_set):
                return response
            last_problem = f"HTTP {status} {response.reason}".rstrip()
            last_status = status
        else:
            last_problem = _describe(problem)
            last_status = None
            log.debug("%s %s: %s (try %d)", method, url, last_problem, tries)
            if not _retryable(None, problem, retry_set):
                elapsed = time.monotonic() - started
                raise UrlError(f"{method} {url}: {last_problem} (try {tries}, {elapsed:.1f} s)",
                               url=url, tries=tries, elapsed=elapsed,
                               last_problem=last_problem) from problem
        if tries >= max_tries:
            break
        wait = min(delay, backoff_cap)
        if time.monotonic() + wait >= ends:
            break  # another try could not start before the deadline
        time.sleep(wait)
        delay *= 2
    elapsed = time.monotonic() - started
    why = "out of tries" if tries >= max_tries else f"deadline of {deadline:g} s passed"
    raise UrlError(
        f"{method} {url}: gave up after {tries} {'try' if tries == 1 else 'tries'} in "
        f"{elapsed:.1f} s ({why}); last problem: {last_problem}",
        url=url, tries=tries, elapsed=elapsed, last_problem=last_problem, status=last_status,
    )


def upload_file(url: str, path: Path, *, method: str = "PUT",
                headers: Mapping[str, str] | None = None, timeout: float = 60.0,
                pin_sha1: str | None = None, ssl_context: ssl.SSLContext | None = None,
                max_bytes: int = MAX_BODY) -> Response:
    """Send the file at ``path`` as the body, streamed from disk (a bundle of hundreds of
    MiB is never held in memory); one try, since a large upload is not repeated blindly.
    ``timeout`` bounds each socket operation, not the whole upload."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    send = {"Content-Type": "application/octet-stream", **(headers or {}),
            "Content-Length": str(path.stat().st_size), "Connection": "close"}
    pin = normalize_fingerprint(pin_sha1) if pin_sha1 is not None else None
    started = time.monotonic()
    conn: http.client.HTTPConnection | None = None
    try:
        conn = _connect(parts.scheme, parts.hostname, parts.port, timeout, ssl_context, pin)
        with path.open("rb") as body:
            conn.request(method, target, body=body, headers=send)
        reply = conn.getresponse()
        payload = _read_body(reply, conn, time.monotonic() + timeout, max_bytes)
        return Response(reply.status, reply.headers, payload, url, reply.reason)
    except _Pinned as exc:
        raise PinMismatch(f"{method} {url}: {exc}", url=url, tries=1,
                          elapsed=time.monotonic() - started, last_problem=str(exc)) from None
    except (OSError, http.client.HTTPException, _TooLarge) as exc:
        problem = _describe(exc)
        raise UrlError(f"{method} {url}: {problem}", url=url, tries=1,
                       elapsed=time.monotonic() - started, last_problem=problem) from exc
    finally:
        if conn is not None:
            conn.close()


def fingerprint_pinned_request(url: str, fingerprint: str, **kwargs: object) -> Response:
    """:func:`read_url` against a self-signed HTTPS server pinned by SHA-1 fingerprint."""
    return read_url(url, pin_sha1=fingerprint, **kwargs)  # type: ignore[arg-type]


def download(url: str, target: BinaryIO, *, max_bytes: int, timeout: float = 30.0,
             headers: Mapping[str, str] | None = None,
             ssl_context: ssl.SSLContext | None = None,
             on_length: Callable[[int | None], None] | None = None) -> int:
    """GET ``url`` and stream its body into ``target`` (never held in memory); one try.

    For files too big for :func:`read_url` (upgrade bundles). ``on_length`` sees the
    announced Content-Length (or None) before any byte is written, so a caller can
    refuse for lack of space first. Returns the bytes written; a non-2xx reply, a
    body cut short or longer than ``max_bytes`` raises :class:`UrlError`.
    """
    started = time.monotonic()
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query

    def fail(message: str) -> UrlError:
        return UrlError(f"{url}: {message}", url=url, tries=1,
                        elapsed=time.monotonic() - started, last_problem=message)

    try:
        conn = _connect(parts.scheme, parts.hostname or "", parts.port, timeout, ssl_context,
                        None)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        if not 200 <= resp.status < 300:
            raise fail(f"HTTP {resp.status} {resp.reason}")
        length_header = resp.getheader("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if length is not None and length > max_bytes:
            raise fail(f"{length} bytes announced; at most {max_bytes} accepted")
        if on_length is not None:
            on_length(length)
        size = 0
        while chunk := resp.read1(1024 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise fail(f"more than {max_bytes} bytes")
            target.write(chunk)
        if length is not None and size != length:
            raise fail(f"cut short: {size} of {length} bytes")
        return size
    except (OSError, http.client.HTTPException) as exc:
        raise fail(_describe(exc)) from exc
    finally:
        conn.close()
