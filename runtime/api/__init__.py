"""The management plane: REST API (HTTPS 9070) and Admin UI (HTTPS 9090).

Hook for ``lockgate runtime serve`` (runs both servers on the proxy's event loop)::

    mgmt = await start_management(state_dir, host, rest_port, admin_port)
    print(f"lockgate-runtime: serving ... {mgmt.describe()}", flush=True)
    ...
    await mgmt.close()

``describe()`` is ``admin=https://<addr>:9090 rest=https://<addr>:9070
fingerprint=<SHA-1>`` -- the fields the image boot tool reads from the console
line. Both servers share one certificate (``StatePaths.tls``, generated on
first start) and one login limiter, so failures on either port count together.
Configuration changes go through :class:`ConfigStore`, whose file the workers
watch; nothing else needs notifying.

Both servers apply the same :class:`~lockgate.runtime.api.http.Limits`: the
defaults, or ``config/management.json`` in the state dir (read at start; a
bad entry is logged and its default kept -- the management plane must come up,
it is how a bad setting gets fixed).

The REST server also serves upgrade, rollback and version switching
(:mod:`lockgate.runtime.system.rest`) on this machine's disk; ``PUT
/api/tm/1.0/system/upgrade`` is the one request whose body is streamed
(to the data partition) instead of held, under its own limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from lockgate.paths import StatePaths
from lockgate.runtime import status
from lockgate.runtime.api.auth import Authenticator, FailureLimiter
from lockgate.runtime.api.http import HttpServer, Limits
from lockgate.runtime.api.openapi import document
from lockgate.runtime.api.routes import RestApi
from lockgate.runtime.config.store import ConfigStore
from lockgate.runtime.system.rest import SystemApi
from lockgate.runtime.system.slots import Machine
from lockgate.runtime.tls import Certificate, ensure_certificate, primary_address

REST_PORT = 9070
ADMIN_PORT = 9090
LIMITS_FILE = "management.json"  # in StatePaths(state_dir).config

log = logging.getLogger(__name__)


def load_limits(state_dir: Path) -> Limits:
    """The management servers' limits: defaults, overridden by ``config/management.json``."""
    path = StatePaths(state_dir).config / LIMITS_FILE
    try:
        given = json.loads(path.read_text())
    except FileNotFoundError:
        return Limits()
    except (OSError, ValueError) as exc:
        log.error("%s: unreadable (%s); using the default limits", path, exc)
        return Limits()
    if not isinstance(given, dict):
        log.error("%s: expected a JSON object; using the default limits", path)
        return Limits()
    limits, problems = Limits.from_mapping(given)
    for problem in problems:
        log.error("%s: %s; its default is kept", path, problem)
    return limits


def configured(auth: Authenticator, root: Path) -> bool:
    """Configured: an admin user exists and the licence was accepted (as first boot and
    ``z-initial-config`` record it)."""
    from lockgate.firstboot.apply.licence import licence_accepted

    try:
        return auth.configured() and licence_accepted(root)
    except (OSError, ValueError):  # a damaged licence record: the wizard rewrites it
        return False


def appliance_system(state_dir: Path) -> SystemApi:
    """Upgrades of this appliance: its disk, ESP and baked-in keys, as ``lockgate system``."""
    from lockgate.errors import Failure
    from lockgate.paths import RELEASE_FILE, TRUSTED_KEYS_DIR
    from lockgate.runtime.system import boot
    from lockgate.runtime.system.cli import make_machine, reboot
    from lockgate.runtime.system.keys import load_dir

    def machine() -> Machine:
        # Only when this system booted from a slot: a build host with an image's
        # partitions attached (a root-a label in /dev/disk) is not the appliance.
        try:
            running_from_slot = f"{boot.SLOT_PARAM}=" in boot.CMDLINE.read_text()
        except OSError:
            running_from_slot = False
        if not running_from_slot:
            raise Failure("not booted from a lockgate A/B slot: there is nothing to "
                          "upgrade here")
        return make_machine(None, boot.ESP_MOUNT, state_dir, boot.CMDLINE, RELEASE_FILE)

    return SystemApi(machine, lambda: load_dir(TRUSTED_KEYS_DIR), reboot)


