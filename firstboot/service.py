"""``lockgate firstboot run`` / ``status``: the first-boot service.

One run, every boot, before the traffic manager starts:

1. find the datasource and fetch instance id + user-data;
2. parse the user-data into :class:`Settings` (invalid: nothing is applied);
3. once per instance id, run the apply steps (admin, licence, timezone,
   cluster, cfn, register) against ``--root``;
4. tell the platform how it ended (the datasource's ``finish``: Azure's
   wire server hears Ready, or NotReady/ProvisioningFailed and why);
5. write the status to ``/run/lockgate/firstboot.json`` (0644, no secrets)
   and print ``lockgate-firstboot: done state=... instance=... source=...``
   on the console, which the image boot tool waits for.

The command always exits 0 once its options are valid: whatever happens the
appliance must boot on and reach the wizard, and the status says what went
wrong. Its stdout goes to the journal, so nothing secret is ever printed.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from lockgate.errors import BadInput, Failure
from lockgate.files import atomic_write
from lockgate.firstboot.apply.base import Outcome, StepResult, redact
from lockgate.firstboot.apply.console import DEFAULT_CONSOLE, Console, ConsoleError
from lockgate.paths import run_dir

DONE_MARKER = "lockgate-firstboot: done"
PREFIX = "lockgate-firstboot:"
STATUS_NAME = "firstboot.json"
CONFIGURED = "configured"
NEEDS_CONFIG = "needs-initial-configuration"
FAILED = "failed"
log = logging.getLogger("lockgate.firstboot")


@dataclass
class Status:
    state: str = FAILED
    instance_id: str | None = None
    source: str | None = None
    applied_this_boot: bool = False
    started: str = ""
    finished: str = ""
    duration_s: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    apply_s: float | None = None  # parse+apply time; logged, not part of the status file

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "instance_id": self.instance_id, "source": self.source,
                "applied_this_boot": self.applied_this_boot, "started": self.started,
                "finished": self.finished, "duration_s": self.duration_s,
                "steps": [s.to_json() for s in self.steps], "warnings": list(self.warnings)}


def status_path(root: Path) -> Path:
    return run_dir(root) / STATUS_NAME


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Announcer:
    """Lines for people: console and journal (stdout). Secrets use :meth:`console_only`."""

    def __init__(self, console: Console, status: Status) -> None:
        self.console = console
        self.status = status
        self.console_ok = True

    def say(self, line: str) -> None:
        click.echo(line)
        try:
            self.console.write(line)
        except ConsoleError as exc:
            if self.console_ok:
                self.status.warnings.append(f"{exc}; console messages are only in the journal")
            self.console_ok = False


#: Environment variables that point a datasource at another metadata URL
#: (tests, emulators, unusual networks): variable -> (source, constructor argument).
URL_OVERRIDES = {
    "LOCKGATE_EC2_URL": ("ec2", "base_url"),
    "LOCKGATE_GCE_URL": ("gce", "base_urls"),
    "LOCKGATE_AZURE_IMDS_URL": ("azure", "imds_url"),
    "LOCKGATE_AZURE_WIRESERVER_URL": ("azure", "wireserver_url"),
}


def _resolve_source(spec: str) -> Any:
    import os

    from lockgate.firstboot.datasources import get_source

    per_source: dict[str, Any] = {}  # source name -> its constructor's arguments
    for variable, (name, argument) in URL_OVERRIDES.items():
        if os.environ.get(variable):
            per_source.setdefault(name, {})[argument] = os.environ[variable]
    return get_source(spec, **per_source)


def _admin_url_host(metadata: dict[str, str]) -> str:
    for key in ("public-ipv4", "local-ipv4", "public-hostname", "local-hostname", "hostname"):
        if metadata.get(key):
            return metadata[key]
    return socket.gethostname()


def current_state(root: Path) -> tuple[str, list[str]]:
    """``configured`` when an admin password was chosen and the licence accepted."""
    from lockgate.firstboot.apply.admin import admin_password_chosen
    from lockgate.firstboot.apply.licence import licence_accepted

    missing = []
    try:
        chosen = admin_password_chosen(root)
    except ValueError:  # a broken users.json: z-reset-password or the wizard replace it
        chosen = False
    if not chosen:
        missing.append("password")
    try:
        accepted = licence_accepted(root)
    except ValueError:  # a damaged licence.json: the wizard accepts again and rewrites it
        accepted = False
    if not accepted:
        missing.append("accept_license")
    return (CONFIGURED if not missing else NEEDS_CONFIG), missing


def firstboot(root: Path, source: Any, console: Console, timeout: float,
              source_name: str = "auto") -> Status:
    """Do one first-boot run with an already chosen datasource; never raises for a bad boot."""
    from lockgate.firstboot.apply import ApplyContext, apply_all
    from lockgate.firstboot.datasources.base import DatasourceError
    from lockgate.firstboot.state import InstanceRecord, InstanceState

    began = time.monotonic()
    status = Status(started=_now(), source=getattr(source, "name", source_name))
    say = Announcer(console, status).say
    state = InstanceState(root)
    metadata: dict[str, str] = {}

    try:
        data = source.fetch(timeout)
    except DatasourceError as exc:
        last = state.current()
        status.instance_id = last
        record = state.get(last) if last else None
        if record is not None and not record.damaged:
            status.source = record.platform
        status.warnings.append(f"metadata unavailable: {exc}")
        if last is not None:
            status.state, _ = current_state(root)
            say(f"{PREFIX} metadata unavailable ({exc}); keeping the configuration of "
                f"instance {last}")
        else:
            # Never configured and no metadata: keep the appliance locked (a random
            # password on the console) and reachable for the wizard; the user-data is
            # applied on the first boot that can read it.
            status.state = NEEDS_CONFIG
            say(f"{PREFIX} metadata unavailable ({exc}); no instance configured yet")
            from lockgate.firstboot.apply.admin import apply_admin
            from lockgate.firstboot.settings import Settings

            status.steps.append(apply_admin(ApplyContext(root, console, timeout=timeout),
                                            Settings()))
            # Usually still unconfigured; but "current" may just be lost (damaged).
            status.state, missing = current_state(root)
            if missing:
                _tell_how_to_finish(say, root, {})
        _access(root, None, status)
        return _finish(status, began, root)

    status.instance_id = data.instance_id
    status.source = data.platform
    failure: str | None = None  # why this boot failed, for the platform (no secrets)
    metadata = dict(data.metadata)
    _access(root, data, status)
    record = state.get(data.instance_id)
    if record is not None and record.damaged:
        status.warnings.append(f"instance record of {data.instance_id} is damaged "
                               f"({record.damaged}); treated as configured, nothing applied")
        log.warning("%s", status.warnings[-1])
    if record is not None and record.applied:
        status.state, missing = current_state(root)
        log.info("instance %s was configured on %s; nothing to apply",
                 data.instance_id, record.applied_at)
        if missing:
            _tell_how_to_finish(say, root, metadata)
        if record.damaged:  # write a sound record so later boots are clean again
            state.save(InstanceRecord(data.instance_id, data.platform, applied=True,
                                      state=status.state, first_boot=status.started))
    else:
        apply_began = time.monotonic()
        settings, error = _parse(data.user_data, status)
        ctx = ApplyContext(root, console, instance_id=data.instance_id, platform=data.platform,
                           metadata=metadata, timeout=min(timeout, 10.0))
        first = record.first_boot if record else status.started
        if settings is None:
            status.state = FAILED
            failure = f"invalid user-data: {error}"
            say(f"{PREFIX} invalid user-data: {error}; nothing was applied. Fix the user-data "
                "and reboot, or log in on the console and run z-initial-config")
            state.save(InstanceRecord(data.instance_id, data.platform, applied=False,
                                      state=FAILED, first_boot=first))
        else:
            status.applied_this_boot = True
            status.steps = apply_all(ctx, settings, progress=_progress)
            status.apply_s = round(time.monotonic() - apply_began, 3)
            click.echo(f"{PREFIX} parse+apply took {status.apply_s:.3f} s")
            for step in status.steps:
                if step.result in (Outcome.WARNING, Outcome.FAILED):
                    say(f"{PREFIX} {step.name}: {step.result}: {step.message}")
            broken = {s.name for s in status.steps if s.result is Outcome.FAILED}
            if broken & {"admin", "licence"}:
                status.state = FAILED
                failure = _failed_steps(status.steps)
            else:
                status.state, missing = current_state(root)
                if missing:
                    _tell_how_to_finish(say, root, metadata)
            state.save(InstanceRecord(data.instance_id, data.platform, applied=True,
                                      state=status.state, first_boot=first,
                                      applied_at=_now(), steps=status.steps))
    _tell_platform(source, status, failure, timeout)
    return _finish(status, began, root)


def _access(root: Path, data: Any, status: Status) -> None:
    """Every boot: admin's SSH keys and the host name from this instance's metadata (an
    outage keeps the last ones), and the console password in /etc/shadow's target."""
    from lockgate.firstboot.apply import access

    name: str | None = None
    try:
        if data is None:
            name = access.last_host_name(root)
        else:
            if data.platform != "file":  # a local file names no keys: leave them be
                keys, rejected = access.clean_keys(data.public_keys)
                status.warnings += [f"ssh: ignored a public key that is not one OpenSSH "
                                    f"line: {line!r}" for line in rejected]
                access.write_authorized_keys(
                    root, keys, f"the {data.platform} metadata of {data.instance_id}")
                click.echo(f"{PREFIX} ssh: {len(keys)} public key(s) for "
                           f"{access.ACCOUNT} from the {data.platform} metadata")
            given = data.metadata.get("local-hostname", "")
            name = access.host_name_for(given) if given else None
            if given and name is None:
                status.warnings.append(f"host name {given!r} from the metadata is not a "
                                       "valid host name; kept the current one")
            if name:
                access.remember_host_name(root, name)
        if name and root.resolve() == Path("/"):
            access.set_host_name(name)
            click.echo(f"{PREFIX} host name: {name}")
    except OSError as exc:
        status.warnings.append(f"access: {exc}")
    try:
        access.sync_shadow(root)
    except OSError as exc:
        status.warnings.append(f"console password: cannot write the shadow file: {exc}")
    from lockgate.firstboot.apply.services import apply_recorded

    status.warnings += apply_recorded(root)


