"""Worker processes and their supervisor (see :class:`Supervisor`)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from lockgate.runtime.status import run_folder


def pid_file(state_dir: Path) -> Path:
    return run_folder(state_dir) / "supervisor.pid"


def supervisor_pid(state_dir: Path) -> int | None:
    """The running supervisor's pid, or None when no ``serve`` runs for this state dir."""
    try:
        pid = int(pid_file(state_dir).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, owned by someone else
    return pid


def notify_reload(state_dir: Path) -> bool:
    """Ask the running traffic manager to apply the store's config now.

    Call it after ``ConfigStore.put``/``delete``. Optional: workers poll the
    store every second anyway. Returns False when no ``serve`` is running.
    """
    pid = supervisor_pid(state_dir)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
        return True
    return False
