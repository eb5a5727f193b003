"""The one HTTP server every local cloud fake runs on.

A fake subclasses :class:`LoopbackServer` and implements :meth:`respond`; the
base class owns the rest: a threaded ``http.server`` on 127.0.0.1 with a port
the kernel picks, optional TLS, quiet logs, and ``with`` to start and stop it
(the thread is joined, so nothing outlives the test).
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

ALL_METHODS = ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE")


class LoopbackServer:
    """``with Fake(...) as fake: fake.url`` — the endpoint to hand an SDK.

    ``methods`` are the HTTP methods the fake answers; any other gets
    http.server's 501, as the real endpoint would refuse it.
    """

    def __init__(self, *, methods: tuple[str, ...] = ALL_METHODS,
                 tls: ssl.SSLContext | None = None) -> None:
        owner = self

        def dispatch(handler: BaseHTTPRequestHandler) -> None:
            owner.respond(handler)

        def quiet(handler: BaseHTTPRequestHandler, format: str, *args: Any) -> None:
            pass

        attributes: dict[str, Any] = {"protocol_version": "HTTP/1.1", "log_message": quiet}
        attributes.update({f"do_{method}": dispatch for method in methods})
        handler_class = type("Handler", (BaseHTTPRequestHandler,), attributes)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one request (``handler.command`` is its method)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, whether sent with Content-Length or chunked."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        data = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return data
            data += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""
