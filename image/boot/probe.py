"""Talk to a booted appliance through its forwarded ports: REST calls, certificate pin.

Shared by ``make demo`` and the end-to-end tests. Every call is pinned to the
certificate fingerprint the appliance printed on its console (or, when it
printed none, the one seen on first contact) and bounded by a deadline.
"""

from __future__ import annotations

import base64
import json
import time

from lockgate.http import Response, UrlError, peer_fingerprint, read_url
from lockgate.image.boot.console import BootError
from lockgate.image.boot.vm import Vm

REST_ROOT = "/api/tm/1.0"


def fingerprint(vm: Vm, guest_port: int = 9090, deadline: float = 60.0) -> str:
    """The SHA-1 fingerprint of the certificate served on ``guest_port`` (retries until up)."""
    end = time.monotonic() + deadline
    while True:
        try:
            return peer_fingerprint("127.0.0.1", vm.ports[guest_port], timeout=5)
        except OSError as exc:
            if time.monotonic() >= end:
                raise BootError(f"no TLS service on guest port {guest_port} after "
                                f"{deadline:g} s: {exc}") from exc
            vm.wait_exit(timeout=0.5)  # a bounded pause that also notices a dead VM
            if vm.process.poll() is not None:
                raise BootError("the VM exited") from exc


def rest(vm: Vm, method: str, path: str, *, user: str, password: str, pin: str,
         body: object | None = None, deadline: float = 30.0) -> Response:
    """One REST API call (9070) with Basic auth; 4xx/5xx are returned, not raised."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    url = f"{vm.url(9070)}{path if path.startswith('/') else REST_ROOT + '/' + path}"
    try:
        return read_url(url, method=method, headers=headers, data=data, timeout=10,
                        deadline=deadline, pin_sha1=pin)
    except UrlError as exc:
        raise BootError(f"REST {method} {path}: {exc}") from exc
