"""Health-gated trial boots: commit a healthy trial, roll back a failed one; ``system status``.

``lockgate-boot-commit.service`` runs :func:`commit_boot` on every boot:

* **Trial boot** (this boot consumed GRUB's ``next_entry``; the kernel command
  line says ``lockgate.trial=1``): wait up to the deadline for health —
  first boot finished (``/run/lockgate/firstboot.json``), ``lockgate.service``
  not crash-looping, the REST port answering HTTPS, and the user's own check
  (``/var/lib/lockgate/config/health-command``, one ``/bin/sh -c`` command
  line, exit 0 = healthy) when that file exists. Healthy: the trial becomes
  the default (``saved_entry``). Not healthy in time, or the runtime restarted
  ``--crash-restarts`` times: the failure is recorded on the data partition and
  the machine reboots; GRUB then boots ``saved_entry``, the previous version.
* **Any other boot**: when the data partition's trial record names a trial
  that did not become the default, the trial was rolled back (by the check
  above, or by a kernel panic or a hang that the watchdog reset): the record
  says so and the console shows it once.

Kernel panics (``panic=10``) and user-space hangs (systemd's
``RuntimeWatchdogSec`` on a watchdog device) reboot without this service;
the next boot's GRUB falls back to ``saved_entry`` because the trial's
``next_entry`` was cleared before it booted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from lockgate.http import UrlError, read_url
from lockgate.paths import STATE_DIR, run_dir
from lockgate.proc import RunError, run
from lockgate.runtime.system import boot

PREFIX = "lockgate-boot:"
# lockgate.runtime.api.REST_PORT, not imported: that package loads the management plane.
REST_PORT = 9070
RUNTIME_UNIT = "lockgate.service"
DEFAULT_DEADLINE = 300.0
DEFAULT_CRASH_RESTARTS = 5
USER_CHECK_TIMEOUT = 60.0
POLL_INTERVAL = 2.0
ROLLED_BACK_UNKNOWN = ("the trial boot did not come up (kernel panic, hang, watchdog reset or "
                       "power loss)")


def health_command_path(state_dir: Path = STATE_DIR) -> Path:
    return state_dir / "config" / "health-command"


@dataclass
class RuntimeState:
    active: str = "unknown"  # systemd ActiveState
    restarts: int = 0  # systemd NRestarts
    result: str = ""


def runtime_state(unit: str = RUNTIME_UNIT) -> RuntimeState:
    """``systemctl show`` of the runtime unit (restarts count since this boot)."""
    try:
        out = run(["systemctl", "show", unit, "-p", "ActiveState", "-p", "NRestarts",
                   "-p", "Result"], capture=True, check=False, quiet=True, timeout=20).stdout
    except RunError:
        return RuntimeState()
    props = dict(line.partition("=")[::2] for line in out.decode().splitlines() if "=" in line)
    try:
        restarts = int(props.get("NRestarts", "0") or 0)
    except ValueError:
        restarts = 0
    return RuntimeState(props.get("ActiveState", "unknown"), restarts, props.get("Result", ""))


def rest_answers(port: int = REST_PORT, host: str = "127.0.0.1") -> bool:
    """True when the REST port answers HTTPS with any HTTP status (401 is an answer)."""
    try:
        read_url(f"https://{host}:{port}/", pin_sha1="unsafe", timeout=5.0, deadline=5.0,
                 retries=1)
    except UrlError:
        return False
    return True


def user_check(path: Path) -> tuple[bool, str]:
    """Run the operator's health command, if there is one: (healthy, what it said)."""
    try:
        command = path.read_text().strip()
    except FileNotFoundError:
        return True, "no user health command"
    if not command:
        return True, "empty user health command"
    try:
        proc = run(["/bin/sh", "-c", command], capture=True, check=False,
                   timeout=USER_CHECK_TIMEOUT, quiet=True)
    except RunError as exc:
        return False, f"user health command: {exc}"
    said = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()
    last = said[-1][:200] if said else ""
    if proc.returncode == 0:
        return True, "user health command passed"
    return False, f"user health command exited {proc.returncode}" + (f": {last}" if last else "")


