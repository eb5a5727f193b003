"""Trial boots: commit when healthy, record and reboot when not, report a rollback after.

The REST check talks to a real HTTPS server on loopback; the grubenv is a
real block that Debian's grub-editenv reads; systemd's view of the runtime
unit (restart count) is the one thing given as data.
"""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.runtime import tls
from lockgate.runtime.system import boot, health


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)  # the REST API without credentials: still an answer
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rest_port(tmp_path: Path) -> Iterator[int]:
    key_pem, cert_pem = tls.generate("lockgate", ["127.0.0.1"])
    (tmp_path / "key.pem").write_bytes(key_pem)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Machine:
    """One appliance's boot files in a temporary folder."""

    def __init__(self, root: Path, rest_port: int) -> None:
        self.env = root / "esp/grub/grubenv"
        self.env.parent.mkdir(parents=True)
        boot.write_env(self.env, {"saved_entry": "lockgate-1.0"})
        self.state_dir = root / "state"
        self.cmdline = root / "cmdline"
        self.firstboot = root / "run/firstboot.json"
        self.firstboot.parent.mkdir()
        self.runtime = health.RuntimeState("active", 0)
        self.probes = health.Probes(firstboot_status=self.firstboot,
                                    health_command=health.health_command_path(self.state_dir),
                                    rest_port=rest_port, runtime=lambda: self.runtime)
        self.said: list[str] = []
        self.reboots = 0

    def boot(self, entry: str, slot: str) -> None:
        """What GRUB does: consume next_entry (a trial) or boot saved_entry."""
        env = boot.read_env(self.env)
        trial = bool(env.get("next_entry"))
        if trial:
            boot.update_env(self.env, unset=("next_entry",))
        self.cmdline.write_text(f"ro lockgate.entry={entry} lockgate.slot={slot} "
                                f"lockgate.trial={int(trial)}\n")

    def check(self, deadline: float = 20.0) -> str:
        return health.commit_boot(env_path=self.env, cmdline_path=self.cmdline,
                                  state_dir=self.state_dir, probes=self.probes,
                                  deadline=deadline, reboot=self._reboot, say=self.said.append,
                                  interval=0.05)

    def _reboot(self) -> None:
        self.reboots += 1


