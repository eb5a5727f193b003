"""``lockgate runtime serve`` and ``lockgate runtime reload``.

``serve`` imports the config file into the store (see docs/runtime-config.md
for the rule), starts the supervisor with its workers and, unless
``--no-management``, the REST API and Admin UI in the supervisor process; then
prints ``lockgate-runtime: serving ...`` once every listener is up.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from lockgate.errors import BadInput, Failure
from lockgate.paths import STATE_DIR
from lockgate.runtime import core_build
from lockgate.runtime.config.schema import ConfigError
from lockgate.runtime.config.store import ConfigStore
from lockgate.runtime.listen import MANAGEMENT_PORTS, reserved_ports, save_reserved_ports
from lockgate.runtime.workers import Supervisor, WorkerStartError, notify_reload

log = logging.getLogger("lockgate.runtime.serve")

# What serving imports late (the management plane, clustering, the event loop): with
# --wait-for these load while first boot runs instead of after it.
PRELOAD = ("lockgate.runtime.api", "lockgate.runtime.cluster.service",
           "lockgate.runtime.cluster.tipgroups", "uvloop")
FIRSTBOOT_UNIT = "lockgate-firstboot.service"


def firstboot_masked(cmdline: Path = Path("/proc/cmdline"),
                     unit_dir: Path = Path("/etc/systemd/system")) -> bool:
    """Whether first boot will not run this boot (masked on the kernel command line, as the
    bench's bare boot does, or with ``systemctl mask``): then nothing is worth waiting for."""
    try:
        if f"systemd.mask={FIRSTBOOT_UNIT}" in cmdline.read_text().split():
            return True
    except OSError:
        pass
    unit = unit_dir / FIRSTBOOT_UNIT
    return unit.is_symlink() and os.readlink(unit) == "/dev/null"


def firstboot_gone() -> bool:
    """Whether first boot's unit ended (or will never run) without the runtime's cue: no
    job queued and not active, e.g. it failed before writing its record. A systemctl
    that cannot answer counts as "still coming" (the timeout still bounds the wait)."""
    from lockgate.errors import LockgateError
    from lockgate.proc import output

    try:
        text = output(["systemctl", "show", "--property=ActiveState", "--property=Job",
                       FIRSTBOOT_UNIT], timeout=10, quiet=True)
    except (LockgateError, OSError):
        return False
    props = dict(line.partition("=")[::2] for line in text.splitlines())
    return (props.get("ActiveState") in ("failed", "inactive")
            and props.get("Job", "").strip() in ("", "0"))


def wait_for_inputs(path: Path, timeout: float, preload: tuple[str, ...] = PRELOAD,
                    cmdline: Path = Path("/proc/cmdline"),
                    unit_dir: Path = Path("/etc/systemd/system"),
                    gone: Callable[[], bool] = firstboot_gone, check_every: float = 2.0) -> bool:
    """Import what serving needs, then wait (at most ``timeout`` s) until ``path`` exists:
    first boot's record for this boot, written once everything the runtime reads (users,
    licence, certificate, configuration links) is in place. lockgate.service starts
    with first boot rather than after it, so its start-up overlaps first boot's (issue
    12). True if the file appeared (or was there)."""
    for name in preload:
        importlib.import_module(name)
    if path.exists():
        return True
    if firstboot_masked(cmdline, unit_dir):
        return False
    print(f"lockgate-runtime: waiting for first boot ({path})", flush=True)
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + check_every
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if path.exists():
            return True
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + check_every
            if gone() and not path.exists():
                print(f"lockgate-runtime: first boot ended without {path}; starting anyway",
                      flush=True)
                return False
    print(f"lockgate-runtime: {path} did not appear in {timeout:.0f} s; starting anyway",
          flush=True)
    return False


@contextlib.contextmanager
def store_errors(store: ConfigStore) -> Iterator[None]:
    """An unusable state dir or a damaged store file: one ``error:`` line, exit 1.

    The damaged file is left as it is: it is the only copy of the configuration,
    so whether to restore or discard it is the operator's call.
    """
    try:
        yield
    except ConfigError:
        raise
    except ValueError as exc:  # config.json is not JSON (or not UTF-8)
        raise Failure(f"{store.path}: damaged ({exc}); restore it from a backup, or move "
                      "it aside to start from an empty configuration") from None
    except KeyError as exc:
        raise Failure(f"{store.path}: damaged (no {exc} entry); restore it from a backup, "
                      "or move it aside to start from an empty configuration") from None
    except OSError as exc:
        raise Failure(f"state dir {store.folder.parent}: {exc.strerror or exc}"
                      + (f": {exc.filename}" if exc.filename else "")) from None


def import_config(store: ConfigStore, config_file: Path | None, force: bool = False) -> int | None:
    if config_file is None:
        return None
    try:
        return store.import_file(config_file, force=force)
    except ConfigError as exc:
        raise BadInput(f"{exc.field}: {exc.message}") from None


async def serve(state_dir: Path, workers: int, grace: float, management: dict[str, Any] | None,
                reserved: tuple[int, ...] = MANAGEMENT_PORTS) -> None:
    """``management``: host, rest_port, admin_port, and optionally control_port and
    member_name for the cluster service (replication, joins)."""
    supervisor = Supervisor(state_dir, workers, grace, reserved)
    try:
        await supervisor.startup(keep_going=management is not None)
    except WorkerStartError as exc:
        raise Failure(str(exc)) from None
    mgmt = None
    cluster = None
    fault_tolerance = None
    try:
        details = (f"virtual_servers={len(ConfigStore(state_dir).load().virtual_servers)} "
                   f"workers={workers} listen={','.join(supervisor.listening) or '-'} "
                   f"core={core_build()}")
        if management is not None:
            from lockgate.runtime.api import start_management

            try:
                mgmt = await start_management(state_dir, management["host"],
                                              management["rest_port"], management["admin_port"])
            except OSError as exc:
                raise Failure(f"cannot start the REST API/Admin UI: {exc}") from None
            details += " " + mgmt.describe()
            if management.get("control_port") is not None:
                from lockgate.runtime.cluster.service import start_cluster

                try:
                    cluster = await start_cluster(state_dir, mgmt, management["host"],
                                                  management["control_port"],
                                                  management.get("member_name"))
                except OSError as exc:
                    raise Failure(f"cannot start cluster control: {exc}") from None
        # Traffic IPs and heartbeats (docs/cluster.md "Fault tolerance"); it also drops
        # IPs a killed previous run left behind, so it starts even without management.
        from lockgate.runtime.cluster.tipgroups import start_fault_tolerance

        fault_tolerance = await start_fault_tolerance(
            state_dir, management["host"] if management else "", supervisor)
        if fault_tolerance.describe():
            details += " " + fault_tolerance.describe()
        if mgmt is not None and mgmt.wizard_url() is not None:
            # The one line an unconfigured appliance's console shows (ARCHITECTURE.md): whoever
            # reads it may claim the wizard; the token is spent on first use.
            print(f"lockgate-runtime: initial configuration: {mgmt.wizard_url()}", flush=True)
        print(f"lockgate-runtime: serving {details}", flush=True)
        await supervisor.main_loop()
    finally:
        if fault_tolerance is not None:
            await fault_tolerance.close()  # first: the peers take the IPs while we stop
        if cluster is not None:
            await cluster.close()
        if mgmt is not None:
            await mgmt.close()
        await supervisor.shutdown()
    print("lockgate-runtime: stopped", flush=True)


@click.command("serve")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="YAML/JSON config to import (kept if unchanged since its last import).")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              default=STATE_DIR, show_default=True, help="Where the config store lives.")
@click.option("--workers", type=click.IntRange(1, 256),
              help="Worker processes [default: settings.workers, else one per CPU].")
