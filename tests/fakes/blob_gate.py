"""A checking gate in front of Azurite: it refuses the Put Page calls real Azure refuses.

Azurite accepts a Put Page of 8 MiB (Azure's limit is 4 MiB) and leaves 512-byte
alignment to the SDK, which checks it client-side; so a request that reaches the
wire unaligned, or too big, would pass the emulator and fail in production. This
gate sits between the SDK and Azurite (point the connection string's BlobEndpoint
at ``gate.url``), answers such a Put Page itself with Azure's error, and forwards
everything else byte for byte (Shared Key signatures cover the path and headers,
not the host, so they stay valid).

Checked on ``PUT ?comp=page`` with ``x-ms-page-write: update``:
* the range (``x-ms-range`` or ``Range``: ``bytes=start-end``) starts on a 512-byte
  boundary and ends just before one → else 416 InvalidPageRange;
* it is at most 4 MiB → else 413 RequestBodyTooLarge;
* the body is exactly the range's length → else 400 InvalidHeaderValue.

It records every Put Page (offset, length) that passed and the most that were in
flight at once (the upload's parallelism, seen from the wire), and the method and
path of every request (so it also serves as a recorder in front of the GCS emulator).
"""

from __future__ import annotations

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from loopback import LoopbackServer

PAGE = 512
MAX_PUT = 4 * 1024 * 1024
RANGE_RE = re.compile(r"bytes=(\d+)-(\d+)")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate"}


def page_error(headers: dict[str, str], body_length: int) -> tuple[int, str, str] | None:
    """(status, code, message) Azure answers for this Put Page, or None if it is valid."""
    spec = headers.get("x-ms-range") or headers.get("range") or ""
    m = RANGE_RE.fullmatch(spec)
    if not m:
        return 400, "InvalidHeaderValue", f"The value for one of the HTTP headers is not in the correct format (range {spec!r})."
    start, end = int(m.group(1)), int(m.group(2))
    if start % PAGE or (end + 1) % PAGE or end < start:
        return 416, "InvalidPageRange", "The page range specified is invalid."
    if end - start + 1 > MAX_PUT:
        return 413, "RequestBodyTooLarge", "The request body is too large and exceeds the maximum permissible limit."
    if body_length != end - start + 1:
        return 400, "InvalidHeaderValue", "The value for one of the HTTP headers is not in the correct format (Content-Length differs from the range)."
    return None


class BlobGate(LoopbackServer):
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self.pages: list[tuple[int, int]] = []  # (offset, length) of each accepted Put Page
        self.refused: list[tuple[int, str]] = []
        self.max_in_flight = 0
        self.seen: list[tuple[str, str]] = []  # (method, path with query) of every request
        self.deny_writes = False  # answer every PUT 403 AuthorizationPermissionMismatch
        self._in_flight = 0
        self._lock = threading.Lock()
        super().__init__(methods=("GET", "HEAD", "PUT", "POST", "DELETE"))

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        self._handle(handler)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command
        headers = {k.lower(): v for k, v in handler.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        query = parse_qs(urlsplit(handler.path).query)
        with self._lock:
            self.seen.append((method, handler.path))
        is_put_page = (method == "PUT" and query.get("comp") == ["page"]
                       and headers.get("x-ms-page-write", "").lower() == "update")
        if method == "PUT" and self.deny_writes:
            self._refuse(handler, 403, "AuthorizationPermissionMismatch",
                         "This request is not authorized to perform this operation using this permission.")
            return
        if is_put_page:
            error = page_error(headers, len(body))
            if error:
                self._refuse(handler, *error)
                return
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            self._forward(handler, method, body)
        finally:
            if is_put_page:
                m = RANGE_RE.fullmatch(headers.get("x-ms-range") or headers.get("range") or "")
                assert m is not None
                with self._lock:
                    self._in_flight -= 1
                    self.pages.append((int(m.group(1)), int(m.group(2)) - int(m.group(1)) + 1))

    def _refuse(self, handler: BaseHTTPRequestHandler, status: int, code: str,
                message: str) -> None:
        with self._lock:
            self.refused.append((status, code))
        data = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error>").encode()
        handler.send_response(status)
        handler.send_header("x-ms-error-code", code)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _forward(self, handler: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        upstream = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream.request(method, handler.path, body=body if body or method in ("PUT", "POST") else None,
                             headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
            handler.send_response(reply.status, reply.reason)
            for name, value in reply.getheaders():
                # A HEAD's Content-Length is the blob's size: pass it on as it is.
                if name.lower() not in HOP_BY_HOP and (name.lower() != "content-length"
                                                        or method == "HEAD"):
                    handler.send_header(name, value)
            if method != "HEAD":
                handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if method != "HEAD":
                handler.wfile.write(data)
        finally:
            upstream.close()
