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
# The image carries no cfn-init (docs/firstboot.md, "CloudFormation: why no cfn-init"):
# the only helper scripts on PyPI are Python 2 code, AWS ships the Python 3 ones only from
# its own site, and OpenStack's heat-cfntools cannot reach AWS CloudFormation. One line
# that says what to do instead.
MISSING = ("cfn-init not found: this image carries no CloudFormation helper scripts "
           "(docs/firstboot.md); apply the configuration over the REST API (:9070) or the "
           "Admin UI (:9090), or add AWS's aws-cfn-bootstrap-py3 to your own image build")


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
        return StepResult(NAME, Outcome.WARNING, MISSING)
    try:
        run(argv, capture=True, timeout=CFN_INIT_TIMEOUT, quiet=True)
    except RunError as exc:
        last = exc.stderr.strip().splitlines()[-1][:200] if exc.stderr.strip() else ""
        code = f"exit code {exc.returncode}" if exc.returncode is not None else "no result"
        return StepResult(NAME, Outcome.WARNING,
                          f"cfn-init for stack {argv[2]!r} failed ({code})"
                          + (f": {last}" if last else ""))
    return StepResult(NAME, Outcome.OK, f"cfn-init ran for stack {argv[2]!r}, resource {argv[4]!r}")
