"""Services Director self-registration (``sd_address`` in user-data).

``POST https://<sd_address>/api/tmcm/2.9/instance/register`` with a JSON body
``{registration_policy, owner, owner_secret, hostname, instance_id,
fingerprint}`` over TLS that trusts exactly ``sd_cert`` (or the system CAs
when no ``sd_cert`` is given). ``fingerprint`` is the SHA-1 fingerprint of
this appliance's Admin UI / REST API certificate, which the ``certificate``
step made just before (null only when that step could not write it).

A registration that fails is a warning, never a failed boot. ``owner_secret``
is only ever in the request body: not in the status, messages or logs.
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

from lockgate.firstboot.apply.base import ApplyContext, Outcome, StepResult, redact
from lockgate.firstboot.settings import Settings
from lockgate.paths import StatePaths

NAME = "register"
REGISTER_PATH = "/api/tmcm/2.9/instance/register"


def admin_cert_fingerprint(root: Path) -> str | None:
    """The SHA-1 fingerprint of the management certificate the runtime serves (made by
    the ``certificate`` step before this one), or None when there is none yet.

    The file name and the fingerprint come from :mod:`lockgate.runtime.tls`, the one
    place that makes and reads that certificate. A damaged file raises ValueError."""
    from lockgate.runtime.tls import CERT_NAME, fingerprint

    try:
        pem = (StatePaths.under_root(root).tls / CERT_NAME).read_bytes()
    except FileNotFoundError:
        return None
    return fingerprint(pem)


def registration_body(ctx: ApplyContext, settings: Settings) -> dict[str, str | None]:
    try:
        fingerprint = admin_cert_fingerprint(ctx.root)
    except (OSError, ValueError):  # unreadable or damaged: the runtime replaces it at start
        fingerprint = None
    return {
        "registration_policy": settings.registration_policy,
        "owner": settings.owner,
        "owner_secret": settings.owner_secret,
        "hostname": (ctx.metadata.get("local-hostname") or ctx.metadata.get("hostname")
                     or socket.gethostname()),
        "instance_id": ctx.instance_id,
        "fingerprint": fingerprint,
    }


def apply_register(ctx: ApplyContext, settings: Settings) -> StepResult:
    if settings.sd_address is None:
        return StepResult(NAME, Outcome.SKIPPED, "no sd_address in user-data")
    from lockgate.http import UrlError, pinned_context, read_url

    url = f"https://{settings.sd_address}{REGISTER_PATH}"
    secrets = [settings.owner_secret, settings.password]
    try:
        context = pinned_context(settings.sd_cert) if settings.sd_cert else None
    except (ValueError, ssl.SSLError) as exc:
        return StepResult(NAME, Outcome.WARNING, f"sd_cert: not a usable certificate ({exc}); "
                          "not registered with Services Director")
    body = json.dumps(registration_body(ctx, settings)).encode()
    try:
        reply = read_url(url, method="POST", data=body, ssl_context=context,
                         headers={"Content-Type": "application/json"},
                         timeout=ctx.timeout, deadline=ctx.timeout * 2, retries=3)
    except (UrlError, ValueError) as exc:
        return StepResult(NAME, Outcome.WARNING, redact(
            f"Services Director registration failed: {exc}", secrets))
    if not reply.ok:
        return StepResult(NAME, Outcome.WARNING,
                          f"Services Director at {settings.sd_address} refused the registration "
                          f"(HTTP {reply.status} {reply.reason})".rstrip())
    return StepResult(NAME, Outcome.OK, f"registered with Services Director at "
                      f"{settings.sd_address} (HTTP {reply.status})")
