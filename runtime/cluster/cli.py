"""``lockgate runtime join`` and ``lockgate runtime cluster``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from lockgate.errors import Failure
from lockgate.paths import STATE_DIR

log = logging.getLogger("lockgate.runtime.cluster")


def _split_target(target: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address; port 9090 by default."""
    from lockgate.runtime.cluster.state import ADMIN_PORT

    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif target.count(":") == 1:
        host, _, port_text = target.partition(":")
    else:
        host, port_text = target, ""
    if not host:
        raise click.BadParameter(f"{target!r}: expected HOST or HOST:PORT", param_hint="HOST")
    if not port_text:
        return host, ADMIN_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise click.BadParameter(f"{target!r}: port must be 1-65535", param_hint="HOST")
    return host, int(port_text)


@click.command("join")
@click.argument("target", metavar="HOST[:PORT]")
@click.option("--fingerprint", required=True,
              help="The member's SHA-1 certificate fingerprint, sha256:HEX, or 'unsafe'.")
@click.option("--user", default="admin", show_default=True, help="The cluster's admin user.")
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Read the admin password from this file [default: prompt].")
@click.option("--location", help="This member's location (cluster_location).")
@click.option("--join-tips", is_flag=True,
              help="Join the traffic IP group when the cluster has exactly one.")
@click.option("--name", help="This member's name [default: host name].")
@click.option("--address", help="Address the members reach this one at "
                                "[default: as the member sees this connection].")
@click.option("--admin-port", type=click.IntRange(1, 65535), default=9090, show_default=True,
              help="This member's Admin port.")
@click.option("--control-port", type=click.IntRange(1, 65535), default=9080, show_default=True,
              help="This member's cluster control port.")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              default=STATE_DIR, show_default=True)
def join_command(target: str, fingerprint: str, user: str, password_file: Path | None,
                 location: str | None, join_tips: bool, name: str | None, address: str | None,
                 admin_port: int, control_port: int, state_dir: Path) -> None:
    """Join the cluster of the traffic manager at HOST[:PORT] (its Admin port, 9090)."""
    from lockgate.runtime.cluster.joining import (
        UNSAFE_WARNING,
        JoinError,
        join_cluster,
        parse_pin,
    )

    try:
        pin = parse_pin(fingerprint)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fingerprint") from None
    host, port = _split_target(target)
    if password_file is not None:
        password = password_file.read_text().rstrip("\r\n")
    else:
        password = click.prompt(f"Password of {user} on the cluster", hide_input=True)
    try:
        result = join_cluster(state_dir, host, port, pin, user, password, name=name,
                              location=location, join_tips=join_tips, address=address,
                              admin_port=admin_port, control_port=control_port, deadline=15.0)
    except JoinError as exc:
        raise Failure(str(exc)) from None
    for note in result.notes:
        click.echo(note)
    members = ", ".join(m.name for m in result.state.members)
    click.echo(f"joined the cluster as {result.state.name}: members {members} "
               f"(epoch {result.state.epoch}, configuration version {result.config_version})")
    if result.unsafe:
        click.echo(f"WARNING: {UNSAFE_WARNING}", err=True)


@click.group("cluster", invoke_without_command=True)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              default=STATE_DIR, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def cluster_command(ctx: click.Context, state_dir: Path, as_json: bool) -> None:
    """Show this appliance's cluster: members, epoch, the join and its warnings
    (``status``: liveness and traffic IPs)."""
    if ctx.invoked_subcommand is not None:
        return
    from lockgate.runtime.cluster.joining import read_join_record
    from lockgate.runtime.cluster.state import load_cluster

    state = load_cluster(state_dir)
    record = read_join_record(state_dir)
    data = {"cluster": state.to_json(include_secret=False) if state else None, "join": record}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if state is None:
        click.echo("stand-alone (a cluster of one)")
    else:
        click.echo(f"member {state.name}, epoch {state.epoch}")
        for m in state.members:
            where = f" location={m.location}" if m.location else ""
            click.echo(f"  {m.name} {m.address} admin={m.admin_port} control={m.control_port} "
                       f"fingerprint={m.fingerprint}{where}")
    if record is not None:
        click.echo(f"join of {record.get('host')}:{record.get('port')}: "
                   f"{record.get('status')}"
                   + (f" (attempts {record['attempts']})" if record.get("attempts") else "")
                   + (f"; last error: {record['last_error']}" if record.get("last_error") else ""))
        if record.get("unsafe") or record.get("fingerprint") == "unsafe":
            click.echo("WARNING: the join does not check the member's certificate "
                       "(fingerprint 'unsafe')")


@cluster_command.command("status")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              default=STATE_DIR, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (as the REST API's "
                                                      "/api/tm/1.0/status/cluster).")
def cluster_status_command(state_dir: Path, as_json: bool) -> None:
    """Fault tolerance: each member's state and last heartbeat, and which member holds each
    traffic IP (from the running runtime; "not running" when it is not)."""
    from lockgate.runtime.cluster.status import cluster_status, render

    doc = cluster_status(state_dir)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for line in render(doc):
        click.echo(line)


@click.command("upgrade-cluster")
@click.option("--package", "package", required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The upgrade bundle (lockgate image build --formats upgrade).")
@click.option("--mode", type=click.Choice(["info", "install"]), required=True,
              help="info: show what would be done; install: upgrade every member.")
@click.option("--no-restart", is_flag=True,
              help="Install on every member but reboot none (each boots it at its next "
                   "restart).")
@click.option("--no-rollback", is_flag=True,
              help="When a member fails, leave the members already upgraded as they are "
                   "[default: switch them all back].")
@click.option("--user", default="admin", show_default=True, help="The cluster's admin user.")
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Read the admin password from this file [default: prompt].")
@click.option("--rest-port", type=click.IntRange(1, 65535), default=9070, show_default=True,
              help="The members' REST API port.")
@click.option("--member-timeout", type=click.FloatRange(10, 7200), default=900.0,
              show_default=True, help="Seconds each member has to come back healthy.")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              default=STATE_DIR, show_default=True)
def upgrade_cluster_command(package: Path, mode: str, no_restart: bool, no_rollback: bool,
                            user: str, password_file: Path | None, rest_port: int,
                            member_timeout: float, state_dir: Path) -> None:
    """Upgrade every cluster member, one at a time, through its REST API; roll them all
    back if one fails."""
    from lockgate.runtime.cluster.state import load_cluster
    from lockgate.runtime.cluster.upgrade import ClusterUpgrade, basic_authorization

    cluster = load_cluster(state_dir)
    if cluster is None:
        raise Failure("this appliance is not in a cluster; upgrade it with 'upgrade FILE'")
    if password_file is not None:
        password = password_file.read_text().rstrip("\r\n")
    else:
        password = click.prompt(f"Password of {user} on the cluster", hide_input=True)
    job = ClusterUpgrade(cluster, package, basic_authorization(user, password), click.echo,
                         rest_port=rest_port, member_timeout=member_timeout,
                         rollback=not no_rollback)
    if mode == "info":
        job.info()
    else:
        job.install(restart=not no_restart)


def upgrade_cluster_main() -> None:
    """``upgrade-cluster``, the reference product's command name on the appliance."""
    from lockgate.cli import run_command

    run_command(upgrade_cluster_command, None, "upgrade-cluster")
