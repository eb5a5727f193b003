"""``upgrade BUNDLE``: a verified bundle into the inactive slot, then a one-time trial boot.

Order matters for power cuts and for refusals:

1. everything about the bundle is checked (signature, architecture, every
   stored byte's hash), then versions, sizes and free space: a refused bundle
   writes nothing at all;
2. GRUB is made to forget the inactive slot (its default moved off it, its
   ``slot-<x>.cfg`` removed) and the slot's record says ``writing``: from here
   until step 4 nothing can boot the half-written slot;
3. the root filesystem streams from ``zstd -dc`` into the slot, hashed as it
   goes; a wrong hash leaves the record ``invalid`` and no entry for it;
4. the running configuration is copied for the new version, the record says
   ``installed``, the slot's GRUB entry ``lockgate-<version>`` is written, and
   a one-time trial boot (``next_entry``) is scheduled. The trial becomes the
   default only when it proves healthy (``lockgate.runtime.system.health``).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lockgate.errors import BadInput, Failure
from lockgate.files import fsync_dir
from lockgate.runtime.system import boot, configs
from lockgate.runtime.system import bundle as bundles
from lockgate.runtime.system.keys import PublicKey
from lockgate.runtime.system.slots import (
    INSTALLED,
    INVALID,
    WRITING,
    Machine,
    Slot,
    SlotRecord,
    running_and_inactive,
    running_version,
    slot_target,
    write_record,
)

MiB = 1024 * 1024
CONFIG_MARGIN = 4 * MiB  # records, grubenv and a little slack on the data partition

Say = Callable[[str], None]


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions as people read them: 0.10.0 > 0.9.1, 1.0 > 1.0~rc1, 1.0-2 > 1.0.

    Runs of digits compare as numbers, other runs as text; a ``~`` part sorts
    before anything (as in Debian), so a release candidate precedes its release.
    """
    parts: list[tuple[int, int | str]] = []
    for token in re.findall(r"\d+|[A-Za-z]+|~", version):
        if token == "~":
            parts.append((-1, 0))
        elif token.isdigit():
            parts.append((1, int(token)))
        else:
            parts.append((0, token))
    parts.append((-1, 1))  # the end: after a "~" part, before anything else
    return tuple(parts)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Progress:
    """Percent and MiB/s on the console: a rewritten line on a terminal, else every 10 %."""

    def __init__(self, say: Say, what: str, tty: bool) -> None:
        self.say, self.what, self.tty = say, what, tty
        self.started = time.monotonic()
        self.last_step = -1
        self.last_time = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        percent = done * 100 // total if total else 100
        step = percent // 10
        if self.tty and now - self.last_time < 0.25 and done < total:
            return
        if not self.tty and step == self.last_step:
            return
        self.last_step, self.last_time = step, now
        rate = done / MiB / max(now - self.started, 1e-6)
        self.say(f"{self.what}: {percent:3d}% {done / MiB:7.1f}/{total / MiB:.1f} MiB "
                 f"{rate:6.1f} MiB/s")

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Result:
    version: str
    slot: str
    entry: str
    signer: str
    write_s: float
    total_s: float
    size: int


def _check_versions(bundle: bundles.Bundle, running: str | None, allow_downgrade: bool) -> None:
    new = bundle.version
    if running is None:
        return
    if new == running:
        raise BadInput(f"{bundle.path}: version {new} is already running; nothing to do")
    if version_key(new) < version_key(running) and not allow_downgrade:
        raise BadInput(f"{bundle.path}: version {new} is older than the running {running}; "
                       "refusing a downgrade (use --allow-downgrade, or rollback to go back "
                       "to the version still installed)")


def _check_space(machine: Machine, bundle: bundles.Bundle, target: Slot) -> None:
    rootfs = bundle.rootfs
    assert rootfs.uncompressed_size is not None
    if rootfs.uncompressed_size > target.partition.size:
        raise Failure(f"{bundle.path}: the root filesystem is {rootfs.uncompressed_size / MiB:.0f}"
                      f" MiB; slot {target.name} holds {target.partition.size / MiB:.0f} MiB")
    if not machine.state.base.is_dir():
        raise Failure(f"{machine.state.base} is missing: the data partition is not mounted")
    need = configs.config_size(machine.state) + CONFIG_MARGIN
    free = shutil.disk_usage(machine.state.base).free
    if free < need:
        raise Failure(f"the data partition ({machine.state.base}) has {free / MiB:.1f} MiB free; "
                      f"copying the configuration for the new version needs {need / MiB:.1f} MiB")


def _running_entry(machine: Machine, running: Slot) -> str | None:
    state = boot.boot_state(env_path=machine.grubenv, cmdline_path=machine.cmdline)
    entry = state.get("running_entry") or running.entry
    return str(entry) if entry else None


