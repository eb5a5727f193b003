"""``lockgate image``: build, boot and check appliance images."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("image")
def group() -> None:
    """Build, boot and check appliance images."""

from lockgate.image.boot.cli import boot  # noqa: E402  (registered after the group exists)

group.add_command(boot)

from lockgate.image.build.cli import build  # noqa: E402

group.add_command(build)

from lockgate.image.publish.cli import publish  # noqa: E402

group.add_command(publish)


@group.command("keygen")
@click.argument("prefix", type=click.Path(path_type=Path, dir_okay=False))
def keygen(prefix: Path) -> None:
    """Make an Ed25519 key pair for signing upgrade bundles: PREFIX.key (0600), PREFIX.pub."""
    from lockgate.runtime.system.keys import generate, load_public

    private, public = generate(prefix)
    click.echo(f"{private} (private, keep it secret)\n{public} (public: "
               f"{load_public(public).key_id})")
