"""``lockgate firstboot``: configure the appliance from cloud user-data."""

from __future__ import annotations

import click


@click.group("firstboot")
def group() -> None:
    """Configure the appliance from cloud user-data."""
