"""What every metadata emulator shares: a threaded HTTP server, fault knobs, a request log.

A platform emulator subclasses :class:`Emulator` and implements ``route()``;
the base class applies the :class:`Faults` first (503 bursts, slow replies,
dropped connections) so every platform misbehaves the same way.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("lockgate.cloudemu")


@dataclass(frozen=True)
class Faults:
    """Ways to misbehave on purpose. Counts are over all requests to the emulator.

    ``fail_first``: the first N requests get ``fail_status`` (503).
    ``drop_first``: the first N requests (after the failing ones) get the
    connection closed without any reply.
    ``delay``: seconds to wait before each reply; ``delay_first`` limits that
    to the first N requests (None: every request).
    ``token_max_uses``: EC2 only, a session token stops working (401) after N uses.
    ``token_forbidden``: EC2 only, the token PUT answers 403.
    ``no_user_data``: user-data answers 404 (EC2/GCE) or is empty (Azure).
    """

    fail_first: int = 0
    fail_status: int = 503
    drop_first: int = 0
    delay: float = 0.0
    delay_first: int | None = None
    token_max_uses: int | None = None
    token_forbidden: bool = False
    no_user_data: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # path and query, as sent
    headers: dict[str, str] = field(repr=False)  # lower-case names
    body: bytes = field(repr=False, default=b"")
    status: int | None = None  # None: the connection was dropped


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


def list_children(keys: list[str], directory: str) -> list[str]:
    """Immediate children of ``directory`` in a flat key tree; sub-directories end in "/"."""
    prefix = directory.strip("/") + "/" if directory.strip("/") else ""
    found = set()
    for key in keys:
        if key.startswith(prefix):
            head, sep, _ = key[len(prefix):].partition("/")
            found.add(head + sep)
    return sorted(found)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts, faults) leave broken pipes behind: expected.
        log.debug("%s: client %s went away", self.emulator.name, client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection, like slirp guestfwd likes it

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.server.emulator.name, format % args)

    def _handle(self) -> None:
        self.server.emulator._dispatch(self)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


class Emulator:
    """A metadata service on ``host:port`` (port 0: any free port) in a background thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Thread-safe:
    faults can be changed with :meth:`set_faults` while requests are served.
    """

    name = "emulator"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None) -> None:
        self._host = host
        self._port = port
        self._faults = faults or Faults()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._count = 0
        self._arrived = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[RecordedRequest] = []

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = (_Server6 if ":" in self._host else _Server)((self._host, self._port), _Handler)
        server.emulator = self
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"cloudemu-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping on a delay fault
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # --- faults and records --------------------------------------------------------

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> None:
        """Replace the faults, or change some knobs: ``set_faults(fail_first=3)``.

        The request counter restarts so "first N" counts from now.
        """
        with self._lock:
            self._faults = replace(faults or self._faults, **changes)
            self._count = 0

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    @property
    def arrived(self) -> int:
        """Requests received so far, including ones still waiting out a delay fault."""
        with self._lock:
            return self._arrived

    def wait_arrived(self, count: int, timeout: float) -> bool:
        """Block until ``count`` requests have arrived; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._arrived >= count, timeout)

    def wait_for_request(self, path_prefix: str, timeout: float) -> RecordedRequest | None:
        """Block until a request for ``path_prefix`` was answered (e.g. the guest read
        ``/latest/user-data``); return it, or None on timeout."""
        def found() -> RecordedRequest | None:
            return next((r for r in self.requests if r.path.startswith(path_prefix)), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None, timeout)
            return found()

    # --- serving -------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict[str, list[str]],
              headers: dict[str, str], body: bytes) -> Reply:
        raise NotImplementedError

    def _dispatch(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._changed:
            self._count += 1
            self._arrived += 1
            n = self._count
            faults = self._faults
            self._changed.notify_all()
        if faults.delay > 0 and (faults.delay_first is None or n <= faults.delay_first):
            self._stopping.wait(faults.delay)
        reply: Reply | None
        if n <= faults.fail_first:
            reply = Reply(faults.fail_status, b"emulated failure\n")
        elif n <= faults.fail_first + faults.drop_first:
            reply = None
        else:
            parts = urlsplit(handler.path)
            try:
                reply = self.route(handler.command, parts.path, parse_qs(parts.query),
                                   headers, body)
            except Exception as exc:  # a bug in an emulator must show up as a 500, not a hang
                log.exception("%s emulator failed on %s", self.name, handler.path)
                reply = Reply(500, f"emulator error: {exc}\n".encode())
        with self._changed:
            self.requests.append(RecordedRequest(handler.command, handler.path, headers, body,
                                                 reply.status if reply else None))
            self._changed.notify_all()
        if reply is None:
            handler.close_connection = True
            # Close without a status line: the client sees a dropped connection.
            handler.connection.close()
            return
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(reply.body)