def _tell_platform(source: Any, status: Status, failure: str | None, timeout: float) -> None:
    """The datasource's ``finish`` step (Azure waits for it); a problem is a warning only."""
    ok = status.state != FAILED
    problem = source.finish(ok, None if ok else (failure or "first boot failed"), timeout)
    if problem:
        status.warnings.append(problem)


def _failed_steps(steps: list[StepResult]) -> str:
    return "; ".join(f"{s.name}: {s.message}" for s in steps if s.result is Outcome.FAILED)


def _parse(user_data: bytes | None, status: Status) -> tuple[Any, str]:
    from lockgate.firstboot.settings import Settings

    if not user_data:
        return Settings(), ""
    from lockgate.firstboot.userdata import UserDataError, parse

    try:
        settings, warnings = parse(user_data)
    except UserDataError as exc:
        return None, exc.format_message()
    secrets = [settings.password, settings.owner_secret]
    status.warnings.extend(redact(str(w), secrets) for w in warnings)
    return settings, ""


def _progress(result: StepResult, seconds: float) -> None:
    click.echo(f"{PREFIX} {result.name}: {result.result} ({seconds:.2f} s) {result.message}")


def _tell_how_to_finish(say: Any, root: Path, metadata: dict[str, str]) -> None:
    _, missing = current_state(root)
    host = _admin_url_host(metadata)
    say(f"{PREFIX} initial configuration is not finished (missing: {', '.join(missing)}). "
        f"Log in on the console and run z-initial-config; the Admin UI at "
        f"https://{host}:9090/ shows the appliance's status meanwhile.")


