"""Joining a cluster: the joiner's side (:func:`join_cluster`), the member's side
(:class:`JoinService`, ``POST /api/tm/1.0/cluster/join`` on the Admin port), and
the runtime's retries of first boot's pending join (:class:`JoinRetrier`).

The joiner connects to a member's Admin port over TLS and trusts it only when
the certificate matches the pin: a SHA-1 fingerprint (what the console and
``lockgate runtime fingerprint`` print), ``sha256:HEX``, or ``unsafe`` (any
certificate; logged as a warning and kept in the join record). It
authenticates with the cluster's admin user and password (HTTP Basic, the same
check and failed-login limiter as the REST API) and receives the cluster
secret, the member list and the whole configuration.

First boot has the admin password in plain text only while it runs; the
runtime needs it to retry a join that failed, so :func:`queue_join` keeps it
in ``config/cluster-join.password`` (0600, root, data partition) until the
join succeeds, then deletes it. It is never logged or put in argv.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockgate.files import atomic_write
from lockgate.paths import StatePaths
from lockgate.runtime.cluster.state import (
    ADMIN_PORT,
    CONTROL_PORT,
    ClusterState,
    Member,
    load_cluster,
    new_cluster,
    save_cluster,
    update_cluster,
)

log = logging.getLogger("lockgate.runtime.cluster")

JOIN_PATH = "/api/tm/1.0/cluster/join"
PASSWORD_FILE = "cluster-join.password"
COMMUNITY_MAX_MEMBERS = 4
UNSAFE = "unsafe"
UNSAFE_WARNING = ("the member's certificate is NOT checked (fingerprint 'unsafe'): anyone "
                  "on the path can impersonate it and learn the cluster secret")
RETRY_FIRST, RETRY_CAP = 1.0, 60.0  # seconds between the runtime's join attempts


class JoinError(Exception):
    """A join that failed; the message is one line for the user."""


# ---- pins -----------------------------------------------------------------------------------
def parse_pin(value: str) -> str:
    """``AA:BB:..`` (40 hex digits, colons optional) / ``sha256:HEX`` / ``unsafe``, normalised."""
    from lockgate.http import normalize_fingerprint

    text = value.strip()
    if text.lower().startswith("sha256:"):
        digits = text[7:].replace(":", "").lower()
        if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
            raise ValueError(f"not a SHA-256 fingerprint (sha256: and 64 hex digits): {value!r}")
        return "sha256:" + digits
    return normalize_fingerprint(text)


def _presented_der(host: str, port: int, timeout: float) -> bytes:
    from lockgate.http import unverified_context

    with socket.create_connection((host, port), timeout=timeout) as raw, \
            unverified_context().wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise JoinError(f"{host}:{port} presented no certificate")
    return der


def resolve_pin(host: str, port: int, pin: str, timeout: float = 10.0) -> str:
    """The SHA-1 pin the request is made with. A ``sha256:`` pin is checked on a first
    connection and turned into that certificate's SHA-1 (the HTTP client pins SHA-1);
    a server that swapped certificates between the two connections still fails."""
    from lockgate.http import sha1_fingerprint

    if not pin.startswith("sha256:"):
        return pin
    try:
        der = _presented_der(host, port, timeout)
    except OSError as exc:
        raise JoinError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    got = hashlib.sha256(der).hexdigest()
    if got != pin[7:]:
        raise JoinError(f"{host}:{port} presented a certificate with fingerprint sha256:{got}, "
                        f"not the expected {pin}; refusing to join (check the fingerprint on "
                        "the member's console or with 'lockgate runtime fingerprint')")
    return sha1_fingerprint(der)


# ---- the joiner -----------------------------------------------------------------------------
@dataclass(frozen=True)
class JoinResult:
    state: ClusterState
    config_version: int
    notes: tuple[str, ...]
    unsafe: bool


def member_name(state_dir: Path, override: str | None = None) -> str:
    """This appliance's member name: given, else the cluster's record, else the host name."""
    if override:
        return override
    state = load_cluster(state_dir)
    return state.name if state is not None else socket.gethostname()


def join_cluster(state_dir: Path, host: str, port: int, fingerprint: str, user: str,
                 password: str, *, name: str | None = None, location: str | None = None,
                 join_tips: bool = False, address: str | None = None,
                 admin_port: int = ADMIN_PORT, control_port: int = CONTROL_PORT,
                 deadline: float = 30.0) -> JoinResult:
    """Join the cluster of the member at ``host:port``; raises :class:`JoinError`."""
    from lockgate.http import PinMismatch, UrlError, read_url
    from lockgate.runtime.config.schema import ConfigError
    from lockgate.runtime.config.store import ConfigStore
    from lockgate.runtime.tls import ensure_certificate

    pin = parse_pin(fingerprint)
    unsafe = pin == UNSAFE
    if unsafe:
        log.warning("joining %s:%d: %s", host, port, UNSAFE_WARNING)
    existing = load_cluster(state_dir)
    if existing is not None and existing.peers:
        raise JoinError(f"already a member of a cluster with {', '.join(m.name for m in existing.peers)}; "
                        "remove this member from it first")
    me = member_name(state_dir, name)
    cert = ensure_certificate(state_dir)
    body = {"name": me, "address": address, "admin_port": admin_port,
            "control_port": control_port, "fingerprint": cert.fingerprint,
            "location": location, "join_tips": join_tips, "member_address": host}
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    sha1_pin = resolve_pin(host, port, pin)
    url = f"https://{_url_host(host)}:{port}{JOIN_PATH}"
    try:
        reply = read_url(url, method="POST", data=json.dumps(body),
                         headers={"Authorization": f"Basic {credentials}",
                                  "Content-Type": "application/json"},
                         pin_sha1=sha1_pin, timeout=10.0, deadline=deadline)
    except PinMismatch as exc:
        raise JoinError(f"{host}:{port}: {exc.last_problem}; refusing to join (check the "
                        "fingerprint on the member's console or with 'lockgate runtime "
                        "fingerprint')") from None
    except UrlError as exc:
        raise JoinError(f"cannot reach {host}:{port}: {exc.last_problem}") from None
    try:
        answer: Any = json.loads(reply.body)
    except ValueError:
        answer = {}
    if reply.status == 401:
        raise JoinError(f"{host}:{port}: wrong user name or password for user {user!r}")
    if reply.status != 200:
        text = answer.get("error_text") if isinstance(answer, dict) else None
        raise JoinError(f"{host}:{port} refused the join (HTTP {reply.status}): "
                        f"{text or reply.reason}")
    state = ClusterState.from_json({**answer["cluster"], "name": me})
    version = int(answer["config"]["version"])
    try:
        ConfigStore(state_dir).install(version, answer["config"]["tree"], force=True)
    except ConfigError as exc:
        raise JoinError(f"the cluster's configuration does not load here: {exc}") from None
    save_cluster(state_dir, state)
    notes = tuple(str(n) for n in answer.get("notes", []))
    write_join_record(state_dir, {"status": "joined", "host": host, "port": port,
                                  "fingerprint": pin, "unsafe": unsafe,
                                  "warning": UNSAFE_WARNING if unsafe else None,
                                  "notes": list(notes), "joined_at": _now()}, merge=True)
    return JoinResult(state, version, notes, unsafe)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- first boot's pending join and the runtime's retries ------------------------------------
def password_path(state_dir: Path) -> Path:
    return StatePaths(Path(state_dir)).config / PASSWORD_FILE


def queue_join(root: Path, intent: Any, password: str) -> None:
    """First boot's hook: keep the password (0600) for the runtime's join attempts."""
    atomic_write(password_path(StatePaths.under_root(root).base), password.encode(), 0o600)


def read_join_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(StatePaths(Path(state_dir)).cluster_join.read_text())
    except FileNotFoundError:
        return None
    return record


def write_join_record(state_dir: Path, changes: Mapping[str, Any], merge: bool = True) -> None:
    record = (read_join_record(state_dir) or {}) if merge else {}
    record.update(changes)
    atomic_write(StatePaths(Path(state_dir)).cluster_join,
                 (json.dumps(record, indent=2) + "\n").encode(), 0o600)


class JoinRetrier:
    """Carries out a pending join in the background: never blocks the runtime, retries
    with exponential backoff (1 s doubling to 60 s, with jitter), records each attempt
    in the join record (``status``: pending / retrying / joined) and deletes the
    password file once joined."""

    def __init__(self, state_dir: Path, name: str | None, admin_port: int,
                 control_port: int) -> None:
        self.state_dir = Path(state_dir)
        self.name = name
        self.admin_port = admin_port
        self.control_port = control_port

    async def run(self) -> None:
        delay = RETRY_FIRST
        while True:
            record = await asyncio.to_thread(read_join_record, self.state_dir)
            if record is None or record.get("status") == "joined":
                return
            if not password_path(self.state_dir).exists():
                await asyncio.to_thread(write_join_record, self.state_dir,
                                        {"status": "pending", "last_error":
                                         "no password for the join: give it with 'lockgate "
                                         "runtime join --password-file'"})
                return
            ok = await asyncio.to_thread(self.attempt, record)
            if ok:
                return
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, RETRY_CAP)

    def attempt(self, record: dict[str, Any]) -> bool:
        where = f"{record['host']}:{record.get('port', ADMIN_PORT)}"
        attempts = int(record.get("attempts", 0)) + 1
        try:
            password = password_path(self.state_dir).read_text()
            result = join_cluster(self.state_dir, record["host"], int(record.get("port", ADMIN_PORT)),
                                  record["fingerprint"], record.get("user", "admin"), password,
                                  name=self.name, location=record.get("location"),
                                  join_tips=bool(record.get("join_tips")),
                                  admin_port=self.admin_port, control_port=self.control_port,
                                  deadline=10.0)
        except (JoinError, OSError, ValueError, KeyError) as exc:
            log.warning("cluster join with %s failed (attempt %d): %s", where, attempts, exc)
            write_join_record(self.state_dir, {"status": "retrying", "attempts": attempts,
                                               "last_error": str(exc), "last_try": _now()})
            return False
        password_path(self.state_dir).unlink(missing_ok=True)
        write_join_record(self.state_dir, {"attempts": attempts, "last_error": None})
        log.info("joined the cluster at %s: members %s", where,
                 ", ".join(m.name for m in result.state.members))
        return True


# ---- the member's side ------------------------------------------------------------------------
def max_members(state_dir: Path) -> tuple[int, str]:
    """The licence's cluster size limit (0: none) and the edition's name for messages:
    the Community Edition's 4 without a valid licence key (lockgate.runtime.licence)."""
    try:
        from lockgate.runtime.licence import licence_limits

        limits = licence_limits(state_dir)
        edition = str(limits["edition"])
        name = "Community Edition" if edition == "community" else "licence"
        return int(limits["max_cluster_size"]), name
    except (ImportError, OSError, ValueError, KeyError, TypeError):
        return COMMUNITY_MAX_MEMBERS, "Community Edition"


