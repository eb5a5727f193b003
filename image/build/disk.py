"""Assemble the partitioned raw disk from the partition images."""

from __future__ import annotations

import os
from pathlib import Path

import click

from lockgate.image import gpt
from lockgate.image.build.context import Context
from lockgate.proc import run

CHUNK = 4 * 1024 * 1024


def plan(context: Context) -> gpt.Layout:
    names = (gpt.BIOS_BOOT, gpt.ESP, gpt.ROOT_A, gpt.ROOT_B, gpt.DATA)
    return gpt.plan_layout(context.profile.disk,
                           {n: context.derived_uuid(f"part-{n}") for n in names},
                           context.derived_uuid("disk-label"))


def copy_into(source: Path, disk: Path, offset: int, label: str) -> None:
    """Copy ``source`` into ``disk`` at ``offset``, skipping zero chunks (sparse), with percent."""
    total = source.stat().st_size
    done, shown = 0, -1
    zero = bytes(CHUNK)
    with source.open("rb") as src, disk.open("r+b") as dst:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            if chunk != zero[:len(chunk)]:
                dst.seek(offset + done)
                dst.write(chunk)
            done += len(chunk)
            percent = done * 100 // max(total, 1)
            if percent // 25 != shown:
                shown = percent // 25
                click.echo(f"\r    {label}: {percent:3d}%", nl=percent == 100)


def write_partition_table(context: Context, layout: gpt.Layout) -> None:
    disk = context.disk_image
    if disk.exists():
        disk.unlink()
    disk.parent.mkdir(parents=True, exist_ok=True)
    with disk.open("wb") as f:
        f.truncate(layout.disk_size)
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", disk],
        input=layout.sfdisk_script(), env=context.env, capture=True)


def assemble_disk(context: Context, layout: gpt.Layout) -> None:
    write_partition_table(context, layout)
    images = {gpt.ESP: context.esp_image, gpt.ROOT_A: context.root_image,
              gpt.DATA: context.data_image}
    for name, image in images.items():
        part = layout.by_name(name)
        if image.stat().st_size > part.size:
            raise ValueError(f"{image.name} is larger than partition {name}")
        copy_into(image, context.disk_image, part.start, name)
    os.utime(context.disk_image, (context.source_date_epoch, context.source_date_epoch))
