"""lockgate.runtime.system.boot against Debian's own GRUB tools on a real grubenv."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lockgate.runtime.system import boot

ENV_TOOLS = ("grub-editenv", "grub-set-default", "grub-reboot")


def tool(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.fail(f"{name} is missing: install grub-common and grub2-common "
                    "(scripts/apt-packages.txt)")
    return found


def editenv(env: Path, *args: str) -> str:
    return subprocess.run([tool("grub-editenv"), str(env), *args], capture_output=True,
                          text=True, check=True, timeout=30).stdout


def debian(command: str, boot_dir: Path, entry: str) -> None:
    """grub-set-default / grub-reboot as on the appliance, with /boot moved to ``boot_dir``."""
    subprocess.run([tool(command), f"--boot-directory={boot_dir}", entry], capture_output=True,
                   text=True, check=True, timeout=30)


@pytest.fixture
def boot_dir(tmp_path: Path) -> Path:
    """A /boot whose grub/grubenv is the one the build writes."""
    (tmp_path / "boot/grub").mkdir(parents=True)
    (tmp_path / "boot/grub/grubenv").write_bytes(boot.encode_env({"saved_entry": "lockgate-1.0"}))
    return tmp_path / "boot"


def test_our_block_is_what_grub_editenv_reads_and_writes(boot_dir: Path) -> None:
    env = boot_dir / "grub/grubenv"
    assert editenv(env, "list") == "saved_entry=lockgate-1.0\n"
    editenv(env, "set", "next_entry=lockgate-2.0", "other=x y")
    assert boot.read_env(env) == {"saved_entry": "lockgate-1.0", "next_entry": "lockgate-2.0",
                                  "other": "x y"}
    boot.write_env(env, {"saved_entry": "lockgate-3.0"})
    assert editenv(env, "list") == "saved_entry=lockgate-3.0\n"
    assert env.stat().st_size == 1024


def test_write_env_rewrites_the_same_file_in_place(boot_dir: Path) -> None:
    """GRUB's save_env writes through the blocks it read: the file must not move."""
    env = boot_dir / "grub/grubenv"
    before = os.stat(env)
    boot.update_env(env, {"next_entry": "lockgate-2.0"})
    after = os.stat(env)
    assert (after.st_ino, after.st_size) == (before.st_ino, 1024)
    data = env.read_bytes()
    assert data.startswith(b"# GRUB Environment Block\nsaved_entry=lockgate-1.0\n"
                           b"next_entry=lockgate-2.0\n#")


def test_a_missing_or_damaged_block_is_made_afresh(tmp_path: Path) -> None:
    env = tmp_path / "grub/grubenv"
    boot.write_env(env, {"saved_entry": "lockgate-1.0"})
    assert editenv(env, "list") == "saved_entry=lockgate-1.0\n"
    env.write_bytes(b"# GRUB Environment Block\nsaved_entry=x\n")  # truncated
    boot.write_env(env, {"saved_entry": "lockgate-2.0"})
    assert env.stat().st_size == 1024 and boot.read_env(env) == {"saved_entry": "lockgate-2.0"}
    env.write_bytes(b"\0" * 1024)
    with pytest.raises(ValueError, match="not a GRUB environment block"):
        boot.read_env(env)


def test_bad_values_are_refused_not_escaped() -> None:
    with pytest.raises(ValueError, match="newline or backslash"):
        boot.encode_env({"saved_entry": "a\nnext_entry=b"})
    with pytest.raises(ValueError, match="GRUB variable name"):
        boot.encode_env({"bad key": "x"})
    with pytest.raises(ValueError, match="block holds 1024"):
        boot.encode_env({"x": "y" * 1100})


