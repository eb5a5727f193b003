"""``lockgate image build``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from lockgate import __version__
from lockgate.errors import BadInput
from lockgate.image.build.context import Context, check_version, parse_formats
from lockgate.image.build.profile import load_profile
from lockgate.proc import RunError, output

DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "profiles" / "appliance.yaml"


def source_date_epoch(source: Path) -> int:
    """SOURCE_DATE_EPOCH if set, else the checkout's last commit time, else 0."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is not None:
        if not env.isdigit():
            raise BadInput(f"SOURCE_DATE_EPOCH={env!r}: must be a number of seconds")
        return int(env)
    try:
        return int(output(["git", "-C", source, "log", "-1", "--format=%ct"], quiet=True))
    except (RunError, ValueError):
        return 0


@click.command("build")
@click.option("--profile", "profile_path", type=click.Path(path_type=Path),
              default=DEFAULT_PROFILE, show_default="image/profiles/appliance.yaml",
              help="The image profile (YAML).")
@click.option("--version", "version", default=__version__, show_default=True,
              help="The appliance version; the GRUB entry is lockgate-<version>.")
@click.option("--formats", default="raw", show_default=True,
              help="Comma-separated: raw,qcow2,vhd,vmdk,gce,upgrade (or all).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("build"),
              show_default=True, help="Where the artifacts and manifest.json go.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("cache"),
              show_default=True, help="Cached package layer, .debs and wheels.")
@click.option("--signing-key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Ed25519 key (lockgate image keygen) that signs the upgrade bundle; its "
                   "public half is trusted by the image.")
@click.option("--trusted-key", "trusted_keys", type=click.Path(path_type=Path, dir_okay=False),
              multiple=True, help="Another public key the image accepts bundles from "
                                  "(repeatable; key rotation).")
def build(profile_path: Path, version: str, formats: str, out_dir: Path,
          cache_dir: Path, signing_key: Path | None, trusted_keys: tuple[Path, ...]) -> None:
    """Build the appliance disk image (needs root: mmdebstrap and chroot)."""
    from lockgate.image.build.pipeline import run_pipeline
    from lockgate.runtime.system.keys import load_private, load_public, public_pem

    profile = load_profile(profile_path)
    context = Context(profile=profile, version=check_version(version),
                      source_date_epoch=source_date_epoch(profile.lockgate.source),
                      formats=parse_formats(formats), out_dir=out_dir.resolve(),
                      cache_dir=cache_dir.resolve(),
                      signing_key=load_private(signing_key) if signing_key else None,
                      trusted_keys=tuple(public_pem(load_public(p).key) for p in trusted_keys))
    if "upgrade" in context.formats and context.signing_key is None:
        click.secho("warning: no --signing-key: the upgrade bundle will be UNSIGNED and "
                    "appliances refuse it unless their developer switch is on", fg="yellow",
                    err=True)
    if os.geteuid() != 0:
        raise BadInput("lockgate image build needs root (mmdebstrap --mode=root and chroot)")
    run_pipeline(context)