class JoinRefused(Exception):
    def __init__(self, status: int, error_id: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.error_id = error_id


@dataclass(frozen=True)
class JoinService:
    """What the member answering a join needs to know about itself."""

    state_dir: Path
    name: str
    admin_port: int
    control_port: int
    fingerprint: str

    def accept(self, request: Mapping[str, Any], client: str) -> dict[str, Any]:
        """Add the joiner to the member list (epoch + 1); the answer carries the cluster
        secret, member list and whole configuration. Runs in a worker thread."""
        from lockgate.runtime.config.schema import NAME_RE
        from lockgate.runtime.config.store import ConfigStore

        try:
            name = str(request["name"])
            fingerprint = str(request["fingerprint"])
            address = str(request.get("address") or client)
            admin_port = int(request.get("admin_port") or ADMIN_PORT)
            control_port = int(request.get("control_port") or CONTROL_PORT)
            location = request.get("location")
            join_tips = bool(request.get("join_tips"))
        except (KeyError, TypeError, ValueError) as exc:
            raise JoinRefused(400, "cluster.bad_request", f"bad join request: {exc}") from None
        if not NAME_RE.fullmatch(name):
            raise JoinRefused(400, "cluster.bad_request", f"bad member name {name!r}")
        me = Member(self.name, str(request.get("member_address") or "127.0.0.1"),
                    self.admin_port, self.control_port, self.fingerprint)
        joiner = Member(name, address, admin_port, control_port, fingerprint,
                        location if isinstance(location, str) else None)
        limit, edition = max_members(self.state_dir)

        def add(current: ClusterState | None) -> ClusterState:
            state = current if current is not None else new_cluster(me)
            old = state.member(name)
            if old is not None and old.fingerprint != fingerprint:
                raise JoinRefused(409, "cluster.name_in_use",
                                  f"a member named {name!r} is already in the cluster with "
                                  "another certificate; give the new one another name")
            if old is None and limit and len(state.members) >= limit:
                raise JoinRefused(403, "cluster.licence_limit",
                                  f"the cluster already has {len(state.members)} members: the "
                                  f"{edition} allows at most {limit} traffic managers in a "
                                  "cluster")
            return state.with_member(joiner)

        state = update_cluster(self.state_dir, add)
        assert state is not None
        store = ConfigStore(self.state_dir)
        notes = self._join_tips(store, name) if join_tips else []
        version, tree = store.snapshot()
        log.info("member %s (%s) joined the cluster; epoch %d", name, address, state.epoch)
        return {"cluster": state.to_json(), "config": {"version": version, "tree": tree},
                "notes": notes}

    def _join_tips(self, store: Any, name: str) -> list[str]:
        groups = store.list("traffic_ip_groups")
        if len(groups) != 1:
            why = "there are none" if not groups else f"there are {len(groups)} ({', '.join(groups)})"
            return [f"join_tips: not added to any traffic IP group: {why}; the guide adds a "
                    "new member only when there is exactly one"]
        group = groups[0]
        document = store.get("traffic_ip_groups", group)
        machines = list(document["properties"]["basic"]["machines"])
        if name not in machines:
            machines.append(name)
            basic = {**document["properties"]["basic"], "machines": machines}
            store.put("traffic_ip_groups", group,
                      {"properties": {**document["properties"], "basic": basic}})
        return [f"join_tips: added to traffic IP group {group}"]

    def remove(self, name: str) -> ClusterState:
        def drop(state: ClusterState | None) -> ClusterState:
            if state is None or state.member(name) is None:
                raise JoinRefused(404, "cluster.no_such_member", f"no member named {name!r}")
            if name == self.name:
                raise JoinRefused(409, "cluster.remove_self",
                                  "a member cannot remove itself; remove it from another member")
            return state.without_member(name)

        state = update_cluster(self.state_dir, drop)
        assert state is not None
        return state

    def describe(self) -> dict[str, Any]:
        state = load_cluster(self.state_dir)
        if state is None:
            return {"name": self.name, "epoch": 0, "members": [
                {**Member(self.name, "", self.admin_port, self.control_port,
                          self.fingerprint).__dict__}]}
        return state.to_json(include_secret=False)

