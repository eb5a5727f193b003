"""ext4 and FAT images built twice from trees unpacked at different times are identical."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lockgate.image.build import filesystems
from lockgate.image.build.context import Context
from lockgate.image.build.profile import load_profile

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def make_context(tmp_path: Path, name: str) -> Context:
    profile = load_profile(REPO / "image/profiles/appliance.yaml")
    ctx = Context(profile=profile, version="1.0", source_date_epoch=1700000000,
                  formats=("raw",), out_dir=tmp_path / name, cache_dir=tmp_path / "cache")
    ctx.work_dir.mkdir(parents=True)
    return ctx


def make_tree(root: Path) -> Path:
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/hostname").write_text("lockgate\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(os.urandom(0) + b"#!/bin/sh\necho hi\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "usr/bin/link").symlink_to("tool")
    for i in range(50):
        (root / "usr/share" / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (root / "usr/share" / f"d{i % 5}" / f"f{i}").write_text(str(i) * i)
    return root


def test_ext4_is_byte_identical_and_clean(tmp_path: Path) -> None:
    images = []
    for name in ("one", "two"):
        ctx = make_context(tmp_path, name)
        tree = make_tree(tmp_path / f"tree-{name}")
        image = ctx.work_dir / "root.ext4"
        filesystems.make_ext4(ctx, tree, image, 32 * MiB, ctx.derived_uuid("fs"), "root")
        images.append(image)
        time.sleep(1.1)  # the second tree is unpacked in a later second (ctime differs)
    assert images[0].read_bytes() == images[1].read_bytes()
    stat = subprocess.run(["debugfs", "-R", "stat /usr/bin/tool", str(images[0])],
                          capture_output=True, text=True, check=True).stdout
    assert "ctime: 0x6553f100" in stat and "mtime: 0x6553f100" in stat
    assert "atime: 0x6553f100" in stat and "crtime: 0x6553f100" in stat
    owner = subprocess.run(["debugfs", "-R", "stat /", str(images[0])],
                           capture_output=True, text=True, check=True).stdout
    assert "User:     0   Group:     0" in owner


@pytest.mark.skipif(shutil.which("mcopy") is None, reason="mtools missing")
def test_esp_is_byte_identical_with_the_serial(tmp_path: Path) -> None:
    images = []
    for name in ("one", "two"):
        ctx = make_context(tmp_path, name)
        src = ctx.work_dir / "src"
        src.mkdir()
        (src / "BOOTX64.EFI").write_bytes(b"MZ" + bytes(1000))
        (src / "grub.cfg").write_text("set timeout=1\n")
        image = ctx.work_dir / "esp.vfat"
        filesystems.make_esp(ctx, image, 40 * MiB, "B95E5133",
                             {"EFI/BOOT/BOOTX64.EFI": src / "BOOTX64.EFI",
                              "grub/grub.cfg": src / "grub.cfg"})
        images.append(image)
        time.sleep(1.1)
    assert images[0].read_bytes() == images[1].read_bytes()
    blkid = subprocess.run(["blkid", "-p", "-o", "export", str(images[0])], capture_output=True,
                           text=True).stdout
    assert "UUID=B95E-5133" in blkid and "TYPE=vfat" in blkid
    listing = subprocess.run(["mdir", "-i", str(images[0]), "-/", "::/"], capture_output=True,
                             text=True, check=True).stdout
    assert "BOOTX64" in listing and "grub" in listing
    assert "2023-11-14" in listing  # SOURCE_DATE_EPOCH, not today
