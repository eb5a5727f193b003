"""Worker processes and their supervisor (see :class:`Supervisor`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lockgate.runtime.listen import MANAGEMENT_PORTS
from lockgate.runtime.status import run_folder

log = logging.getLogger("lockgate.runtime.workers")


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


# ---- the supervisor ------------------------------------------------------------------------

READY_TIMEOUT = 60.0  # workers import, load the store and bind; slow only under emulation
RESTART_DELAY = 1.0  # after a crash within QUICK_CRASH of starting; doubled per quick crash
MAX_RESTART_DELAY = 30.0  # a worker that keeps crashing costs a start every 30 s at most
QUICK_CRASH = 5.0
POLL_INTERVAL = 0.2


def start_worker_process(state_dir: Path, slot: int, ready_fd: int | None, grace: float,
                         reserved_ports: tuple[int, ...] = MANAGEMENT_PORTS, share: int = 1,
                         ) -> subprocess.Popen[bytes]:
    """The one place worker processes are started (long-lived children, so Popen).
    ``share``: how many workers split the licence's bandwidth limit."""
    argv = [sys.executable, "-m", "lockgate.runtime.proxy.worker", "--state-dir", str(state_dir),
            "--slot", str(slot), "--grace", str(grace), "--parent", str(os.getpid()),
            "--reserved-ports", ",".join(map(str, reserved_ports)), "--share", str(share)]
    if ready_fd is not None:
        argv += ["--ready-fd", str(ready_fd)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            pass_fds=(ready_fd,) if ready_fd is not None else ())


class WorkerStartError(Exception):
    pass


class Supervisor:
    """Starts N workers, restarts crashed ones, forwards SIGHUP, stops gracefully on SIGTERM.

    Every worker (also a restarted one) writes ``"<slot> <pid> <listeners>"`` on the
    ready pipe once its listeners are up. SIGHUP goes only to ready workers: one
    still starting has no handler yet (SIGHUP would kill it) and reads the newest
    store anyway.
    """

    def __init__(self, state_dir: Path, workers: int, grace: float = 10.0,
                 reserved_ports: tuple[int, ...] = MANAGEMENT_PORTS) -> None:
        self.state_dir = Path(state_dir)
        self.count = workers
        self.grace = grace
        self.reserved_ports = reserved_ports
        self.quick_crashes: dict[int, int] = {}  # slot -> crashes in a row soon after start
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.ready: dict[int, int] = {}  # slot -> pid of the worker that said it is ready
        self.listening: list[str] = []
        self.stop_event = asyncio.Event()
        self.restarts = 0
        self._ready_r = -1
        self._ready_w = -1
        self._buffer = b""
        self._ready_changed = asyncio.Event()

    async def startup(self, keep_going: bool = False) -> None:
        """Start the workers and wait until each says it is ready.

        ``keep_going``: a worker that dies or hangs while starting is logged and left
        to the restart loop instead of failing the start (``serve`` with a management
        plane: the REST API and Admin UI are how an operator repairs the cause)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.forward, signal.SIGHUP)
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        folder = run_folder(self.state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("worker-*.json"):
            stale.unlink()  # totals restart with the service
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)
        loop.add_reader(self._ready_r, self._read_ready)
        for slot in range(self.count):
            self._spawn(slot)
        try:
            await self._wait_ready()
        except WorkerStartError as exc:
            if not keep_going or self.stop_event.is_set():
                await self._stop_workers(0.5)
                self._close_pipe()
                raise
            log.error("%s; starting the management plane anyway, workers are restarted", exc)
        except BaseException:
            await self._stop_workers(0.5)
            self._close_pipe()
            raise
        pid_file(self.state_dir).write_text(f"{os.getpid()}\n")

    def _read_ready(self) -> None:
        try:
            self._buffer += os.read(self._ready_r, 4096)
        except BlockingIOError:
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        listening = set(self.listening)
        for line in lines:
            slot, pid, *addresses = line.decode().split(" ")
            self.ready[int(slot)] = int(pid)
            listening.update(a for a in ",".join(addresses).split(",") if a)
        self.listening = sorted(listening)
        self._ready_changed.set()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while len(self.ready) < self.count:
            for slot, proc in self.procs.items():
                if proc.poll() is not None:
                    raise WorkerStartError(f"worker {slot} exited with status {proc.returncode} "
                                           "before it was ready (see its message above)")
            if loop.time() > deadline:
                raise WorkerStartError(f"workers not ready after {READY_TIMEOUT:.0f} s")
            if self.stop_event.is_set():
                raise WorkerStartError("stopped while starting")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready_changed.wait(), POLL_INTERVAL)
            self._ready_changed.clear()

    def _spawn(self, slot: int) -> None:
        self.ready.pop(slot, None)
        self.procs[slot] = start_worker_process(self.state_dir, slot, self._ready_w, self.grace,
                                                self.reserved_ports, self.count)
        self.started[slot] = time.monotonic()

    def forward(self, signum: int) -> None:
        for slot, proc in self.procs.items():
            if signum == signal.SIGHUP and self.ready.get(slot) != proc.pid:
                continue
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    async def main_loop(self) -> None:
        restart_at: dict[int, float] = {}
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), POLL_INTERVAL)
            if self.stop_event.is_set():
                break
            now = time.monotonic()
            for slot, proc in list(self.procs.items()):
                if slot in restart_at:
                    if now >= restart_at[slot]:
                        del restart_at[slot]
                        self._spawn(slot)
                        self.restarts += 1
                    continue
                if proc.poll() is not None:
                    delay = self._restart_delay(slot, now - self.started[slot] < QUICK_CRASH)
                    log.error("worker %d (pid %d) exited with status %s; restarting%s", slot,
                              proc.pid, proc.returncode, f" in {delay:g} s" if delay else "")
                    restart_at[slot] = now + delay

    def _restart_delay(self, slot: int, quick: bool) -> float:
        """None after a worker that ran a while; 1, 2, 4 ... 30 s while it keeps crashing."""
        crashes = self.quick_crashes[slot] = self.quick_crashes.get(slot, 0) + 1 if quick else 0
        if not crashes:
            return 0.0
        return float(min(RESTART_DELAY * 2 ** (crashes - 1), MAX_RESTART_DELAY))

    async def shutdown(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            pid_file(self.state_dir).unlink()
        await self._stop_workers(self.grace + 5.0)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._ready_r >= 0:
            asyncio.get_running_loop().remove_reader(self._ready_r)
            os.close(self._ready_r)
            os.close(self._ready_w)
            self._ready_r = self._ready_w = -1

    async def _stop_workers(self, timeout: float) -> None:
        self.forward(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # workers finishing in-flight requests; bounded
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
