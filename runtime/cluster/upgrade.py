"""``upgrade-cluster``: upgrade every member of the cluster, one at a time, over each
member's REST system endpoints (lockgate.runtime.system.rest on 9070).

For each member in turn (this member last: its own reboot ends the command):

1. ``PUT /api/tm/1.0/system/upgrade`` with the bundle (streamed; the member verifies
   the signature and writes its inactive slot, then reboots into it for a trial);
2. wait until the member answers again running the new version, its fault tolerance
   running and healthy, every member that was alive before seen alive again, and every
   traffic IP held by exactly one member (``/api/tm/1.0/status/cluster``).

If one member fails (bundle refused, not back in time, back in the old version, not
healthy), every member already upgraded -- and the failed one, if it installed the
bundle -- is switched back to the version it ran before
(``PUT /api/tm/1.0/system/versions/default``) and waited for the same way, newest
first; ``--no-rollback`` leaves them as they are. ``--no-restart`` installs on every
member without rebooting any (each boots the new version at its next restart).

Members are reached at their cluster address on the REST port, pinned to the
certificate fingerprint the cluster recorded for each, with the admin credentials
(password from a file or a prompt, never argv).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.errors import Failure
from lockgate.runtime.cluster.state import ClusterState, Member

SYSTEM = "/api/tm/1.0/system"
STATUS = "/api/tm/1.0/status/cluster"
REST_PORT = 9070
POLL = 0.5

Say = Callable[[str], None]


class MemberFailed(Exception):
    """One member's upgrade went wrong: the message says which step and why;
    ``installed``: the member took the bundle (so a rollback must include it)."""

    def __init__(self, message: str, installed: bool = False) -> None:
        super().__init__(message)
        self.installed = installed


@dataclass
class Api:
    """Pinned, authenticated REST calls to one member."""

    member: Member
    authorization: str
    rest_port: int = REST_PORT

    @property
    def base(self) -> str:
        host = self.member.address
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{self.rest_port}"

    def call(self, method: str, path: str, document: Any = None, *, timeout: float = 10.0,
             deadline: float = 10.0) -> tuple[int, Any]:
        from lockgate.http import read_url

        headers = {"Authorization": self.authorization}
        data = None
        if document is not None:
            data = json.dumps(document)
            headers["Content-Type"] = "application/json"
        reply = read_url(self.base + path, method=method, headers=headers, data=data,
                         timeout=timeout, deadline=deadline, retries=1,
                         pin_sha1=self.member.fingerprint or None, **_unpinned(self.member))
        try:
            body = json.loads(reply.body) if reply.body else None
        except ValueError:
            body = reply.body.decode(errors="replace")[:200]
        return reply.status, body

    def upload(self, package: Path, restart: bool, timeout: float) -> tuple[int, Any]:
        from lockgate.http import upload_file

        query = "" if restart else "?restart=false"
        reply = upload_file(self.base + f"{SYSTEM}/upgrade{query}", package,
                            headers={"Authorization": self.authorization}, timeout=timeout,
                            pin_sha1=self.member.fingerprint or None, **_unpinned(self.member))
        try:
            return reply.status, json.loads(reply.body)
        except ValueError:
            return reply.status, reply.body.decode(errors="replace")[:200]

    def running(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The version running now and every installed one (raises on no answer)."""
        status, versions = self.call("GET", f"{SYSTEM}/versions")
        if status != 200 or not isinstance(versions, list):
            raise MemberFailed(f"{self.member.name}: {SYSTEM}/versions answered {status}: "
                               f"{_error_text(versions)}")
        now = next((v["version"] for v in versions if v.get("running")), None)
        return now, versions

    def cluster(self) -> dict[str, Any]:
        status, doc = self.call("GET", STATUS)
        if status != 200:
            raise MemberFailed(f"{self.member.name}: {STATUS} answered {status}: "
                               f"{_error_text(doc)}")
        return dict(doc["cluster"])


def _unpinned(member: Member) -> dict[str, Any]:
    """A member recorded without a fingerprint (joined by an old version): not checked."""
    if member.fingerprint:
        return {}
    from lockgate.http import unverified_context

    return {"ssl_context": unverified_context()}


def _error_text(doc: Any) -> str:
    if isinstance(doc, dict) and "error_text" in doc:
        return str(doc["error_text"])
    return str(doc)[:200]


