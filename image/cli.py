"""``lockgate image``: build, boot and check appliance images."""

from __future__ import annotations

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
