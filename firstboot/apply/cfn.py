"""CloudFormation: ``cfn-init -s STACK -r RESOURCE --region REGION`` on first boot.

Problems here never stop the boot: a missing ``cfn-init`` or a failed run is
a warning in the status, with the reason.
"""

from __future__ import annotations

from lockgate.firstboot.apply.base import ApplyContext, Outcome, StepResult
from lockgate.firstboot.settings import Settings
from lockgate.proc import RunError, run, which

NAME = "cfn"
CFN_INIT_TIMEOUT = 600.0  # cfn-init installs packages; bounded so boot always finishes


def cfn_argv(settings: Settings) -> list[str] | None:
    if settings.cfn is None:
        return None
    cfn = settings.cfn
    return ["cfn-init", "-s", cfn.stack, "-r", cfn.resource, "--region", cfn.region]


def apply_cfn(ctx: ApplyContext, settings: Settings) -> StepResult:
    argv = cfn_argv(settings)
    if argv is None:
        return StepResult(NAME, Outcome.SKIPPED, "no cfn_stack/cfn_resource/cfn_region in user-data")
    if which("cfn-init") is None:
        return StepResult(NAME, Outcome.WARNING,
                          "cfn-init not found on PATH; the image needs the AWS CloudFormation "
                          "helper scripts (aws-cfn-bootstrap) for cfn_stack to work")
    try:
        run(argv, capture=True, timeout=CFN_INIT_TIMEOUT, quiet=True)
    except RunError as exc:
        last = exc.stderr.strip().splitlines()[-1][:200] if exc.stderr.strip() else ""
        code = f"exit code {exc.returncode}" if exc.returncode is not None else "no result"
        return StepResult(NAME, Outcome.WARNING,
                          f"cfn-init for stack {argv[2]!r} failed ({code})"
                          + (f": {last}" if last else ""))
    return StepResult(NAME, Outcome.OK, f"cfn-init ran for stack {argv[2]!r}, resource {argv[4]!r}")