@click.option("--grace", type=click.FloatRange(0, 3600), default=10.0, show_default=True,
              help="Seconds in-flight requests get to finish on SIGTERM.")
@click.option("--rest-port", type=click.IntRange(0, 65535), default=9070, show_default=True)
@click.option("--admin-port", type=click.IntRange(0, 65535), default=9090, show_default=True)
@click.option("--control-port", type=click.IntRange(0, 65535), default=9080, show_default=True,
              help="Cluster control (configuration replication).")
@click.option("--member-name", help="This member's name in a cluster [default: host name].")
@click.option("--management-host", default="", help="Address for REST/Admin [default: all].")
@click.option("--no-management", is_flag=True, help="Only the proxy: no REST API or Admin UI.")
@click.option("--wait-for", type=click.Path(path_type=Path, dir_okay=False),
              help="Load, then wait until this file exists before reading any state (the "
                   "appliance: first boot's record for this boot).")
@click.option("--wait-timeout", type=click.FloatRange(0), default=960.0, show_default=True,
              help="Seconds --wait-for waits before starting anyway.")
def serve_command(config_file: Path | None, state_dir: Path, workers: int | None, grace: float,
                  rest_port: int, admin_port: int, control_port: int, member_name: str | None,
                  management_host: str, no_management: bool, wait_for: Path | None,
                  wait_timeout: float) -> None:
    """Run the traffic manager (proxy workers, REST API, Admin UI)."""
    if wait_for is not None:
        wait_for_inputs(wait_for, wait_timeout)
    store = ConfigStore(state_dir)
    # No virtual server may take a management port, whether or not this serve runs the
    # management plane: it starts after the workers and must always find its ports free.
    reserved = (MANAGEMENT_PORTS if no_management
                else reserved_ports(rest_port, admin_port, control_port))
    with store_errors(store):
        import_config(store, config_file)
        try:
            config = store.load()
        except ConfigError as exc:
            raise BadInput(f"stored config: {exc.field}: {exc.message}") from None
        save_reserved_ports(state_dir, reserved)  # for the REST API's checks
    count = workers or config.workers or os.cpu_count() or 1
    management = None if no_management else {
        "host": management_host, "rest_port": rest_port, "admin_port": admin_port,
        "control_port": control_port, "member_name": member_name}
    import uvloop

    uvloop.run(serve(state_dir, count, grace, management, reserved))


@click.command("reload")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Import this YAML/JSON config first (validated; a bad one changes nothing).")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              default=STATE_DIR, show_default=True)
def reload_command(config_file: Path | None, state_dir: Path) -> None:
    """Apply the stored config (or a new file) to the running traffic manager."""
    store = ConfigStore(state_dir)
    with store_errors(store):
        version = import_config(store, config_file, force=True) or store.version
    if notify_reload(state_dir):
        click.echo(f"lockgate-runtime: config version {version} sent to the running workers")
    else:
        click.echo(f"lockgate-runtime: config version {version} stored; no traffic manager "
                   "is running for this state dir")
