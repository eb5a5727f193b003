"""``z-expand-logs-partition``: grow the data partition to the end of a bigger disk.

The data partition (``/var/lib/lockgate``, GPT name ``data``) is the last one
on the disk; a cloud disk made bigger than the image leaves free space after
it. Growing is two halves: the partition table (``sfdisk``: move the backup
GPT header to the new end, then extend partition N with ``,+``) and the
filesystem (``partx -u`` so the kernel sees the new size, ``resize2fs``
online). The table half also works on a disk image file; the filesystem half
needs the block device. Nothing but the data partition is ever changed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import click

from lockgate.errors import BadInput, LockgateError
from lockgate.paths import STATE_DIR
from lockgate.proc import output, run

MIB = 1024 * 1024
MIN_GAIN_BYTES = 16 * MIB
MIN_GAIN_FRACTION = 0.01
GPT_BACKUP_SECTORS = 33  # backup partition entries (32 sectors of 512 B) + backup header


@dataclass(frozen=True)
class Partition:
    number: int
    node: str  # device node (or "<file><n>" for an image file)
    start: int  # sectors
    size: int  # sectors
    name: str


@dataclass(frozen=True)
class Plan:
    disk: str
    partition: Partition
    sector_size: int
    disk_bytes: int
    new_size: int  # sectors; == partition.size when there is nothing worth doing

    @property
    def gain_bytes(self) -> int:
        return (self.new_size - self.partition.size) * self.sector_size

    def worth_it(self) -> bool:
        """The rule for ``--auto``: at least 16 MiB and 1 % of the disk to gain."""
        return self.gain_bytes >= max(MIN_GAIN_BYTES, MIN_GAIN_FRACTION * self.disk_bytes)


def read_table(disk: str) -> dict[str, object]:
    table = json.loads(output(["sfdisk", "--json", disk]))["partitiontable"]
    if table.get("label") != "gpt":
        raise BadInput(f"{disk}: not a GPT disk (label {table.get('label')!r})")
    result: dict[str, object] = table
    return result


def disk_bytes(disk: str) -> int:
    """The size of a disk device or image file (seeking to the end works for both)."""
    fd = os.open(disk, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def data_partition(table: dict[str, object]) -> Partition:
    """The partition named ``data``, which must be the last one on the disk."""
    raw = table.get("partitions") or []
    assert isinstance(raw, list)
    parts = []
    for entry in raw:
        match = re.search(r"(\d+)$", str(entry["node"]))
        if match is None:
            raise LockgateError(f"cannot tell the partition number of {entry['node']}")
        parts.append(Partition(int(match[1]), str(entry["node"]), int(entry["start"]),
                               int(entry["size"]), str(entry.get("name", ""))))
    if not parts:
        raise LockgateError("the disk has no partitions")
    last = max(parts, key=lambda p: p.start)
    named = [p for p in parts if p.name == "data"]
    if not named:  # another disk (a wrong --disk): never grow someone else's partition
        raise LockgateError("no partition named 'data' on this disk; it is not a lockgate "
                            "appliance disk")
    if named[0] != last:
        raise LockgateError(f"the data partition ({named[0].node}) is not the last one; "
                            "growing it would overwrite another partition")
    return last


def plan(disk: str) -> Plan:
    table = read_table(disk)
    part = data_partition(table)
    sector = int(str(table.get("sectorsize", 512)))
    total = disk_bytes(disk)
    # GPT keeps its backup at the very end; partitions stay 1 MiB aligned as sfdisk does.
    last_usable = total // sector - GPT_BACKUP_SECTORS - 1
    align = MIB // sector
    end = ((last_usable + 1) // align) * align  # exclusive, aligned down
    new_size = max(part.size, end - part.start)
    return Plan(disk, part, sector, total, new_size)


def grow_table(p: Plan) -> None:
    """Move the backup GPT to the disk's end and extend the data partition (no re-read)."""
    run(["sfdisk", "--no-reread", "--relocate", "gpt-bak-std", p.disk], capture=True)
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-N", str(p.partition.number), p.disk],
        input=f"{p.partition.start},{p.new_size}\n", capture=True)


def grow_filesystem(device: str) -> None:
    """Grow the ext4 filesystem on ``device`` to the device's size (online when mounted)."""
    run(["resize2fs", device], capture=True)


def device_for_mount(mountpoint: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str:
    """The block device mounted at ``mountpoint`` (field 10 of mountinfo)."""
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == str(mountpoint):
            sep = fields.index("-")
            return fields[sep + 2]
    raise LockgateError(f"nothing is mounted at {mountpoint}")


def parent_disk(partition_dev: str, sys_block: Path = Path("/sys/class/block")) -> str:
    """``/dev/vda5`` -> ``/dev/vda`` via sysfs (works for nvme0n1p5 too)."""
    name = Path(os.path.realpath(partition_dev)).name
    link = Path(os.path.realpath(sys_block / name))
    if not (link / "partition").exists():
        raise LockgateError(f"{partition_dev} is not a partition")
    return f"/dev/{link.parent.name}"


@click.command("z-expand-logs-partition",
               context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--auto", is_flag=True,
              help="Boot mode: do nothing unless there is at least 16 MiB and 1% of the disk "
                   "to gain.")
@click.option("--disk", metavar="DEVICE|FILE",
              help=f"The disk (device or image file); default: the disk holding {STATE_DIR}.")
@click.option("--dry-run", is_flag=True, help="Show what would change.")
def expand_cmd(auto: bool, disk: str | None, dry_run: bool) -> None:
    """Grow the data (logs) partition and its filesystem to the end of the disk."""
    code = expand(disk, auto=auto, dry_run=dry_run)
    if code:
        raise click.exceptions.Exit(code)


def main(argv: list[str] | None = None) -> None:
    from lockgate.cli import run_command

    run_command(expand_cmd, argv, "z-expand-logs-partition")


def expand(disk: str | None, *, auto: bool = False, dry_run: bool = False) -> int:
    partition_dev: str | None = None
    if disk is None:
        partition_dev = device_for_mount(STATE_DIR)
        disk = parent_disk(partition_dev)
    p = plan(disk)
    gain_mib = p.gain_bytes / MIB
    if p.gain_bytes <= 0 or (auto and not p.worth_it()):
        print(f"z-expand-logs-partition: {p.partition.node} already fills {disk} "
              f"({gain_mib:.1f} MiB to gain); nothing to do")
        return 0
    old, new = p.partition.size * p.sector_size / MIB, p.new_size * p.sector_size / MIB
    if dry_run:
        print(f"z-expand-logs-partition: would grow {p.partition.node} from {old:.0f} MiB "
              f"to {new:.0f} MiB")
        return 0
    grow_table(p)
    print(f"z-expand-logs-partition: grew partition {p.partition.number} on {disk} "
          f"from {old:.0f} MiB to {new:.0f} MiB")
    if Path(disk).is_file():
        print("z-expand-logs-partition: image file: grow the filesystem when it is attached")
        return 0
    run(["partx", "-u", "--nr", str(p.partition.number), disk], capture=True)
    device = partition_dev or p.partition.node
    grow_filesystem(device)
    print(f"z-expand-logs-partition: resized the filesystem on {device}")
    return 0


if __name__ == "__main__":
    main()