def _forget_slot(machine: Machine, running: Slot, target: Slot) -> None:
    """Nothing may boot the target slot while it is rewritten."""
    env = boot.read_env(machine.grubenv) if machine.grubenv.exists() else {}
    if target.entry and target.entry in (env.get("saved_entry"), env.get("next_entry")):
        entry = _running_entry(machine, running)
        if entry is None:
            raise Failure("GRUB's default is the slot to be overwritten and the running "
                          "version's entry is unknown; run grub-set-default first")
        boot.set_default(entry, env_path=machine.grubenv)
    entry_file = machine.esp / "grub" / f"slot-{target.name}.cfg"
    if entry_file.exists():
        entry_file.unlink()
        fsync_dir(entry_file.parent)


BLKZEROOUT = 0x127F  # _IO(0x12, 127): zero a byte range of a block device


class SlotWriter:
    """Writes verified blocks at their place in the slot. On a block device a run of zero
    blocks becomes one BLKZEROOUT (the device zeroes or unmaps it, no data crosses the
    bus); elsewhere, or if the device refuses, zeros are written like any data."""

    def __init__(self, fd: int, base: int, block_device: bool) -> None:
        self.fd, self.base = fd, base
        self.zero_ioctl = block_device
        self.run_start = self.run_length = 0

    def __call__(self, offset: int, data: bytes | bytearray, zero: bool) -> None:
        if zero and self.zero_ioctl:
            if self.run_length and self.run_start + self.run_length == offset:
                self.run_length += len(data)
            else:
                self.flush()
                self.run_start, self.run_length = offset, len(data)
            return
        self.flush()
        self._write(self.base + offset, memoryview(data))

    def _write(self, position: int, data: memoryview) -> None:
        while data:
            written = os.pwrite(self.fd, data, position)
            position += written
            data = data[written:]

    def flush(self) -> None:
        if not self.run_length:
            return
        start, length = self.base + self.run_start, self.run_length
        self.run_length = 0
        try:
            fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("QQ", start, length))
        except OSError:
            self.zero_ioctl = False  # not supported here: write the zeros instead
            zeros = memoryview(bytes(min(length, 4 * MiB)))
            done = 0
            while done < length:
                piece = zeros[:min(len(zeros), length - done)]
                self._write(start + done, piece)
                done += len(piece)


def _write_slot(machine: Machine, bundle: bundles.Bundle, target: Slot,
                progress: Progress) -> None:
    path, offset = slot_target(machine, target)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        writer = SlotWriter(fd, offset, stat.S_ISBLK(os.fstat(fd).st_mode))
        bundles.stream_rootfs(bundle, writer, progress)
        writer.flush()
        os.fsync(fd)
    finally:
        os.close(fd)


def install(machine: Machine, source: Path, trusted: list[PublicKey], *,
            allow_unsigned: bool = False, allow_downgrade: bool = False,
            architecture: str | None = None, say: Say = print, tty: bool = False) -> Result:
    """Everything but the reboot. Raises with one line for every refusal."""
    started = time.monotonic()
    say(f"checking {source} ...")
    bundle, signer = bundles.open_verified(
        source, trusted, architecture=architecture or bundles.machine_architecture(),
        allow_unsigned=allow_unsigned)
    say(f"bundle {bundle.version}, signed by {signer}: good")
    running, target = running_and_inactive(machine)
    current = running_version(machine) or running.version
    _check_versions(bundle, current, allow_downgrade)
    _check_space(machine, bundle, target)
    cmdline = bundles.read_member(bundle, bundles.CMDLINE).decode().strip()
    entry = boot.entry_id(bundle.version)
    replacing = f" (replacing {target.version})" if target.version else ""
    say(f"installing {bundle.version} into slot {target.name}{replacing}; "
        f"running {current or '?'} from slot {running.name}")

    _forget_slot(machine, running, target)
    record = SlotRecord(target.name, bundle.version, target.partition.partuuid, bundle.fs_uuid,
                        WRITING, signer=signer)
    write_record(machine, record)
    progress = Progress(say, f"writing slot {target.name}", tty)
    try:
        _write_slot(machine, bundle, target, progress)
    except (bundles.BundleError, OSError) as exc:
        record.state, record.reason = INVALID, str(exc)
        write_record(machine, record)
        if isinstance(exc, OSError):
            raise Failure(f"writing slot {target.name}: {exc}") from exc
        raise
    write_s = progress.seconds
    assert bundle.rootfs.uncompressed_size is not None
    size = bundle.rootfs.uncompressed_size
    say(f"slot {target.name} written and verified: {size / MiB:.0f} MiB in {write_s:.1f} s "
        f"({size / MiB / max(write_s, 1e-6):.0f} MiB/s)")

    if current:
        configs.copy_for(machine.state, current, bundle.version)
        configs.prune(machine.state, {current, bundle.version})
        say(f"configuration of {current} copied for {bundle.version}")
    record.state, record.installed = INSTALLED, _now()
    write_record(machine, record)
    boot.install_entry(machine.esp, target.name, bundle.version, bundle.fs_uuid,
                       target.partition.partuuid, cmdline)
    boot.schedule_trial(entry, env_path=machine.grubenv, state_dir=machine.state.base)
    say(f"GRUB entry {entry} written; the next boot tries it once, and it becomes the default "
        "when it proves healthy (else the machine comes back to "
        f"{current or 'the running version'})")
    return Result(bundle.version, target.name, entry, signer, write_s,
                  time.monotonic() - started, size)
