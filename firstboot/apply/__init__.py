"""The first-boot apply steps, in the order they run.

Each step is a small module with an ``apply_<name>(ctx, settings)`` function
that works on ``ctx.root`` (``/`` on the appliance, a temporary tree in tests)
and returns a :class:`StepResult`. :func:`apply_all` runs them in order and
turns an unexpected exception in one step into a ``failed`` result, so one
step's failure never loses the others' work. The console wizard calls the
plain functions (``set_admin_password``, ``accept_licence``, ``set_timezone``)
directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lockgate.firstboot.apply.admin import apply_admin, set_admin_password
from lockgate.firstboot.apply.base import ApplyContext, Outcome, StepResult, redact
from lockgate.firstboot.apply.certificate import apply_certificate
from lockgate.firstboot.apply.cfn import apply_cfn
from lockgate.firstboot.apply.cluster import apply_cluster
from lockgate.firstboot.apply.licence import accept_licence, apply_licence, licence_accepted
from lockgate.firstboot.apply.register import apply_register
from lockgate.firstboot.apply.timezone import apply_timezone, set_timezone
from lockgate.firstboot.settings import Settings

__all__ = [
    "STEPS", "ApplyContext", "Outcome", "StepResult", "accept_licence", "apply_all",
    "licence_accepted", "set_admin_password", "set_timezone",
]

Step = Callable[[ApplyContext, Settings], StepResult]
STEPS: list[tuple[str, Step]] = [
    ("admin", apply_admin),
    ("licence", apply_licence),
    ("timezone", apply_timezone),
    # Before register: Services Director is sent this certificate's fingerprint.
    ("certificate", apply_certificate),
    ("cluster", apply_cluster),
    ("cfn", apply_cfn),
    ("register", apply_register),
]


def run_step(name: str, step: Step, ctx: ApplyContext, settings: Settings) -> StepResult:
    secrets = [settings.password, settings.owner_secret]
    try:
        result = step(ctx, settings)
    except Exception as exc:  # recorded as this step's failure; the next steps still run
        message = redact(f"{type(exc).__name__}: {exc}", secrets)
        return StepResult(name, Outcome.FAILED, message)
    return StepResult(result.name, result.result, redact(result.message, secrets))


def apply_all(ctx: ApplyContext, settings: Settings,
              progress: Callable[[StepResult, float], None] | None = None) -> list[StepResult]:
    results = []
    for name, step in STEPS:
        started = time.monotonic()
        result = run_step(name, step, ctx, settings)
        if progress is not None:
            progress(result, time.monotonic() - started)
        results.append(result)
    return results
