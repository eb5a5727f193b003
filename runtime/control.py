"""``start-lockgate`` / ``stop-lockgate``: start or stop the traffic manager's service.

Thin wrappers over ``systemctl start|stop lockgate.service`` kept for users of
the reference product, who know these names. They only work where systemd is
running (the appliance); elsewhere they say so instead of failing obscurely.
"""

from __future__ import annotations

from pathlib import Path

import click

from lockgate.errors import Failure
from lockgate.proc import run

UNIT = "lockgate.service"
SYSTEMD_MARKER = Path("/run/systemd/system")  # exists only when systemd is PID 1


def systemd_running(marker: Path = SYSTEMD_MARKER) -> bool:
    return marker.is_dir()


def control(action: str, marker: Path = SYSTEMD_MARKER) -> None:
    if not systemd_running(marker):
        raise Failure(f"systemd is not running on this machine, so {UNIT} cannot be "
                      f"{action}ed; run 'lockgate runtime serve' directly instead")
    run(["systemctl", action, UNIT], timeout=120)
    state = "started" if action == "start" else "stopped"
    print(f"lockgate: traffic manager {state}")


def _command(action: str) -> click.Command:
    name = f"{action}-lockgate"

    @click.command(name, context_settings={"help_option_names": ["-h", "--help"]})
    def command() -> None:
        control(action, SYSTEMD_MARKER)

    command.help = (f"{action.capitalize()} the traffic manager "
                    f"(systemctl {action} {UNIT}); takes no arguments.")
    return command


start_cmd = _command("start")
stop_cmd = _command("stop")


def start_main(argv: list[str] | None = None) -> None:
    from lockgate.cli import run_command

    run_command(start_cmd, argv, "start-lockgate")


def stop_main(argv: list[str] | None = None) -> None:
    from lockgate.cli import run_command

    run_command(stop_cmd, argv, "stop-lockgate")
