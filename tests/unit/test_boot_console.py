"""Serial console: marker parsing, the quiet watchdog, and the reader on a real pipe."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.image.boot.console import (
    FIRSTBOOT_RE,
    BootError,
    Console,
    FirstbootDone,
    QuietWatchdog,
    RuntimeServing,
    clean,
    parse_firstboot,
    parse_runtime,
)

FP = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01"
CONSOLE = (
    "\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\n"
    "[    1.234] Linux version 6.1.0-28-cloud-amd64\r\n"
    "lockgate-firstboot: done state=configured instance=i-0123456789abcdef0 source=ec2\r\n"
    f"lockgate-runtime: serving admin=https://168.0.0.15:9090 rest=https://168.0.0.15:9070 "
    f"fingerprint={FP}\r\n"
)


def test_markers_are_parsed_from_raw_console_text() -> None:
    assert parse_firstboot(CONSOLE) == FirstbootDone("configured", "i-0123456789abcdef0", "ec2")
    assert parse_runtime(CONSOLE) == RuntimeServing(
        "https://168.0.0.15:9090", "https://168.0.0.15:9070", FP)
    assert parse_firstboot("lockgate-firstboot: starting") is None
    assert parse_runtime("no marker here") is None


def test_needs_configuration_state_and_partial_runtime_line() -> None:
    text = ("lockgate-firstboot: done state=needs-initial-configuration instance=iid-x "
            "source=nocloud\nlockgate-runtime: serving admin=https://10.0.2.15:9090\n")
    done = parse_firstboot(text)
    assert done is not None and done.state == "needs-initial-configuration"
    assert parse_runtime(text) == RuntimeServing("https://10.0.2.15:9090", None, None)


def test_clean_strips_escapes_and_carriage_returns() -> None:
    assert clean("\x1b[1m\x1b[33mBold\x1b[0m\r\nnext\rline") == "Bold\nnext\nline"


def test_quiet_watchdog_with_a_fake_clock() -> None:
    now = [100.0]
    dog = QuietWatchdog(30, clock=lambda: now[0])
    now[0] = 129.9
    assert not dog.expired() and dog.remaining() == pytest.approx(0.1)
    dog.feed()
    now[0] = 159.0
    assert not dog.expired()
    now[0] = 160.0
    assert dog.expired() and dog.remaining() == 0


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    # End of the console (EOF), then wait for its reader thread, and only then close the
    # read end: a reader still running would read from whatever file next gets that
    # descriptor number (it once swallowed the next test's subprocess output).
    with contextlib.suppress(OSError):  # already closed by the test
        os.close(write_fd)
    for thread in threading.enumerate():
        if thread.name == "serial-console":
            thread.join(10)
            assert not thread.is_alive(), "a console reader did not stop at EOF"
    os.close(read_fd)


def test_console_reader_logs_and_finds_markers(tmp_path: Path, pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    seen: list[str] = []
    console = Console(read_fd, tmp_path / "console.log", quiet_timeout=10,
                      on_milestone=lambda name, t: seen.append(name))
    half = len(CONSOLE) // 2
    os.write(write_fd, CONSOLE[:half].encode())
    os.write(write_fd, CONSOLE[half:].encode())
    match = console.wait_for(re.compile(r"fingerprint=(\S+)"), timeout=5)
    assert match[1] == FP
    os.close(write_fd)
    console.join()
    assert (tmp_path / "console.log").read_bytes() == CONSOLE.encode()
    assert seen == ["firmware", "Linux kernel", "first boot done", "runtime serving"]


def test_console_quiet_for_too_long_is_an_error_naming_the_log(
        tmp_path: Path, pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    console = Console(read_fd, tmp_path / "c.log", quiet_timeout=0.3)
    os.write(write_fd, b"GRUB loading\r\n")
    started = time.monotonic()
    with pytest.raises(BootError, match=r"no new console output for 0.3 s .*c\.log"):
        console.wait_for("lockgate-runtime: serving", timeout=30, what="the runtime marker")
    assert time.monotonic() - started < 5


def test_console_overall_timeout_while_output_keeps_coming(
        tmp_path: Path, pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    console = Console(read_fd, tmp_path / "c.log", quiet_timeout=10)
    os.write(write_fd, b"still booting\n")
    with pytest.raises(BootError, match=r"did not appear on the console within 0\.5 s"):
        console.wait_for("never", timeout=0.5)


def test_console_closed_means_qemu_exited(tmp_path: Path, pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    console = Console(read_fd, tmp_path / "c.log", quiet_timeout=10)
    os.write(write_fd, b"Kernel panic - not syncing\n")
    os.close(write_fd)
    with pytest.raises(BootError, match="QEMU exited before"):
        console.wait_for("lockgate-firstboot: done", timeout=5)
    assert "Kernel panic" in console.text


def test_a_marker_counts_only_once_its_line_is_complete(tmp_path: Path, pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    console = Console(read_fd, tmp_path / "c.log", quiet_timeout=10)
    os.write(write_fd, b"lockgate-firstboot: done state=configured instance=42 source=g")
    with pytest.raises(BootError, match=r"within 0\.3 s"):
        console.wait_for(FIRSTBOOT_RE, timeout=0.3)
    assert parse_firstboot(console.text) is None
    os.write(write_fd, b"ce\r\n")
    match = console.wait_for(FIRSTBOOT_RE, timeout=5)
    assert parse_firstboot(match.group(0)) == FirstbootDone("configured", "42", "gce")


def test_a_line_end_split_between_reads_is_one_line_end(tmp_path: Path, pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    console = Console(read_fd, tmp_path / "c.log", quiet_timeout=10)
    os.write(write_fd, b"one\r")
    time.sleep(0.3)  # the reader takes "one\r" as a read of its own
    os.write(write_fd, b"\ntwo\r\n")
    console.wait_for(r"two\n", timeout=5)
    assert console.text == "one\ntwo\n"
