"""The appliance's GPT layout: pure arithmetic plus the sfdisk script for it.

    LBA 0        protective MBR (GRUB's boot.img goes in its first 440 bytes)
    1 MiB        BIOS-boot   GRUB core.img for BIOS machines
    ...          ESP         FAT32: EFI/BOOT/BOOTX64.EFI, grub/grub.cfg, grub/grubenv
    ...          root-a      ext4, the first installed version (read-only at run time)
    ...          root-b      empty until the first upgrade
    ...          data        ext4, /var/lib/lockgate; grows to fill the disk
    last 1 MiB   backup GPT
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from lockgate.image.build.profile import DiskSizes, MiB

SECTOR = 512

BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
LINUX_DATA_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

# GPT partition names. The appliance finds its partitions by these names
# (fstab PARTLABEL=, the upgrade tools), so they stay the same in every version.
BIOS_BOOT, ESP, ROOT_A, ROOT_B, DATA = "BIOS-boot", "ESP", "root-a", "root-b", "data"


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    type_guid: str
    partuuid: uuid.UUID
    start: int  # bytes from the start of the disk
    size: int  # bytes

    @property
    def start_lba(self) -> int:
        return self.start // SECTOR

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Layout:
    disk_size: int
    label_id: uuid.UUID
    partitions: tuple[Partition, ...]

    def by_name(self, name: str) -> Partition:
        for part in self.partitions:
            if part.name == name:
                return part
        raise KeyError(name)

    def sfdisk_script(self) -> str:
        lines = ["label: gpt", f"label-id: {str(self.label_id).upper()}", "unit: sectors",
                 "first-lba: 2048", "sector-size: 512", ""]
        for part in self.partitions:
            lines.append(f"start={part.start_lba}, size={part.size // SECTOR}, "
                         f"type={part.type_guid}, uuid={str(part.partuuid).upper()}, "
                         f'name="{part.name}"')
        return "\n".join(lines) + "\n"


def plan_layout(sizes: DiskSizes, uuid_for: dict[str, uuid.UUID],
                label_id: uuid.UUID) -> Layout:
    """Place the five partitions back to back from 1 MiB, data taking the rest.

    ``uuid_for`` maps each partition name to its PARTUUID.
    """
    wanted = [(BIOS_BOOT, BIOS_BOOT_TYPE, sizes.bios_boot), (ESP, ESP_TYPE, sizes.esp),
              (ROOT_A, ROOT_X86_64_TYPE, sizes.root), (ROOT_B, ROOT_X86_64_TYPE, sizes.root),
              (DATA, LINUX_DATA_TYPE, sizes.data)]
    offset = MiB
    parts = []
    for number, (name, type_guid, size) in enumerate(wanted, start=1):
        if size <= 0 or size % MiB:
            raise ValueError(f"partition {name}: size {size} is not a positive whole MiB")
        parts.append(Partition(number, name, type_guid, uuid_for[name], offset, size))
        offset += size
    if offset + MiB > sizes.size:
        raise ValueError(f"partitions need {offset + MiB} bytes; the disk has {sizes.size}")
    return Layout(sizes.size, label_id, tuple(parts))
