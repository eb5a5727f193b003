"""GPT layout arithmetic, checked against what sfdisk really writes."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from lockgate.image import gpt
from lockgate.image.build.profile import DiskSizes, GiB, MiB

NAMES = (gpt.BIOS_BOOT, gpt.ESP, gpt.ROOT_A, gpt.ROOT_B, gpt.DATA)


def layout(sizes: DiskSizes) -> gpt.Layout:
    uuids = {n: uuid.uuid5(uuid.NAMESPACE_DNS, n) for n in NAMES}
    return gpt.plan_layout(sizes, uuids, uuid.uuid5(uuid.NAMESPACE_DNS, "label"))


DEFAULT = DiskSizes(size=2 * GiB, bios_boot=MiB, esp=64 * MiB, root=800 * MiB)


def test_partitions_are_back_to_back_from_1mib_and_aligned() -> None:
    plan = layout(DEFAULT)
    assert [p.name for p in plan.partitions] == list(NAMES)
    assert [p.number for p in plan.partitions] == [1, 2, 3, 4, 5]
    assert plan.partitions[0].start == MiB
    for before, after in zip(plan.partitions, plan.partitions[1:], strict=False):
        assert after.start == before.end
    for part in plan.partitions:
        assert part.start % MiB == 0 and part.size % MiB == 0
    data = plan.by_name(gpt.DATA)
    assert data.end == 2 * GiB - MiB  # the last MiB holds the backup GPT
    assert data.size == DEFAULT.data
    assert plan.by_name(gpt.ROOT_A).size == plan.by_name(gpt.ROOT_B).size == 800 * MiB
    assert plan.by_name(gpt.ESP).type_guid == gpt.ESP_TYPE
    assert plan.by_name(gpt.BIOS_BOOT).type_guid == gpt.BIOS_BOOT_TYPE


def test_too_small_disk_is_refused() -> None:
    with pytest.raises(ValueError, match="data"):
        layout(DiskSizes(size=1600 * MiB, bios_boot=MiB, esp=64 * MiB, root=800 * MiB))


def test_sfdisk_writes_exactly_the_plan(tmp_path: Path) -> None:
    plan = layout(DiskSizes(size=1200 * MiB, bios_boot=MiB, esp=64 * MiB, root=300 * MiB))
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(plan.disk_size)
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)],
                   input=plan.sfdisk_script().encode(), check=True, capture_output=True)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True,
                                      capture_output=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    assert table["id"].lower() == str(plan.label_id)
    for want, got in zip(plan.partitions, table["partitions"], strict=True):
        assert got["start"] == want.start_lba
        assert got["size"] * 512 == want.size
        assert got["uuid"].lower() == str(want.partuuid)
        assert got["name"] == want.name
        assert got["type"].upper() == want.type_guid
    # A protective MBR: one 0xEE partition and the boot signature.
    mbr = disk.read_bytes()[:512]
    assert mbr[510:512] == b"\x55\xaa" and mbr[446 + 4] == 0xEE