def healthy(doc: dict[str, Any], expect_alive: set[str]) -> str | None:
    """None when ``doc`` (a member's /status/cluster) shows the cluster whole again: fault
    tolerance running and healthy, every name in ``expect_alive`` alive, every traffic IP
    of every enabled group held by exactly one member; else what is still missing."""
    if not doc.get("running"):
        return "fault tolerance not running yet"
    if doc.get("healthy") is False:
        return "not healthy (workers or pools down)"
    states = {m["name"]: m["state"] for m in doc["members"]}
    missing = sorted(n for n in expect_alive if states.get(n) not in ("alive", "self"))
    if missing:
        return f"not hearing {', '.join(missing)}"
    for group in doc["traffic_ip_groups"]:
        if not group.get("enabled", True):
            continue
        for ip in group["ips"]:
            if ip["held_by"] is None:
                holders = ", ".join(ip["holders"]) or "nobody"
                return f"traffic IP {ip['ip']} held by {holders}"
    return None


@dataclass
class ClusterUpgrade:
    cluster: ClusterState
    package: Path
    authorization: str
    say: Say
    rest_port: int = REST_PORT
    member_timeout: float = 900.0  # a reboot into the new version and the rejoin
    upload_timeout: float = 120.0
    rollback: bool = True
    apis: dict[str, Api] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in self.cluster.members:
            self.apis[m.name] = Api(m, self.authorization, self.rest_port)

    @property
    def order(self) -> list[Member]:
        """Peers by name, this member last (its reboot ends the command)."""
        return sorted(self.cluster.members, key=lambda m: (m.name == self.cluster.name, m.name))

    def bundle_version(self) -> str:
        from lockgate.runtime.system.bundle import read_header

        try:
            return read_header(self.package).version
        except Failure as exc:
            raise Failure(exc.format_message()) from None

    def survey(self) -> dict[str, str | None]:
        """Every member's running version; Failure naming the members that do not answer."""
        found: dict[str, str | None] = {}
        problems = []
        for m in self.order:
            try:
                found[m.name], _ = self.apis[m.name].running()
            except Exception as exc:  # MemberFailed, UrlError, PinMismatch: all reported
                problems.append(f"{m.name} ({m.address}): {exc}")
        if problems:
            raise Failure("cannot reach every member, nothing changed: " + "; ".join(problems))
        return found

    # ---- info ------------------------------------------------------------------------------
    def info(self) -> None:
        version = self.bundle_version()
        running = self.survey()
        status = self.apis[self.cluster.name].cluster() if self.cluster.me else None
        alive = {m["name"]: m["state"] for m in status["members"]} if status else {}
        self.say(f"bundle {self.package.name}: version {version}")
        self.say(f"{len(self.order)} members, upgraded one at a time in this order:")
        for i, m in enumerate(self.order, 1):
            now = running[m.name]
            plan = "already running it: skipped" if now == version else f"{now} -> {version}"
            state = alive.get(m.name, "?")
            self.say(f"  {i}. {m.name} ({m.address}) {state}: {plan}")
        self.say("nothing changed (--mode info)")

    # ---- install ---------------------------------------------------------------------------
    def install(self, restart: bool) -> None:
        version = self.bundle_version()
        before = self.survey()
        expect_alive: set[str] = set()
        if restart:
            start = self.apis[self.cluster.name].cluster()
            problem = healthy(start, set())
            if problem is not None:
                raise Failure(f"the cluster is not healthy, nothing changed: {problem}")
            expect_alive = {m["name"] for m in start["members"]
                            if m["state"] in ("alive", "self")}
        done: list[Member] = []
        total = len(self.order)
        for i, m in enumerate(self.order, 1):
            tag = f"[{i}/{total}] {m.name} ({m.address})"
            if before[m.name] == version:
                self.say(f"{tag}: already running {version}; skipped")
                continue
            if restart and m.name == self.cluster.name:
                self.say(f"{tag}: this appliance's own member, last: run here, the command "
                         "ends with its reboot (its trial boot's health check still rolls it "
                         "back if the new version fails)")
            started = time.monotonic()
            try:
                installed = self._install_one(m, version, restart, tag)
                if restart:
                    self._wait_back(m, version, expect_alive, tag, before[m.name])
            except MemberFailed as exc:
                self.say(f"{tag}: FAILED: {exc}")
                touched = [*done, m] if exc.installed else done
                self._roll_back(touched, before, restart, expect_alive)
                raise Failure(f"upgrade of {m.name} failed: {exc}"
                              + self._rolled_back_note(touched, before)) from None
            done.append(m)
            what = "installed; boots it at the next restart" if not restart else \
                f"running {version}, rejoined, traffic IPs held"
            self.say(f"{tag}: {what} ({time.monotonic() - started:.1f} s; slot "
                     f"{installed.get('slot', '?')})")
        self.say(f"all {total} members {'run' if restart else 'have'} {version}")

    def _install_one(self, m: Member, version: str, restart: bool, tag: str) -> dict[str, Any]:
        size = self.package.stat().st_size / (1024 * 1024)
        self.say(f"{tag}: uploading {self.package.name} ({size:.1f} MiB)")
        try:
            status, reply = self.apis[m.name].upload(self.package, restart, self.upload_timeout)
        except Exception as exc:  # UrlError, PinMismatch: the member has nothing new
            raise MemberFailed(f"upload: {exc}") from None
        if status != 200 or not isinstance(reply, dict):
            raise MemberFailed(f"the member refused the bundle (HTTP {status}): "
                               f"{_error_text(reply)}")
        if reply.get("version") != version:
            raise MemberFailed(f"installed {reply.get('version')}, not {version}",
                               installed=True)
        self.say(f"{tag}: installed {version} in slot {reply.get('slot')}"
                 + ("; rebooting into it" if restart else ""))
        return reply

    def _wait_back(self, m: Member, version: str, expect_alive: set[str], tag: str,
                   old: str | None) -> None:
        """Until ``m`` runs ``version`` and the cluster is whole; MemberFailed otherwise."""
        api = self.apis[m.name]
        deadline = time.monotonic() + self.member_timeout
        went_down = False
        last = "no answer yet"
        said_down = False
        while time.monotonic() < deadline:
            try:
                running, _ = api.running()
            except Exception as exc:  # down while it reboots
                went_down, last = True, f"no answer ({str(exc)[:120]})"
                if not said_down:
                    self.say(f"{tag}: down (rebooting)")
                    said_down = True
                time.sleep(POLL)
                continue
            if running != version:
                if went_down and running == old:
                    raise MemberFailed(f"came back running {old}, not {version} (its trial "
                                       "boot of the new version failed)", installed=True)
                last = f"still running {running}"
                time.sleep(POLL)
                continue
            try:
                problem = healthy(api.cluster(), expect_alive)
            except Exception as exc:
                problem = str(exc)[:200]
            if problem is None:
                return
            last = f"running {version}; {problem}"
            time.sleep(POLL)
        raise MemberFailed(f"not back healthy within {self.member_timeout:g} s ({last})",
                           installed=True)

    def _roll_back(self, touched: list[Member], before: dict[str, str | None], restart: bool,
                   expect_alive: set[str]) -> None:
        if not touched:
            return
        if not self.rollback:
            self.say("not rolling back (--no-rollback): "
                     + ", ".join(f"{m.name} stays as it is" for m in touched))
            return
        for m in reversed(touched):
            old = before[m.name]
            tag = f"rollback {m.name} ({m.address})"
            self.say(f"{tag}: back to {old}")
            try:
                status, reply = self.apis[m.name].call(
                    "PUT", f"{SYSTEM}/versions/default", {"version": old, "restart": restart},
                    timeout=30, deadline=60)
                if status != 200:
                    raise MemberFailed(f"HTTP {status}: {_error_text(reply)}")
                if restart and isinstance(reply, dict) and reply.get("restart"):
                    self._wait_back(m, str(old), expect_alive, tag, None)
            except Exception as exc:  # go on with the others; the summary names it
                self.say(f"{tag}: FAILED: {exc}")
                continue
            self.say(f"{tag}: running {old} again" if restart else f"{tag}: {old} is the "
                     "default again")

    def _rolled_back_note(self, touched: list[Member], before: dict[str, str | None]) -> str:
        if not touched:
            return "; no member was changed"
        if not self.rollback:
            return "; left as they are: " + ", ".join(m.name for m in touched)
        return "; rolled back: " + ", ".join(f"{m.name} to {before[m.name]}" for m in touched)


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
