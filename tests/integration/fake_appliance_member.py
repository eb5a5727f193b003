"""``lockgate runtime serve`` whose upgrade backend is a fake A/B appliance, and whose
"reboot" restarts it into the version GRUB would boot.

    python fake_appliance_member.py APPLIANCE_ROOT TRUSTED_PUB -- serve options...

The serve is the real one (``lockgate.runtime.serve``: management, cluster, fault
tolerance, workers); only ``lockgate.runtime.api.appliance_system`` is replaced by a
:class:`SystemApi` over the fake appliance of tests/unit/test_system_upgrade.py (a GPT
disk-image file with slots A and B, an ESP folder with grubenv and GRUB entries, a
cmdline file, a release file), so an upload really verifies the bundle and writes the
inactive slot of that image file.

A reboot request makes serve stop in order (SIGTERM to itself: it drops its traffic
IPs and says ``leaving``), then, like GRUB, picks ``next_entry`` once (clearing it) or
else ``saved_entry``, rewrites the cmdline and release files for that slot and
version, and re-executes this program: the same pid comes back as the booted version.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def boot_next(root: Path) -> None:
    """What GRUB and the booted system would do: choose the entry, record what runs."""
    from lockgate.runtime.system import boot, rollback, slots

    machine = machine_of(root)
    env_path = boot.grubenv_path(machine.esp)
    env = boot.read_env(env_path)
    entry = env.get("next_entry") or env["saved_entry"]
    if env.get("next_entry"):
        boot.write_env(env_path, {**env, "next_entry": ""})
    target = next(v for v in rollback.installed_versions(machine) if v.entry == entry)
    parts = {p.name: p for p in slots.read_gpt(machine.disk)}
    part = parts[f"root-{target.slot}"]
    line = (root / "cmdline").read_text()
    base = " ".join(w for w in line.split() if not w.startswith(
        ("root=", "lockgate.entry=", "lockgate.slot=", "lockgate.trial=")))
    (root / "cmdline").write_text(f"{base} root=PARTUUID={part.partuuid} lockgate.entry={entry} "
                                  f"lockgate.slot={target.slot} lockgate.trial=\n")
    (root / "release.json").write_text(json.dumps({"version": target.version,
                                                   "architecture": "amd64"}))


def machine_of(root: Path) -> Any:
    from lockgate.paths import StatePaths
    from lockgate.runtime.system import slots

    return slots.Machine(disk=root / "disk.raw", esp=root / "esp",
                         state=StatePaths(root / "state"), cmdline=root / "cmdline",
                         release=root / "release.json", keys_dir=root / "no-keys",
                         by_partuuid=None)


def main() -> None:
    root, pub = Path(sys.argv[1]), Path(sys.argv[2])
    assert sys.argv[3] == "--"
    serve_args = sys.argv[4:]
    reboot_file = root / "reboot-requested"

    import lockgate.runtime.api as api
    from lockgate.runtime.system.keys import load_public
    from lockgate.runtime.system.rest import SystemApi

    def reboot(entry: str) -> None:
        reboot_file.write_text(entry)
        print(f"fake-appliance: rebooting into {entry}", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # serve stops in order

    api.appliance_system = lambda state_dir: SystemApi(
        lambda: machine_of(root), lambda: [load_public(pub)], reboot)

    from lockgate.cli import run_command
    from lockgate.runtime.serve import serve_command

    try:
        run_command(serve_command, serve_args, "serve")
    except SystemExit:
        if not reboot_file.exists():
            raise
    if reboot_file.exists():
        reboot_file.unlink()
        boot_next(root)
        os.execv(sys.executable, [sys.executable, *sys.argv])


if __name__ == "__main__":
    main()
