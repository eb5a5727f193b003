"""``lockgate system``: upgrade and roll back between the two root slots."""

from __future__ import annotations

import click


@click.group("system")
def group() -> None:
    """Upgrade and roll back between the two root slots."""

from lockgate.runtime.system.cli import bundle_group  # noqa: E402  (registered after the group exists)

group.add_command(bundle_group)

from lockgate.runtime.system.cli import activate, rollback, rollback_helper, upgrade  # noqa: E402

for _command in (upgrade, rollback, rollback_helper, activate):
    group.add_command(_command)

from lockgate.runtime.system.health import status_command  # noqa: E402

group.add_command(status_command)
