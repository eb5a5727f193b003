"""Installed versions and switching between them (``rollback``, ``rollback-helper``).

A version is installed when a slot holds it (its record says ``installed``,
or, for the slot the image was built with, its GRUB entry names it). Switching
makes its entry GRUB's default (``saved_entry``, what ``grub-set-default``
does) and reboots; the version then runs with its own configuration, as it
was when the newer version was installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from lockgate.errors import BadInput
from lockgate.runtime.system import boot
from lockgate.runtime.system.slots import INVALID, Machine, Slot, running_version, slots


@dataclass(frozen=True)
class Installed:
    slot: str
    version: str
    entry: str
    default: bool
    running: bool
    healthy: bool | None  # None: not yet known (never booted, or a trial not yet decided)
    installed: str | None

    def as_json(self) -> dict[str, object]:
        return {"slot": self.slot, "version": self.version, "default": self.default,
                "running": self.running, "healthy": self.healthy, "installed": self.installed,
                "entry": self.entry}


def _healthy(slot: Slot, entry: str, default: bool, trial: dict[str, object] | None) -> bool | None:
    if slot.record is not None and slot.record.state == INVALID:
        return False
    state = trial.get("state") if trial and trial.get("entry") == entry else None
    if state in ("failed", "rolled-back"):
        return False
    if state == "committed" or default:
        return True  # a trial becomes the default only once it proved healthy
    if trial and trial.get("previous") == entry:
        return True  # the default the last trial started from
    return None  # installed but not yet proven (scheduled, or on trial now)


def installed_versions(machine: Machine) -> list[Installed]:
    env_state = boot.boot_state(env_path=machine.grubenv, cmdline_path=machine.cmdline)
    saved = env_state.get("saved_entry")
    trial = boot.read_trial_record(machine.state.base)
    found = []
    for slot in slots(machine).values():
        version = slot.version
        if slot.running and version is None:
            version = running_version(machine)
        if not version:
            continue
        entry = boot.entry_id(version)
        if slot.entry != entry and not slot.running:
            continue  # no GRUB entry for it: it cannot be booted
        default = saved == entry
        found.append(Installed(slot.name, version, entry, default, slot.running,
                               _healthy(slot, entry, default, trial),
                               slot.record.installed if slot.record else None))
    return found


def choose(versions: list[Installed], wanted: str | None) -> Installed:
    """The version to switch to: ``wanted``, else the one not running."""
    if wanted:
        for item in versions:
            if wanted in (item.version, item.entry):
                return item
        raise BadInput(f"version {wanted} is not installed (installed: "
                       f"{', '.join(v.version for v in versions) or 'none'})")
    others = [v for v in versions if not v.running]
    if not others:
        raise BadInput("no other version is installed; there is nothing to roll back to")
    return others[0]


def switch(machine: Machine, target: Installed) -> None:
    boot.set_default(target.entry, env_path=machine.grubenv)