def editenv_list(env: Path) -> str:
    return subprocess.run(["grub-editenv", str(env), "list"], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_a_healthy_trial_becomes_the_default(tmp_path: Path, rest_port: int) -> None:
    m = Machine(tmp_path, rest_port)
    boot.schedule_trial("lockgate-2.0", env_path=m.env, state_dir=m.state_dir)
    m.boot("lockgate-2.0", "b")
    m.firstboot.write_text("{}")
    assert m.check() == "committed"
    assert editenv_list(m.env) == "saved_entry=lockgate-2.0\n"
    record = boot.read_trial_record(m.state_dir)
    assert record and record["state"] == "committed" and record["previous"] == "lockgate-1.0"
    assert m.reboots == 0
    assert any("lockgate 2.0 is healthy" in line for line in m.said)
    m.boot("lockgate-2.0", "b")  # the next boot is an ordinary one
    assert m.check() == "normal"
    assert m.said[-1] == "running lockgate 2.0 (slot b), the default"


def test_a_crash_looping_runtime_rolls_back_and_the_next_boot_says_so(
        tmp_path: Path, rest_port: int) -> None:
    m = Machine(tmp_path, rest_port)
    boot.schedule_trial("lockgate-2.0", env_path=m.env, state_dir=m.state_dir)
    m.boot("lockgate-2.0", "b")
    m.firstboot.write_text("{}")
    m.runtime = health.RuntimeState("activating", 5)
    assert m.check() == "failed"
    assert m.reboots == 1
    assert editenv_list(m.env) == "saved_entry=lockgate-1.0\n"  # never committed
    assert "crash-looping (5 restarts" in m.said[-1] and "rebooting into lockgate 1.0" in m.said[-1]
    m.boot("lockgate-1.0", "a")
    assert m.check() == "rolled-back"
    assert m.said[-2].startswith("the trial boot of lockgate 2.0 was ROLLED BACK: "
                                 "lockgate.service is crash-looping")
    assert m.said[-1] == "running lockgate 1.0 (slot a), the default"
    lines = health.format_status(health.status_report(env_path=m.env, cmdline_path=m.cmdline,
                                                      state_dir=m.state_dir,
                                                      esp=tmp_path / "esp"))
    assert lines[0] == "running:    lockgate 1.0 (slot a, entry lockgate-1.0)"
    assert lines[1] == "default:    lockgate-1.0"
    assert lines[-1].startswith("last trial: lockgate-2.0: ROLLED BACK at ")
    m.boot("lockgate-1.0", "a")
    assert m.check() == "normal"  # said once, kept in the record


def test_a_failing_user_health_command_fails_the_trial_at_the_deadline(
        tmp_path: Path, rest_port: int) -> None:
    m = Machine(tmp_path, rest_port)
    command = health.health_command_path(m.state_dir)
    command.parent.mkdir(parents=True)
    command.write_text("echo backend not reachable; exit 3\n")
    boot.schedule_trial("lockgate-2.0", env_path=m.env, state_dir=m.state_dir)
    m.boot("lockgate-2.0", "b")
    m.firstboot.write_text("{}")
    assert m.check(deadline=0.5) == "failed"
    record = boot.read_trial_record(m.state_dir)
    assert record and record["reason"] == ("not healthy within 0.5 s: user health command "
                                           "exited 3: backend not reachable")
    command.write_text("true\n")  # fixed: the next trial commits
    boot.schedule_trial("lockgate-2.0", env_path=m.env, state_dir=m.state_dir)
    m.boot("lockgate-2.0", "b")
    assert m.check() == "committed"


def test_no_rest_answer_is_a_failed_trial(tmp_path: Path) -> None:
    m = Machine(tmp_path, rest_port=1)  # nothing listens on port 1
    m.boot("lockgate-1.0", "a")
    boot.schedule_trial("lockgate-2.0", env_path=m.env, state_dir=m.state_dir)
    m.boot("lockgate-2.0", "b")
    m.firstboot.write_text("{}")
    assert m.check(deadline=0.3) == "failed"
    assert "the REST API (port 1) does not answer" in m.said[-1]


def test_a_trial_that_never_reached_user_space_is_reported_rolled_back(
        tmp_path: Path, rest_port: int) -> None:
    m = Machine(tmp_path, rest_port)
    boot.schedule_trial("lockgate-2.0", env_path=m.env, state_dir=m.state_dir)
    m.boot("lockgate-2.0", "b")  # GRUB consumed next_entry; the kernel panicked
    m.boot("lockgate-1.0", "a")  # panic=10 reset: GRUB boots saved_entry
    assert m.check() == "rolled-back"
    assert m.said[-2] == ("the trial boot of lockgate 2.0 was ROLLED BACK: "
                          + health.ROLLED_BACK_UNKNOWN)


def test_a_pending_trial_is_left_alone_and_set_by_hand_counts_as_committed(
        tmp_path: Path, rest_port: int) -> None:
    m = Machine(tmp_path, rest_port)
    boot.schedule_trial("lockgate-2.0", env_path=m.env, state_dir=m.state_dir)
    m.cmdline.write_text("ro lockgate.entry=lockgate-1.0 lockgate.slot=a lockgate.trial=0\n")
    assert m.check() == "normal"  # next_entry still pending: nothing to say yet
    record = boot.read_trial_record(m.state_dir)
    assert record and record["state"] == "scheduled"
    boot.set_default("lockgate-2.0", env_path=m.env)  # grub-set-default before the reboot
    m.boot("lockgate-2.0", "b")
    assert m.check() == "normal"
    record = boot.read_trial_record(m.state_dir)
    assert record and record["state"] == "committed"


def test_lockgate_system_status_is_a_command() -> None:
    """`lockgate system status --json` (issue 11): on a host without the appliance's ESP it
    still answers, naming what it could not read instead of failing."""
    import json
    import sys

    proc = subprocess.run([sys.executable, "-m", "lockgate", "system", "status", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "grubenv" in report["grubenv_error"]
