"""The Admin UI / REST API certificate, made during first boot.

Services Director registration (the next step) sends this certificate's SHA-1
fingerprint, so it has to exist before the traffic manager's first start. It
is the runtime's own certificate (:func:`lockgate.runtime.tls.ensure_certificate`,
the one implementation): the runtime later finds it and serves it on 9070 and
9090 unchanged, so the fingerprint on the console, the one Services Director
was given and the one served are the same. Like every apply step it runs on the
boot that applies an instance's user-data; an existing certificate is kept as it is.
"""

from __future__ import annotations

import socket

from lockgate.firstboot.apply.base import ApplyContext, Outcome, StepResult
from lockgate.firstboot.apply.console import ConsoleError
from lockgate.firstboot.settings import Settings
from lockgate.paths import StatePaths

NAME = "certificate"


def apply_certificate(ctx: ApplyContext, settings: Settings) -> StepResult:
    from lockgate.errors import Failure
    from lockgate.firstboot.apply.access import last_host_name
    from lockgate.runtime.tls import ensure_certificate

    # The cloud's host name, remembered by this boot's access step before the apply
    # steps run; on the appliance it is also the kernel's host name by then.
    hostname = last_host_name(ctx.root) or socket.gethostname()
    try:
        certificate = ensure_certificate(StatePaths.under_root(ctx.root).base, hostname)
    except Failure as exc:
        return StepResult(NAME, Outcome.WARNING, f"{exc.format_message()}; the traffic "
                          "manager tries again when it starts")
    fingerprint = certificate.fingerprint
    made = "generated" if certificate.created else "kept"
    note = ""
    try:
        ctx.console.write(f"lockgate-firstboot: Admin UI / REST API certificate SHA-1 "
                          f"fingerprint: {fingerprint}")
    except ConsoleError as exc:
        note = f" (not shown on the console: {exc})"
    return StepResult(NAME, Outcome.OK, f"{made} the management certificate, SHA-1 "
                      f"fingerprint {fingerprint}{note}")
