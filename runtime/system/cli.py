"""``lockgate system …`` commands and the appliance's own names for them.

``upgrade``, ``rollback`` and ``rollback-helper`` (the reference product's
command names) are the same click commands as ``lockgate system upgrade`` etc.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from lockgate.paths import TRUSTED_KEYS_DIR
from lockgate.runtime.system import bundle as bundles
from lockgate.runtime.system.keys import PublicKey, load_dir, load_public

MiB = 1024 * 1024


def trusted_keys(given: tuple[Path, ...], keys_dir: Path) -> list[PublicKey]:
    """``--trusted-key`` files plus, on the appliance, the keys baked into the image."""
    return [*(load_public(p) for p in given), *load_dir(keys_dir)]


trusted_key_option = click.option(
    "--trusted-key", "trusted", type=click.Path(path_type=Path, dir_okay=False), multiple=True,
    help="A public key (PEM) bundles may be signed with (repeatable).")
keys_dir_option = click.option(
    "--keys-dir", type=click.Path(path_type=Path, file_okay=False), default=TRUSTED_KEYS_DIR,
    show_default=True, help="Baked-in trusted keys (*.pub), used when the folder exists.")
allow_unsigned_option = click.option(
    "--allow-unsigned", is_flag=True,
    help=f"Developer switch: accept an unsigned bundle, only with {bundles.ALLOW_UNSIGNED_ENV}=1 "
         "in the environment too.")


@click.group("bundle")
def bundle_group() -> None:
    """Inspect upgrade bundles."""


@bundle_group.command("verify")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@trusted_key_option
@keys_dir_option
@allow_unsigned_option
@click.option("--architecture", default=None,
              help="The architecture the bundle must be for (default: this machine's).")
def verify(file: Path, trusted: tuple[Path, ...], keys_dir: Path, allow_unsigned: bool,
           architecture: str | None) -> None:
    """Check a bundle's signature, architecture and every byte; print what is in it."""
    started = time.monotonic()
    keys = trusted_keys(trusted, keys_dir)
    bundle, signer = bundles.verify(
        file, keys, architecture=architecture or bundles.machine_architecture(),
        allow_unsigned=bundles.unsigned_allowed(allow_unsigned))
    rootfs = bundle.rootfs
    assert rootfs.uncompressed_size is not None
    cmdline = bundles.read_member(bundle, bundles.CMDLINE).decode(errors="replace").strip()
    click.echo(f"bundle:       {file}\n"
               f"version:      {bundle.version}\n"
               f"architecture: {bundle.architecture}\n"
               f"signed by:    {signer}\n"
               f"kernel:       {bundle.manifest.get('kernel') or '?'}\n"
               f"cmdline:      {cmdline}\n"
               f"rootfs:       {rootfs.uncompressed_size / MiB:.1f} MiB "
               f"({rootfs.size / MiB:.1f} MiB zstd), fs UUID {bundle.fs_uuid}\n"
               f"sha256:       {rootfs.uncompressed_sha256}\n"
               f"verified in {time.monotonic() - started:.1f} s: good")
