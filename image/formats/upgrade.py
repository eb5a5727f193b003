"""upgrade: ``lockgate-<version>.upgrade``, the signed bundle ``upgrade <bundle>`` installs.

The layout (and its reader) is in :mod:`lockgate.runtime.system.bundle`: a
fixed header, the manifest (JSON, sorted keys), an Ed25519 signature over the
manifest's exact bytes, then the members:

* ``cmdline``: the kernel command line of the version (its GRUB entry's);
* ``rootfs.blocks``: the sha256 of every 1 MiB block of the root filesystem
  (32 bytes each), so the appliance checks each block before it writes it;
* ``rootfs.ext4.zst``: the root slot's ext4 image, zstd-compressed. The image
  is made from a directory into a fresh sparse file, so its unused blocks are
  zeros and cost next to nothing compressed.

The manifest names format, version, architecture, the root filesystem's UUID,
size and sha256 (uncompressed), and the size and sha256 of every member. With
no signing key the bundle is written unsigned and the build says so loudly:
an appliance refuses it unless its developer switch is on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact, sha256_file
from lockgate.proc import run
from lockgate.runtime.system.bundle import (
    BLOCK_SIZE,
    BLOCKS,
    CMDLINE,
    FORMAT,
    HEADER,
    MAGIC,
    ROOTFS,
    SIGNATURE_SIZE,
    machine_architecture,
)
from lockgate.runtime.system.keys import key_id

BUNDLE_FORMAT = FORMAT
ZSTD_LEVEL = 3  # measured: as small as qcow2's zlib at ~100 MB/s; -9 is 5x slower for 9 %


def compress(source: Path, target: Path, level: int = ZSTD_LEVEL) -> None:
    # -T0 uses every core; multi-threaded zstd gives the same bytes whatever the count.
    run(["zstd", "-q", f"-{level}", "-T0", "--no-progress", "-f", "-o", target, source])


def block_hashes(rootfs: Path, block: int = BLOCK_SIZE) -> bytes:
    """sha256 of each block of the root filesystem, concatenated: the appliance checks
    every block before writing it, and recognises unused (zero) blocks without hashing."""
    digests = []
    with rootfs.open("rb") as f:
        while data := f.read(block):
            digests.append(hashlib.sha256(data).digest())
    return b"".join(digests)


def bundle_manifest(*, version: str, architecture: str, fs_uuid: str, kernel: str,
                    kernel_cmdline: str, source_date_epoch: int, rootfs: Path,
                    members: list[dict[str, object]],
                    signing_key: Ed25519PrivateKey | None) -> bytes:
    manifest = {
        "format": FORMAT, "version": version, "architecture": architecture,
        "grub_entry": f"lockgate-{version}", "kernel": kernel, "kernel_cmdline": kernel_cmdline,
        "source_date_epoch": source_date_epoch,
        "rootfs": {"fs_uuid": fs_uuid, "size": rootfs.stat().st_size,
                   "sha256": sha256_file(rootfs), "block_size": BLOCK_SIZE},
        "members": members,
        "signing_key": key_id(signing_key.public_key().public_bytes_raw()) if signing_key else None,
    }
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def write_bundle(target: Path, *, version: str, rootfs: Path, fs_uuid: str, kernel: str,
                 kernel_cmdline: str, source_date_epoch: int,
                 signing_key: Ed25519PrivateKey | None, architecture: str | None = None,
                 work_dir: Path | None = None) -> None:
    work = work_dir or target.parent
    packed = work / f".{target.name}.rootfs.zst"
    compress(rootfs, packed)
    cmdline = (kernel_cmdline + "\n").encode()
    blocks = block_hashes(rootfs)
    members: list[dict[str, object]] = [
        {"name": CMDLINE, "size": len(cmdline), "sha256": hashlib.sha256(cmdline).hexdigest()},
        {"name": BLOCKS, "size": len(blocks), "sha256": hashlib.sha256(blocks).hexdigest()},
        {"name": ROOTFS, "size": packed.stat().st_size, "sha256": sha256_file(packed),
         "compression": "zstd", "uncompressed_size": rootfs.stat().st_size,
         "uncompressed_sha256": sha256_file(rootfs)},
    ]
    manifest = bundle_manifest(version=version, architecture=architecture or machine_architecture(),
                               fs_uuid=fs_uuid, kernel=kernel, kernel_cmdline=kernel_cmdline,
                               source_date_epoch=source_date_epoch, rootfs=rootfs,
                               members=members, signing_key=signing_key)
    signature = signing_key.sign(manifest) if signing_key else b""
    assert len(signature) in (0, SIGNATURE_SIZE)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("wb") as out, packed.open("rb") as rootfs_zst:
            out.write(HEADER.pack(MAGIC, len(manifest), len(signature)))
            out.write(manifest)
            out.write(signature)
            out.write(cmdline)
            out.write(blocks)
            while chunk := rootfs_zst.read(4 * 1024 * 1024):
                out.write(chunk)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
        packed.unlink(missing_ok=True)


def write(context: Context) -> Artifact:
    target = context.artifact_path("upgrade")
    key = context.signing_key
    if key is None:
        click.secho("    WARNING: the upgrade bundle is UNSIGNED (no --signing-key): appliances "
                    "refuse it unless their developer switch is on", fg="yellow", err=True)
    write_bundle(target, version=context.version, rootfs=context.root_image,
                 fs_uuid=str(context.derived_uuid("fs-root-a")), kernel=context.kernel_version,
                 kernel_cmdline=context.profile.kernel_cmdline,
                 source_date_epoch=context.source_date_epoch, signing_key=key,
                 work_dir=context.work_dir)
    return artifact("upgrade", target)