def test_debians_grub_reboot_and_grub_set_default_drive_boot_state(boot_dir: Path,
                                                                   tmp_path: Path) -> None:
    env = boot_dir / "grub/grubenv"
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("root=PARTUUID=x ro lockgate.entry=lockgate-1.0 lockgate.slot=a "
                       "lockgate.trial=0 quiet\n")
    debian("grub-reboot", boot_dir, "lockgate-2.0")
    state = boot.boot_state(env_path=env, cmdline_path=cmdline)
    assert state["saved_entry"] == "lockgate-1.0" and state["next_entry"] == "lockgate-2.0"
    assert state["running_entry"] == "lockgate-1.0" and state["running_version"] == "1.0"
    assert state["running_slot"] == "a" and state["trial"] is False
    debian("grub-set-default", boot_dir, "lockgate-2.0")
    state = boot.boot_state(env_path=env, cmdline_path=cmdline)
    # grub-set-default drops a pending one-time entry; so does ours.
    assert state["saved_entry"] == "lockgate-2.0" and state["next_entry"] is None
    boot.schedule_trial("lockgate-1.0", env_path=env, state_dir=tmp_path / "state")
    boot.set_default("lockgate-1.0", env_path=env)
    assert editenv(env, "list") == "saved_entry=lockgate-1.0\n"


def test_schedule_trial_records_it_before_setting_next_entry(boot_dir: Path,
                                                            tmp_path: Path) -> None:
    env, state_dir = boot_dir / "grub/grubenv", tmp_path / "state"
    boot.schedule_trial("lockgate-2.0", env_path=env, state_dir=state_dir)
    assert editenv(env, "list") == "saved_entry=lockgate-1.0\nnext_entry=lockgate-2.0\n"
    record = boot.read_trial_record(state_dir)
    assert record is not None
    assert (record["entry"], record["previous"], record["state"]) == (
        "lockgate-2.0", "lockgate-1.0", "scheduled")
    for bad in ("other-2.0", "lockgate-2 0", 'lockgate-"x', ""):
        with pytest.raises(ValueError):
            boot.schedule_trial(bad, env_path=env, state_dir=state_dir)
        with pytest.raises(ValueError):
            boot.set_default(bad, env_path=env)


def test_a_trial_boot_is_read_from_the_kernel_command_line(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/boot/vmlinuz lockgate.entry=lockgate-2.0 lockgate.slot=b "
                       "lockgate.trial=1\n")
    state = boot.boot_state(env_path=tmp_path / "missing", cmdline_path=cmdline)
    assert state["trial"] is True and state["running_slot"] == "b"
    assert state["saved_entry"] is None and "missing" in state["grubenv_error"]
    cmdline.write_text("root=/dev/sda1 ro\n")  # not booted by lockgate's GRUB
    state = boot.boot_state(env_path=tmp_path / "missing", cmdline_path=cmdline)
    assert state["running_entry"] is None and state["trial"] is False


def test_install_entry_writes_a_slot_file_grub_parses(tmp_path: Path) -> None:
    esp = tmp_path / "esp"
    boot.install_entry(esp, "b", "2.0", "0f4f35f2-959f-5e9d-9f1c-76a3593fa0e4",
                       "f7b2e614-66e9-5ace-ba75-201a16feaf19",
                       "ro console=ttyS0,115200 panic=10 lockgate.entry=stale")
    text = (esp / "grub/slot-b.cfg").read_text()
    assert '--id "lockgate-2.0"' in text
    linux = next(line.strip() for line in text.splitlines() if line.strip().startswith("linux"))
    assert linux == ("linux /boot/vmlinuz root=PARTUUID=f7b2e614-66e9-5ace-ba75-201a16feaf19 "
                     "ro console=ttyS0,115200 panic=10 lockgate.entry=lockgate-2.0 "
                     "lockgate.slot=b lockgate.trial=${lockgate_trial}")
    assert not list((esp / "grub").glob(".slot-b.cfg.*"))  # no temp file left behind
    boot.install_entry(esp, "a", "1.0", "u-1", "p-1", "ro")
    assert boot.installed_entries(esp) == {"a": "lockgate-1.0", "b": "lockgate-2.0"}
    checker = shutil.which("grub-script-check")
    if checker:
        subprocess.run([checker, str(esp / "grub/slot-b.cfg")], check=True, timeout=30)