@dataclass
class Management:
    rest: HttpServer
    admin: HttpServer
    certificate: Certificate
    fingerprint: str
    host: str
    wizard_token: str | None = None  # set while the appliance awaits its initial configuration
    # Records node health changes in the Admin UI's event log whether or not a page is open.
    health_watch: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """The address users should type: the listen address, or the primary one."""
        if self.host in ("", "0.0.0.0", "::"):
            return primary_address() or socket.gethostname()
        return self.host

    def url(self, port: int) -> str:
        addr = self.address
        try:
            if ipaddress.ip_address(addr).version == 6:
                addr = f"[{addr}]"
        except ValueError:
            pass  # a host name: used as it is
        return f"https://{addr}:{port}"

    def wizard_url(self) -> str | None:
        """``https://HOST:9090/wizard?token=...`` while the wizard is unclaimed, else None."""
        if self.wizard_token is None:
            return None
        return f"{self.url(self.admin.port)}/wizard?token={self.wizard_token}"

    def describe(self) -> str:
        return (f"admin={self.url(self.admin.port)} rest={self.url(self.rest.port)} "
                f"fingerprint={self.fingerprint}")

    async def close(self) -> None:
        if self.health_watch is not None:
            self.health_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.health_watch
        await self.rest.close()
        await self.admin.close()


async def start_management(state_dir: Path, host: str = "", rest_port: int = REST_PORT,
                           admin_port: int = ADMIN_PORT, *,
                           login_limits: FailureLimiter | None = None,
                           limits: Limits | None = None,
                           system: SystemApi | None = None) -> Management:
    """Start both HTTPS servers (port 0 picks a free one: see ``.rest.port``).

    ``login_limits`` replaces the default failed-login limiter (5 failures in
    60 s lock a client address out for 60 s); ``limits`` the connection limits
    (default: :func:`load_limits`); ``system`` the upgrade API (default: this machine's
    A/B disk, found on each use -- on a host that is not an appliance it answers 404).
    """
    from lockgate.runtime.admin import AdminUi  # admin imports api: import here
    from lockgate.runtime.admin.wizard import WebWizard, root_of

    state_dir = Path(state_dir)
    certificate = ensure_certificate(state_dir)
    fingerprint = certificate.fingerprint
    context = certificate.server_context()
    auth = Authenticator(StatePaths(state_dir).users, login_limits)
    store = ConfigStore(state_dir)
    snapshot = functools.partial(status.management_snapshot, state_dir)  # with the licence
    limits = limits or load_limits(state_dir)
    rest_api = RestApi(store, auth, snapshot, document(), system or appliance_system(state_dir))
    rest = HttpServer("rest", rest_api, context, limits=limits, streams=rest_api.streams)
    wizard = None
    root = root_of(state_dir)
    if root is not None and not configured(auth, root):
        # No admin user, or the licence not accepted (user-data gave only a password):
        # the initial configuration wizard is what this appliance needs.
        wizard = WebWizard(state_dir, root, functools.partial(configured, auth, root))
    admin_ui = AdminUi(store, auth, snapshot, fingerprint, wizard=wizard, rest=rest_api)
    # The System page's bundle upload streams to disk as the REST API's does.
    admin = HttpServer("admin", admin_ui, context, limits=limits, streams=admin_ui.streams)
    await rest.start(host, rest_port)
    try:
        await admin.start(host, admin_port)
    except BaseException:
        await rest.close()
        raise
    watch = asyncio.get_running_loop().create_task(
        admin_ui.events.watch(functools.partial(status.snapshot, state_dir)))
    return Management(rest, admin, certificate, fingerprint, host,
                      wizard.token if wizard is not None else None, watch)
