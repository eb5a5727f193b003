"""``lockgate image``: build, boot and check appliance images."""

from __future__ import annotations

import click


@click.group("image")
def group() -> None:
    """Build, boot and check appliance images."""
