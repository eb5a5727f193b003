"""upgrade: the bundle `upgrade <bundle>` on the appliance takes (unsigned for now).

A plain tar with two members:

* ``manifest.json``: format, version, the root filesystem's size, sha256 and
  UUID, the kernel version and the kernel command line;
* ``rootfs.ext4``: the root slot's ext4 image, written as-is to the inactive
  slot; the kernel and initrd are inside it (``/boot/vmlinuz``).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact, sha256_file

BUNDLE_FORMAT = "lockgate-upgrade/1"


def bundle_manifest(context: Context) -> dict[str, object]:
    rootfs = context.root_image
    return {"format": BUNDLE_FORMAT, "version": context.version, "grub_entry": context.entry_id,
            "source_date_epoch": context.source_date_epoch,
            "rootfs": {"path": "rootfs.ext4", "size": rootfs.stat().st_size,
                       "sha256": sha256_file(rootfs),
                       "fs_uuid": str(context.derived_uuid("fs-root-a"))},
            "kernel": context.kernel_version, "kernel_cmdline": context.profile.kernel_cmdline}


def _info(name: str, size: int, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, epoch, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write_bundle(target: Path, manifest: dict[str, object], rootfs: Path, epoch: int) -> None:
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    with tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_info("manifest.json", len(data), epoch), io.BytesIO(data))
        with rootfs.open("rb") as f:
            tar.addfile(_info("rootfs.ext4", rootfs.stat().st_size, epoch), f)


def write(context: Context) -> Artifact:
    target = context.artifact_path("upgrade.tar")
    write_bundle(target, bundle_manifest(context), context.root_image, context.source_date_epoch)
    return artifact("upgrade", target)