def _finish(status: Status, began: float, root: Path) -> Status:
    status.finished = _now()
    status.duration_s = round(time.monotonic() - began, 3)
    text = json.dumps(status.to_json(), indent=2) + "\n"
    atomic_write(status_path(root), text.encode(), 0o644, dir_mode=0o755)
    return status


def done_line(status: Status) -> str:
    return (f"{DONE_MARKER} state={status.state} instance={status.instance_id or '-'} "
            f"source={status.source or '-'}")


@click.command("run")
@click.option("--source", "source_spec", default="auto", show_default=True,
              help="Where user-data comes from: auto, ec2, gce, azure, nocloud or file:PATH.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"),
              show_default=True, help="Apply to this tree instead of / (tests, image builds).")
@click.option("--console", "console_target", default=DEFAULT_CONSOLE, show_default=True,
              help="Where console messages (and a generated password) go: a path or fd:N.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds to wait for the metadata service.")
def run(source_spec: str, root: Path, console_target: str, timeout: float) -> None:
    """Configure this appliance from its cloud user-data (once per instance)."""
    from lockgate.firstboot.datasources.base import DatasourceError

    try:
        console = Console(console_target)
    except ValueError as exc:
        raise BadInput(f"--console {console_target}: {exc}") from None
    try:
        activate_version(root)
        try:
            source = _resolve_source(source_spec)
        except (ValueError, KeyError) as exc:
            raise BadInput(f"--source {source_spec}: {exc}") from exc
        except DatasourceError as exc:
            # Nothing detected or the source could not even be set up: same as an outage.
            source = _Unavailable(source_spec, str(exc))
        try:
            status = firstboot(root, source, console, timeout, source_spec)
        except Exception as exc:  # a bug must not stop the boot: record it, show it, go on
            traceback.print_exc(file=sys.stderr)
            crash = f"first boot crashed: {type(exc).__name__}: {exc}"
            status = Status(started=_now(), source=source_spec, warnings=[crash])
            try:
                _tell_platform(source, status, crash, timeout)
            except Exception:  # the platform is told on a best-effort basis only
                traceback.print_exc(file=sys.stderr)
            try:
                _finish(status, time.monotonic(), root)
            except OSError as write_error:  # still print the marker so the boot goes on
                click.echo(f"{PREFIX} cannot write {status_path(root)}: {write_error}",
                           err=True)
        line = done_line(status)
        click.echo(line)
        try:
            console.write(line)
        except ConsoleError as exc:
            click.echo(f"{PREFIX} {exc}", err=True)
    finally:
        console.close()


