"""Step 7's second half: apply every answer in one go, then print the user-data.

The steps run in a fixed order and stop at the first failure, which names the
step, what was already applied and what was not. Licence acceptance comes
last on purpose: the appliance counts as configured once the licence is
accepted, so a run that fails part-way never leaves it looking finished.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate.errors import Failure
from lockgate.paths import StatePaths

from .model import Answers

CLUSTER_PORT = 9090
FINGERPRINT_PLACEHOLDER = "<FINGERPRINT>"


def security_file(paths: StatePaths) -> Path:
    return paths.config / "security.json"


def time_file(paths: StatePaths) -> Path:
    return paths.config / "time.json"


def licence_key_file(paths: StatePaths) -> Path:
    return paths.config / "licence.key"


def write_json(path: Path, value: dict[str, Any]) -> None:
    from lockgate.files import atomic_write

    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    atomic_write(path, text.encode(), 0o644)  # settings only, nothing secret


# --- the apply steps -------------------------------------------------------------


def apply_password(root: Path, answers: Answers) -> None:
    from lockgate.firstboot.apply.admin import set_admin_password

    # The wizard is the documented way out of a broken users file: replace it (kept aside).
    set_admin_password(root, answers.user, answers.password, replace_unreadable=True)


def apply_timezone(root: Path, answers: Answers) -> None:
    from lockgate.firstboot.apply.timezone import set_timezone

    set_timezone(root, answers.timezone)


def apply_time_sync(root: Path, answers: Answers) -> None:
    from lockgate.firstboot.apply.services import set_ntp_server

    # Recorded (first boot re-applies the record at every boot) and put into effect now
    # with the function first boot uses: timesyncd's file, restarted on a live system.
    write_json(time_file(StatePaths.under_root(root)), {"ntp_server": answers.ntp_server})
    set_ntp_server(root, answers.ntp_server)


def apply_security(root: Path, answers: Answers) -> None:
    from lockgate.firstboot.apply.services import set_ssh_intrusion_prevention

    write_json(
        security_file(StatePaths.under_root(root)),
        {"ssh_intrusion_prevention": answers.ssh_intrusion_prevention},
    )
    set_ssh_intrusion_prevention(root, answers.ssh_intrusion_prevention)


def apply_licence_key(root: Path, answers: Answers) -> None:
    """Install the key file for the runtime to read; no key means the Community Edition."""
    from lockgate.files import atomic_write

    target = licence_key_file(StatePaths.under_root(root))
    if answers.licence_key is None:
        target.unlink(missing_ok=True)  # a re-run may switch back to the Community Edition
        return
    atomic_write(target, answers.licence_key.read_bytes(), 0o600)


def services_director_file(paths: StatePaths) -> Path:
    return paths.config / "services_director.json"


def apply_registration(root: Path, answers: Answers) -> None:
    """Register with the Services Director through first boot's own registration step
    (the same request user-data's sd_address sends). Unlike at boot, a refusal stops the
    wizard: the user is there to fix the address or key, or choose another option."""
    from lockgate.firstboot.apply.base import ApplyContext, Console, Outcome
    from lockgate.firstboot.apply.register import apply_register
    from lockgate.firstboot.settings import Settings

    record = services_director_file(StatePaths.under_root(root))
    if not answers.sd_address:
        record.unlink(missing_ok=True)
        return
    settings = Settings(sd_address=answers.sd_address, sd_cert=answers.sd_cert,
                        registration_policy=answers.sd_registration_key)
    result = apply_register(ApplyContext(root=root, console=Console(), timeout=10.0), settings)
    if result.result is not Outcome.OK:
        raise Failure(result.message)
    write_json(record, {"sd_address": answers.sd_address, "registered": True,
                        "message": result.message})


def apply_licence_acceptance(root: Path, answers: Answers) -> None:
    from lockgate.firstboot.apply.licence import accept_licence

    accept_licence(root, answers.accept_license)


@dataclass(frozen=True)
class ApplyStep:
    name: str
    run: Callable[[Path, Answers], None]


APPLY_STEPS = (
    ApplyStep("admin password", apply_password),
    ApplyStep("timezone", apply_timezone),
    ApplyStep("time sync", apply_time_sync),
    ApplyStep("security", apply_security),
    ApplyStep("licence key", apply_licence_key),
    ApplyStep("Services Director registration", apply_registration),
    ApplyStep("licence acceptance", apply_licence_acceptance),
)


def apply_all(root: Path, answers: Answers, say: Callable[[str], None]) -> None:
    done: list[str] = []
    for number, step in enumerate(APPLY_STEPS, start=1):
        say(f"  [{number}/{len(APPLY_STEPS)}] {step.name}")
        try:
            step.run(root, answers)
        except (Exception, KeyboardInterrupt) as exc:
            # Messages from the apply functions never carry the password; the
            # exception type helps when the message alone is vague.
            reason = str(exc) or type(exc).__name__
            left = [s.name for s in APPLY_STEPS[number - 1 :]]
            raise Failure(
                f"applying {step.name} failed: {reason}. "
                f"Already applied: {', '.join(done) or 'nothing'}. "
                f"Not applied: {', '.join(left)}. Fix the cause and run the wizard again."
            ) from exc
        done.append(step.name)


# --- what to tell the user afterwards -------------------------------------------


def host_address() -> str:
    """This appliance's name as its cluster peers would use it (like EC2's private DNS name)."""
    name = socket.gethostname()
    return name if name and name != "localhost" else socket.getfqdn()


REPLAYED_PASSWORD = "<as in the replay file>"


def user_data_lines(root: Path, answers: Answers, show_password: bool = True) -> list[str]:
    """The user-data to clone or join this appliance. ``show_password`` False (an
    unattended --replay-from run, whose output is usually logged) keeps the password
    out: the replay file already holds it."""
    from lockgate.firstboot.apply.register import admin_cert_fingerprint

    tls_dir = StatePaths.under_root(root).tls
    fingerprint_note = ""
    try:
        fingerprint = admin_cert_fingerprint(root)
    except (OSError, ValueError) as exc:  # an unreadable or corrupt certificate file
        fingerprint = None
        fingerprint_note = f"  (the certificate under {tls_dir} could not be read: {exc};\n"
    else:
        fingerprint_note = (f"  (no Admin UI certificate under {tls_dir} yet;\n"
                            if fingerprint is None else "")
    if fingerprint is None:
        fingerprint = FINGERPRINT_PLACEHOLDER
        fingerprint_note += ("  once the traffic manager has started, get the fingerprint with:\n"
                             "  lockgate runtime fingerprint)")
    password = answers.password if show_password else REPLAYED_PASSWORD
    intro = (["User-data to configure another instance the same way. It contains the admin",
              "password in plain text and is shown only here, once: store it safely."]
             if show_password else
             ["User-data to configure another instance the same way (put the password from",
              f"the replay file in place of {REPLAYED_PASSWORD}):"])
    lines = [
        "",
        *intro,
        "",
        f"  password={password} timezone={answers.timezone} accept_license=y",
        "",
        "User-data for a new instance that joins this one's cluster:",
        "",
        f"  cluster_host={host_address()}:{CLUSTER_PORT} cluster_fingerprint={fingerprint}"
        f" password={password}",
    ]
    if fingerprint_note:
        lines += ["", fingerprint_note]
    if any(ch.isspace() for ch in answers.password):
        lines += [
            "",
            "  Note: user-data is split at whitespace and this password contains some;",
            "  set it on the new instance with z-reset-password instead.",
        ]
    return lines