@dataclass
class Probes:
    """What "healthy" is made of; tests give their own ports, folders and unit state."""

    firstboot_status: Path = field(default_factory=lambda: run_dir() / "firstboot.json")
    health_command: Path = field(default_factory=health_command_path)
    rest_port: int = REST_PORT
    runtime: Callable[[], RuntimeState] = runtime_state

    def firstboot_done(self) -> bool:
        return self.firstboot_status.exists()


@dataclass
class Verdict:
    healthy: bool
    reason: str
    waited_s: float


def wait_healthy(probes: Probes, deadline: float, crash_restarts: int,
                 say: Callable[[str], None], *, interval: float = POLL_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> Verdict:
    """Poll until every check passes, the runtime crash-loops, or ``deadline`` seconds pass."""
    start = clock()
    missing = "nothing checked yet"
    reported = ""
    while True:
        waited = clock() - start
        state = probes.runtime()
        if state.restarts >= crash_restarts or state.active == "failed":
            return Verdict(False, f"{RUNTIME_UNIT} is crash-looping ({state.restarts} restarts, "
                                  f"state {state.active})", waited)
        if not probes.firstboot_done():
            missing = "first boot has not finished"
        elif not rest_answers(probes.rest_port):
            missing = f"the REST API (port {probes.rest_port}) does not answer"
        else:
            ok, said = user_check(probes.health_command)
            if ok:
                return Verdict(True, said, clock() - start)
            missing = said
        if missing != reported:
            say(f"waiting for health: {missing}")
            reported = missing
        if clock() - start >= deadline:
            return Verdict(False, f"not healthy within {deadline:g} s: {missing}", clock() - start)
        time.sleep(interval)


def _describe(entry: str | None) -> str:
    version = boot.version_of(entry) if entry else None
    return f"lockgate {version}" if version else (entry or "an unknown version")


def commit_boot(*, env_path: Path | None = None, cmdline_path: Path = boot.CMDLINE,
                state_dir: Path = STATE_DIR, probes: Probes | None = None,
                deadline: float = DEFAULT_DEADLINE, crash_restarts: int = DEFAULT_CRASH_RESTARTS,
                reboot: Callable[[], None] | None = None,
                say: Callable[[str], None] | None = None, interval: float = POLL_INTERVAL) -> str:
    """The boot check. Returns what happened: committed, rolled-back, failed, normal."""
    out = say or (lambda text: print(f"{PREFIX} {text}", flush=True))
    state = boot.boot_state(env_path=env_path, cmdline_path=cmdline_path)
    running = state["running_entry"]
    slot = state["running_slot"]
    where = f"{_describe(running)} (slot {slot})" if slot else _describe(running)
    record = boot.read_trial_record(state_dir)
    if not state["trial"]:
        outcome = "normal"
        if record and record.get("state") in ("scheduled", "trial", "failed") \
                and not state["next_entry"]:
            if record.get("entry") == running:
                # Made the default by hand (grub-set-default) before its trial ran.
                record.update(state="committed", committed_at=boot._now(), reason="set by hand")
            else:
                reason = record.get("reason") or ROLLED_BACK_UNKNOWN
                record.update(state="rolled-back", rolled_back_at=boot._now(), reason=reason,
                              running=running)
                out(f"the trial boot of {_describe(record.get('entry'))} was ROLLED BACK: "
                    f"{reason}")
                outcome = "rolled-back"
            boot.write_trial_record(state_dir, record)
        default = "the default" if running and running == state["saved_entry"] else \
            f"default is {state['saved_entry'] or 'unset'}"
        out(f"running {where}, {default}")
        return outcome

    previous = state["saved_entry"]
    if record and record.get("entry") == running and record.get("state") == "scheduled":
        previous = record.get("previous") or previous
    record = {"entry": running, "previous": previous, "state": "trial",
              "scheduled_at": (record or {}).get("scheduled_at"), "started_at": boot._now()}
    boot.write_trial_record(state_dir, record)
    out(f"trial boot of {where}: waiting up to {deadline:g} s for health "
        f"(falls back to {_describe(previous)})")
    try:
        verdict = wait_healthy(probes or Probes(), deadline, crash_restarts, out,
                               interval=interval)
    except Exception as exc:  # a broken check in the new version is a failed trial
        verdict = Verdict(False, f"the health check itself failed: {exc}", 0.0)
    if verdict.healthy and running:
        boot.set_default(running, env_path=env_path)
        record.update(state="committed", committed_at=boot._now(), waited_s=round(verdict.waited_s, 1))
        boot.write_trial_record(state_dir, record)
        out(f"{_describe(running)} is healthy after {verdict.waited_s:.0f} s; "
            "it is now the default")
        return "committed"
    record.update(state="failed", failed_at=boot._now(), reason=verdict.reason,
                  waited_s=round(verdict.waited_s, 1))
    boot.write_trial_record(state_dir, record)
    out(f"trial of {_describe(running)} FAILED: {verdict.reason}; "
        f"rebooting into {_describe(previous)}")
    (reboot or _reboot)()
    return "failed"


def _reboot() -> None:
    run(["sync"], check=False)
    # --no-block: the reboot job stops this very service; don't wait on it.
    run(["systemctl", "--no-block", "reboot"], check=False)


def status_report(*, env_path: Path | None = None, cmdline_path: Path = boot.CMDLINE,
                  state_dir: Path = STATE_DIR, esp: Path = boot.ESP_MOUNT) -> dict[str, Any]:
    state = boot.boot_state(env_path=env_path, cmdline_path=cmdline_path)
    return {**state, "installed": boot.installed_entries(esp),
            "last_trial": boot.read_trial_record(state_dir)}


def format_status(report: dict[str, Any]) -> list[str]:
    running = report["running_entry"]
    lines = [f"running:    {_describe(running)}"
             + (f" (slot {report['running_slot']}, entry {running})" if running else "")
             + (", TRIAL boot (not yet the default)"
                if report["trial"] and running != report["saved_entry"] else "")]
    lines.append(f"default:    {report['saved_entry'] or '(unset: the first entry)'}")
    if report["next_entry"]:
        lines.append(f"next boot:  {report['next_entry']} (one time, then {report['saved_entry']})")
    installed = report["installed"]
    if installed:
        lines.append("installed:  " + ", ".join(f"slot {s}: {e}" for s, e in sorted(installed.items())))
    trial = report["last_trial"]
    if trial:
        what = {"rolled-back": "ROLLED BACK", "failed": "failed, rolling back",
                "committed": "committed", "trial": "in progress",
                "scheduled": "scheduled for the next boot"}.get(str(trial.get("state")),
                                                                str(trial.get("state")))
        when = (trial.get("rolled_back_at") or trial.get("committed_at") or trial.get("failed_at")
                or trial.get("started_at") or trial.get("scheduled_at") or "")
        line = f"last trial: {trial.get('entry')}: {what}" + (f" at {when}" if when else "")
        if trial.get("reason") and trial.get("state") in ("rolled-back", "failed"):
            line += f" ({trial['reason']})"
        lines.append(line)
    if report.get("grubenv_error"):
        lines.append(f"warning:    {report['grubenv_error']}")
    return lines


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status_command(as_json: bool) -> None:
    """Which version runs, which boots next, and how the last trial boot ended."""
    report = status_report()
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        for line in format_status(report):
            click.echo(line)


@click.command("boot-commit")
@click.option("--deadline", type=float, default=DEFAULT_DEADLINE, show_default=True,
              help="Seconds a trial boot has to become healthy.")
@click.option("--crash-restarts", type=int, default=DEFAULT_CRASH_RESTARTS, show_default=True,
              help="Runtime restarts that count as a crash loop.")
def commit_command(deadline: float, crash_restarts: int) -> None:
    """Run by lockgate-boot-commit.service: commit a healthy trial boot or roll it back."""
    commit_boot(deadline=deadline, crash_restarts=crash_restarts)


@click.group()
def main_group() -> None:
    """Boot health (python -m lockgate.runtime.system.health)."""


main_group.add_command(status_command)
main_group.add_command(commit_command)


def main(argv: Sequence[str] | None = None) -> None:
    os.umask(0o022)
    main_group.main(args=list(argv) if argv is not None else sys.argv[1:],
                    prog_name="lockgate system")


if __name__ == "__main__":
    main()
