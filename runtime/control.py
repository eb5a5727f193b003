"""``start-lockgate`` / ``stop-lockgate``: start or stop the traffic manager's service.

Thin wrappers over ``systemctl start|stop lockgate.service`` kept for users of
the reference product, who know these names. They only work where systemd is
running (the appliance); elsewhere they say so instead of failing obscurely.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lockgate.errors import Failure, LockgateError
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


def _main(action: str) -> None:
    if len(sys.argv) > 1:
        name = "start-lockgate" if action == "start" else "stop-lockgate"
        print(f"usage: {name}  (takes no arguments)", file=sys.stderr)
        sys.exit(2)
    try:
        control(action)
    except LockgateError as exc:
        exc.show()
        sys.exit(exc.exit_code)


def start_main() -> None:
    _main("start")


def stop_main() -> None:
    _main("stop")
