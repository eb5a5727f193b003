"""``lockgate runtime``: run and manage the traffic manager."""

from __future__ import annotations

import click


@click.group("runtime")
def group() -> None:
    """Run and manage the traffic manager."""

from lockgate.runtime.tls import fingerprint_command  # noqa: E402  (management plane)

group.add_command(fingerprint_command)

from lockgate.runtime.serve import reload_command, serve_command  # noqa: E402  (proxy data plane)

group.add_command(serve_command)
group.add_command(reload_command)

from lockgate.runtime.cluster.cli import (  # noqa: E402  (clustering)
    cluster_command,
    join_command,
    upgrade_cluster_command,
)

group.add_command(join_command)
group.add_command(cluster_command)
group.add_command(upgrade_cluster_command)
