"""z-initial-config and z-reset-password driven through a real pseudo-terminal.

Each test spawns the installed console script on a pty with pexpect, answers
its prompts like a person would, and then looks at the files it left under a
temporary ``--root``. Every expect has a 10 s bound; the child is always
closed (and killed if still running) when a test ends.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect", reason="pexpect is not installed (pip install pexpect)")

if importlib.util.find_spec("lockgate.firstboot.apply") is None:
    pytest.skip("lockgate.firstboot.apply (the apply functions) does not exist yet",
                allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from licence_keys import signed_key, trust_issuer  # noqa: E402

from lockgate.firstboot.apply.licence import licence_accepted  # noqa: E402
from lockgate.passwords import verify_password  # noqa: E402
from lockgate.paths import StatePaths  # noqa: E402

BIN = Path(sys.executable).parent
WIZARD = BIN / "z-initial-config"
RESET = BIN / "z-reset-password"
TIMEOUT = 10  # seconds, for every single expect
PASSWORD = "Sw0rdfish-42"
CLONE_MARKER = "User-data to configure another instance"


class Session:
    """One spawned program on a pty, with everything it printed kept for later checks."""

    def __init__(self, program: Path, *args: str) -> None:
        self.transcript = io.StringIO()
        env = {**os.environ, "TERM": "dumb", "LC_ALL": "C.UTF-8"}
        self.child = pexpect.spawn(str(program), list(args), encoding="utf-8",
                                   timeout=TIMEOUT, env=env, dimensions=(50, 200))
        self.child.logfile_read = self.transcript

    def expect(self, pattern: str) -> None:
        self.child.expect(pattern, timeout=TIMEOUT)

    def answer(self, prompt: str, text: str) -> None:
        self.expect(prompt)
        self.child.sendline(text)

    def finish(self) -> int:
        """Wait for the program to exit; its exit status."""
        self.child.expect(pexpect.EOF, timeout=TIMEOUT)
        self.child.close()
        status: int = self.child.exitstatus
        return status

    def close(self) -> None:
        if self.child.isalive():
            self.child.close(force=True)

    @property
    def text(self) -> str:
        return self.transcript.getvalue()


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    started: list[Session] = []
    yield started
    for session in started:
        session.close()


def spawn(sessions: list[Session], program: Path, *args: str) -> Session:
    session = Session(program, *args)
    sessions.append(session)
    return session


def answer_all(s: Session, *, timezone: str = "Europe/London", ntp: str = "",
               ssh: str = "", key: str = "") -> None:
    s.answer("Press return to continue", "")
    s.answer("Admin password: ", PASSWORD)
    s.answer("Re-enter to confirm: ", PASSWORD)
    s.answer("press return to decline: ", "accept")
    s.answer(r"Timezone \[", timezone)
    s.answer("NTP server", ntp)
    s.answer("SSH intrusion prevention", ssh)
    s.answer("Register with a Services Director", "")
    s.answer("Licence key file", key)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def read_json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def check_configured(root: Path, timezone: str = "Europe/London") -> None:
    paths = StatePaths.under_root(root)
    assert stat.S_IMODE(paths.users.stat().st_mode) == 0o600
    users = read_json(paths.users)["users"]
    assert isinstance(users, dict)
    assert verify_password(PASSWORD, users["admin"]["hash"])
    assert not verify_password(PASSWORD + "x", users["admin"]["hash"])
    assert licence_accepted(root)
    assert (paths.config / "timezone").read_text().strip() == timezone


def test_full_run_configures_and_never_echoes_the_password(tmp_path: Path,
                                                           sessions: list[Session]) -> None:
    root = tmp_path / "root"
    s = spawn(sessions, WIZARD, "--root", str(root))
    answer_all(s, ntp="ntp.example.org", ssh="n")
    s.expect("Admin password: +\\*{8}")
    s.answer(r"Apply these settings now\? \[y/N\]", "y")
    s.expect("Initial configuration finished")
    assert s.finish() == 0

    check_configured(root)
    config = StatePaths.under_root(root).config
    assert read_json(config / "security.json") == {"ssh_intrusion_prevention": False}
    assert read_json(config / "time.json") == {"ntp_server": "ntp.example.org"}
    assert not (config / "licence.key").exists()  # Community Edition

    before, _, after = s.text.partition(CLONE_MARKER)
    assert after, "the clone user-data block is missing"
    # Echo came back on after the password prompts: the next answers were echoed.
    assert "press return to decline: accept" in before
    assert "Timezone [America/Los_Angeles] ('help' lists them): Europe/London" in before
    assert PASSWORD not in before, "the password was echoed before the final user-data"
    assert f"password={PASSWORD} timezone=Europe/London accept_license=y" in after
    assert "cluster_host=" in after and ":9090 cluster_fingerprint=<FINGERPRINT>" in after
    assert "lockgate runtime fingerprint" in after


def test_bad_answers_are_explained_and_asked_again(tmp_path: Path, sessions: list[Session],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = trust_issuer(tmp_path / "issuers", monkeypatch)  # the wizard's child inherits it
    root = tmp_path / "root"
    s = spawn(sessions, WIZARD, "--root", str(root))
    s.answer("Press return to continue", "")
    s.answer("Admin password: ", "abc")
    s.expect("at least 6 characters long - please try again")
    s.answer("Admin password: ", "      ")
    s.expect("only spaces")
    s.answer("Admin password: ", PASSWORD)
    s.answer("Re-enter to confirm: ", PASSWORD + "-typo")
    s.expect("do not match")
    s.answer("Admin password: ", PASSWORD)
    s.answer("Re-enter to confirm: ", PASSWORD)
    s.answer("press return to decline: ", "maybe")
    s.expect("type 'accept'")
    s.answer("press return to decline: ", "YES")
    s.answer(r"Timezone \[", "Mars/Olympus_Mons")
    s.expect("unknown timezone 'Mars/Olympus_Mons'")
    s.answer(r"Timezone \[", "help Australia")
    s.expect("Australia/Sydney")
    s.answer(r"Timezone \[", "asia/tokyo")  # any case: stored as the canonical name
    s.answer("NTP server", "not a host!")
    s.expect("not a valid host name")
    s.answer("NTP server", "192.0.2.123")
    s.answer("SSH intrusion prevention", "perhaps")
    s.expect("answer y or n")
    s.answer("SSH intrusion prevention", "")
    s.answer("Register with a Services Director", "maybe")
    s.expect("answer y or n")
    s.answer("Register with a Services Director", "n")
    s.answer("Licence key file", str(tmp_path / "missing.key"))
    s.expect("no such file")
    forged = tmp_path / "forged.key"
    forged.write_bytes(signed_key(None))
    s.answer("Licence key file", str(forged))
    s.expect("signature is invalid")
    key = tmp_path / "site.key"
    key.write_bytes(signed_key(issuer))
    s.answer("Licence key file", str(key))
    s.answer(r"\[y/N\]", "y")
    assert s.finish() == 0

    check_configured(root, timezone="Asia/Tokyo")
    config = StatePaths.under_root(root).config
    assert read_json(config / "security.json") == {"ssh_intrusion_prevention": True}
    assert read_json(config / "time.json") == {"ntp_server": "192.0.2.123"}
    assert (config / "licence.key").read_bytes() == key.read_bytes()
    assert stat.S_IMODE((config / "licence.key").stat().st_mode) == 0o600
    assert PASSWORD not in s.text.partition(CLONE_MARKER)[0]


def test_declining_the_licence_changes_nothing(tmp_path: Path, sessions: list[Session]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    s = spawn(sessions, WIZARD, "--root", str(root))
    s.answer("Press return to continue", "")
    s.answer("Admin password: ", PASSWORD)
    s.answer("Re-enter to confirm: ", PASSWORD)
    s.answer("press return to decline: ", "")
    s.expect("licence not accepted: nothing changed")
    assert s.finish() == 1
    assert files_under(root) == []
    assert PASSWORD not in s.text


def test_ctrl_c_aborts_without_changes(tmp_path: Path, sessions: list[Session]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    s = spawn(sessions, WIZARD, "--root", str(root))
    s.answer("Press return to continue", "")
    s.answer("Admin password: ", PASSWORD)
    s.answer("Re-enter to confirm: ", PASSWORD)
    s.answer("press return to decline: ", "y")
    s.expect(r"Timezone \[")
    s.child.sendintr()
    s.expect("aborted, nothing changed")
    assert s.finish() == 130
    assert files_under(root) == []


def test_ctrl_c_at_a_password_prompt_restores_echo(tmp_path: Path,
                                                   sessions: list[Session]) -> None:
    root = tmp_path / "root"
    s = spawn(sessions, WIZARD, "--root", str(root))
    s.answer("Press return to continue", "")
    s.expect("Admin password: ")
    s.child.sendintr()
    s.expect("aborted, nothing changed")
    assert s.finish() == 130
    assert not root.exists()


def test_end_of_input_aborts_without_changes(tmp_path: Path, sessions: list[Session]) -> None:
    root = tmp_path / "root"
    s = spawn(sessions, WIZARD, "--root", str(root))
    s.answer("Press return to continue", "")
    s.expect("Admin password: ")
    s.child.sendeof()
    s.expect("aborted, nothing changed")
    assert s.finish() == 1
    assert not root.exists()


def test_no_at_the_summary_changes_nothing(tmp_path: Path, sessions: list[Session]) -> None:
    root = tmp_path / "root"
    s = spawn(sessions, WIZARD, "--root", str(root))
    answer_all(s)
    s.answer(r"\[y/N\]", "n")
    s.expect("aborted, nothing changed")
    assert s.finish() == 1
    assert not root.exists()


def test_record_then_replay_gives_the_same_appliance(tmp_path: Path,
                                                     sessions: list[Session]) -> None:
    recorded_root, replayed_root = tmp_path / "a", tmp_path / "b"
    replay = tmp_path / "answers.txt"
    s = spawn(sessions, WIZARD, "--root", str(recorded_root), "--record-to", str(replay))
    answer_all(s, timezone="Europe/Paris", ntp="pool.ntp.org", ssh="y")
    s.answer(r"\[y/N\]", "y")
    s.expect("mode 0600: it contains the admin password")
    assert s.finish() == 0
    assert stat.S_IMODE(replay.stat().st_mode) == 0o600
    assert f"password={PASSWORD}\n" in replay.read_text()

    done = subprocess.run([str(WIZARD), "--root", str(replayed_root), "--replay-from", str(replay)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    assert "Press return" not in done.stdout  # unattended: no prompts
    assert done.stderr == ""  # the file is 0600: no warning

    check_configured(replayed_root, timezone="Europe/Paris")
    assert files_under(recorded_root) == files_under(replayed_root)
    for name in files_under(recorded_root):
        a, b = recorded_root / name, replayed_root / name
        assert stat.S_IMODE(a.lstat().st_mode) == stat.S_IMODE(b.lstat().st_mode), name
        if name.endswith(("users.json", "licence.json")):
            continue  # salted hashes and acceptance times differ by design
        if a.is_symlink():
            assert os.readlink(a) == os.readlink(b), name
        else:
            assert a.read_bytes() == b.read_bytes(), name


def test_reset_password_through_the_pty(tmp_path: Path, sessions: list[Session]) -> None:
    root = tmp_path / "root"
    s = spawn(sessions, RESET, "--root", str(root))
    s.answer(r"User \[admin\]: ", "")
    s.answer("New password: ", "short")
    s.expect("at least 6 characters")
    s.answer("New password: ", PASSWORD)
    s.answer("Re-enter to confirm: ", PASSWORD)
    s.expect("Password for user 'admin' changed")
    assert s.finish() == 0
    assert PASSWORD not in s.text

    users = StatePaths.under_root(root).users
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert verify_password(PASSWORD, read_json(users)["users"]["admin"]["hash"])  # type: ignore[index]


def test_reset_password_from_stdin_for_scripts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = subprocess.run([str(RESET), "--root", str(root), "--user", "ops", "--password-stdin"],
                          input=PASSWORD + "\n", capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    users = read_json(StatePaths.under_root(root).users)["users"]
    assert verify_password(PASSWORD, users["ops"]["hash"])  # type: ignore[index]

    bad = subprocess.run([str(RESET), "--root", str(root), "--password-stdin"],
                         input="abc\n", capture_output=True, text=True,
                         timeout=TIMEOUT, check=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: password: ")
    assert "admin" not in read_json(StatePaths.under_root(root).users)["users"]  # type: ignore[operator]
