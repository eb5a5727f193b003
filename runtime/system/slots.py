"""The two root slots: where they are, which one runs, what each holds.

The slots are the GPT partitions named ``root-a`` and ``root-b``; the GPT is
read straight from the disk (a block device on the appliance, an image file
in tests), so nothing here needs udev or a mounted filesystem. The running
slot is the one whose PARTUUID the kernel was given (``root=PARTUUID=…`` in
``/proc/cmdline``). What a slot holds is recorded on the data partition
(``slots/<slot>.json``, written by ``upgrade``); a slot without a record (the
one the image was built with) is described by its GRUB entry on the ESP.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lockgate.errors import Failure
from lockgate.files import atomic_write
from lockgate.paths import RELEASE_FILE, STATE_DIR, TRUSTED_KEYS_DIR, StatePaths
from lockgate.runtime.system import boot

SLOT_NAMES = {"a": "root-a", "b": "root-b"}
GPT_SIGNATURE = b"EFI PART"
WRITING, INSTALLED, INVALID = "writing", "installed", "invalid"


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    partuuid: str  # lower case
    first_lba: int
    last_lba: int
    sector: int

    @property
    def offset(self) -> int:
        return self.first_lba * self.sector

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * self.sector


def read_gpt(disk: Path) -> list[Partition]:
    """The partitions of the GPT on ``disk`` (512- or 4096-byte sectors)."""
    with disk.open("rb") as f:
        for sector in (512, 4096):
            f.seek(sector)
            header = f.read(92)
            if header[:8] == GPT_SIGNATURE:
                break
        else:
            raise Failure(f"{disk}: no GPT found (is this the appliance's disk?)")
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        f.seek(entries_lba * sector)
        table = f.read(count * entry_size)
    parts = []
    for i in range(count):
        entry = table[i * entry_size:(i + 1) * entry_size]
        if len(entry) < 128 or entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        parts.append(Partition(i + 1, name, str(uuid.UUID(bytes_le=entry[16:32])), first, last,
                               sector))
    return parts


def running_partuuid(cmdline: str) -> str | None:
    for word in cmdline.split():
        if word.startswith("root=PARTUUID="):
            return word.removeprefix("root=PARTUUID=").lower()
    return None


@dataclass
class SlotRecord:
    slot: str
    version: str
    partuuid: str
    fs_uuid: str
    state: str  # writing | installed | invalid
    installed: str = ""  # UTC, ISO 8601
    signer: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Machine:
    """Where the slots, the ESP and the data partition are (injectable for tests)."""

    disk: Path  # whole disk (device or image file) holding root-a and root-b
    esp: Path = boot.ESP_MOUNT
    state: StatePaths = field(default_factory=lambda: StatePaths(STATE_DIR))
    cmdline: Path = boot.CMDLINE
    release: Path = RELEASE_FILE
    keys_dir: Path = TRUSTED_KEYS_DIR
    # /dev/disk/by-partuuid; None: write the slot through ``disk`` at its offset
    by_partuuid: Path | None = Path("/dev/disk/by-partuuid")

    @property
    def grubenv(self) -> Path:
        return boot.grubenv_path(self.esp)

    @classmethod
    def detect(cls) -> Machine:
        """The appliance: the disk holding the partition named root-a."""
        link = Path("/dev/disk/by-partlabel") / SLOT_NAMES["a"]
        if not link.exists():
            raise Failure(f"{link} is missing: this is not a lockgate appliance (no root-a "
                          "partition)")
        part = Path(os.path.realpath(link)).name
        parent = Path(os.path.realpath(Path("/sys/class/block") / part)).parent.name
        return cls(disk=Path("/dev") / parent)


@dataclass(frozen=True)
class Slot:
    name: str  # a | b
    partition: Partition
    running: bool
    record: SlotRecord | None
    entry: str | None  # the GRUB entry id in grub/slot-<name>.cfg, if any

    @property
    def version(self) -> str | None:
        if self.record is not None:
            return self.record.version if self.record.state == INSTALLED else None
        return boot.version_of(self.entry) if self.entry else None


def record_path(machine: Machine, slot: str) -> Path:
    return machine.state.slots / f"{slot}.json"


def read_record(machine: Machine, slot: str) -> SlotRecord | None:
    try:
        data = json.loads(record_path(machine, slot).read_text())
        return SlotRecord(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        # Unreadable: treat the slot as holding nothing we can vouch for.
        return SlotRecord(slot, "", "", "", INVALID, reason="unreadable slot record")


def write_record(machine: Machine, record: SlotRecord) -> None:
    atomic_write(record_path(machine, record.slot),
                 (json.dumps(asdict(record), indent=2, sort_keys=True) + "\n").encode(),
                 mode=0o644, dir_mode=0o755)


def running_version(machine: Machine) -> str | None:
    """This root slot's own version (baked in at build time)."""
    try:
        data = json.loads(machine.release.read_text())
    except (OSError, ValueError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version else None


def slots(machine: Machine) -> dict[str, Slot]:
    parts = {p.name: p for p in read_gpt(machine.disk)}
    missing = [n for n in SLOT_NAMES.values() if n not in parts]
    if missing:
        raise Failure(f"{machine.disk}: no partition named {', '.join(missing)}")
    try:
        cmdline = machine.cmdline.read_text()
    except OSError:
        cmdline = ""
    running = running_partuuid(cmdline)
    entries = boot.installed_entries(machine.esp)
    found = {}
    for name, label in SLOT_NAMES.items():
        part = parts[label]
        found[name] = Slot(name, part, part.partuuid == running, read_record(machine, name),
                           entries.get(name))
    if running and not any(s.running for s in found.values()):
        raise Failure(f"the running root (PARTUUID={running}) is neither root-a nor root-b "
                      f"of {machine.disk}")
    return found


def running_and_inactive(machine: Machine) -> tuple[Slot, Slot]:
    found = slots(machine)
    running = [s for s in found.values() if s.running]
    if not running:
        raise Failure(f"cannot tell which slot is running: no root=PARTUUID= on the kernel "
                      f"command line ({machine.cmdline})")
    other = next(s for s in found.values() if not s.running)
    return running[0], other


def slot_target(machine: Machine, slot: Slot) -> tuple[Path, int]:
    """Where to write a slot: its own device node when udev made one, else the disk at
    the partition's offset."""
    if machine.by_partuuid is not None:
        node = machine.by_partuuid / slot.partition.partuuid
        if node.exists():
            return node, 0
    return machine.disk, slot.partition.offset