def activate_version(root: Path) -> None:
    """Point the data partition's ``config`` and ``runtime`` at the running version's own
    (docs/upgrade.md, ``lockgate system activate``) before anything here reads them.

    Done in this process rather than by a unit of its own: one Python start fewer on
    the boot's critical path (~7 s under TCG, issue 12). Without a release record under
    ``root`` (not an appliance: tests, a source tree) there is nothing to point at. A
    failure is shown and first boot goes on, as it did when the unit failed.
    """
    from lockgate.paths import RELEASE_FILE, StatePaths
    from lockgate.runtime.system import configs
    from lockgate.runtime.system.slots import Machine, running_version

    release = root / RELEASE_FILE.relative_to("/")
    if not release.exists():
        return
    try:
        version = running_version(Machine(disk=Path("/dev/null"), release=release))
        if version is None:
            click.echo(f"lockgate-activate: {release}: no version recorded; the "
                       "configuration stays where it is", err=True)
            return
        for line in configs.activate(StatePaths.under_root(root), version):
            click.echo(f"lockgate-activate: {line}")
    except Exception:  # the configuration stays where it is; first boot must still run
        traceback.print_exc(file=sys.stderr)


class _Unavailable:
    """A datasource that could not even be chosen: behaves like a metadata outage."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def fetch(self, timeout: float) -> Any:
        from lockgate.firstboot.datasources.base import DatasourceError

        raise DatasourceError(self.reason)

    def finish(self, ok: bool, reason: str | None = None, timeout: float = 60.0) -> str | None:
        return None


@click.command("status")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"),
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the status file as JSON.")
def status(root: Path, as_json: bool) -> None:
    """Show what first boot did on this boot."""
    path = status_path(root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise Failure(f"{path}: no first-boot status; has lockgate-firstboot.service run "
                      "this boot? (systemctl status lockgate-firstboot)") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise Failure(f"{path}: not valid JSON ({exc}); run lockgate firstboot run") from None
    except OSError as exc:
        raise Failure(f"{path}: cannot read: {exc.strerror or exc}") from None
    # The cluster join goes on after first boot (the runtime retries it): its record is live.
    from lockgate.firstboot.apply.cluster import join_status_line, pending_join

    try:
        join = pending_join(root)
    except (OSError, ValueError) as exc:
        join = {"status": f"unreadable join record ({exc})"}
    if as_json:
        if join is not None:
            data["cluster_join"] = {k: v for k, v in join.items() if k != "password"}
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(format_status(data))
    line = join_status_line(root) if join is not None and "host" in join else None
    if line:
        click.echo(line)


def format_status(data: dict[str, Any]) -> str:
    this_boot = ("user-data applied this boot" if data.get("applied_this_boot")
                 else "nothing applied this boot")
    lines = [
        f"state:     {data.get('state')}",
        f"instance:  {data.get('instance_id') or '-'} (source: {data.get('source') or '-'})",
        f"this boot: {this_boot}",
        f"ran:       {data.get('started')} .. {data.get('finished')} "
        f"({data.get('duration_s')} s)",
    ]
    steps = data.get("steps") or []
    if steps:
        lines.append("steps:")
        width = max(len(s["name"]) for s in steps)
        lines += [f"  {s['name']:<{width}}  {s['result']:<8} {s['message']}" for s in steps]
    warnings = data.get("warnings") or []
    if warnings:
        lines.append("warnings:")
        lines += [f"  {w}" for w in warnings]
    if data.get("state") == NEEDS_CONFIG:
        lines.append("to finish: run z-initial-config on the console "
                     "(status meanwhile at https://<this host>:9090/)")
    return "\n".join(lines)
