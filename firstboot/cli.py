"""``lockgate firstboot``: configure the appliance from cloud user-data.

Each command lives beside the code it drives; this group only collects them.
"""

from __future__ import annotations

import click


@click.group("firstboot")
def group() -> None:
    """Configure the appliance from cloud user-data."""


# Commands are registered below, one import per module:
# parse (userdata_cmd), run + status (service), wizard + reset-password (wizard).

from lockgate.firstboot.service import run, status  # noqa: E402

group.add_command(run)
group.add_command(status)

from lockgate.firstboot.wizard.cli import reset_password_cmd, wizard_cmd  # noqa: E402

group.add_command(wizard_cmd)
group.add_command(reset_password_cmd)

from lockgate.firstboot.userdata_cmd import parse  # noqa: E402

group.add_command(parse)
