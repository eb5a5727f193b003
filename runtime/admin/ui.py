"""Admin UI pages: login form, status page, logout. Plain server-rendered HTML.

Every value shown is escaped. The session cookie is HttpOnly, Secure and
SameSite=Strict; state-changing requests (login, logout) are POSTs and are
refused when the browser says they come from another origin. Logins share the
REST API's users file and failure limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import secrets
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lockgate import __version__
from lockgate.runtime.admin.events import EventLog
from lockgate.runtime.admin.forms import KIND_TITLES, document_from_form, form_layout, input_name
from lockgate.runtime.admin.sessions import (
    Session,
    Sessions,
    clear_cookie,
    cookie_token,
    cookie_value,
    set_cookie,
)
from lockgate.runtime.admin.wizard import WebWizard
from lockgate.runtime.api.auth import Authenticator, Outcome
from lockgate.runtime.api.http import Request, Response, mark_authenticated
from lockgate.runtime.config.schema import KINDS
from lockgate.runtime.config.store import ConfigStore

HTML = "text/html; charset=utf-8"
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; "
                                "connect-src 'self'; img-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]
NOT_CONFIGURED = ("This appliance has not been configured yet: no admin user exists. "
                  "Open the initial configuration wizard with the address printed on its "
                  "console (<code>https://HOST:9090/wizard?token=&hellip;</code>), give "
                  "user-data with a password when launching it, or run "
                  "<code>z-initial-config</code> on its console.")

ALLOWED_METHODS = {"/": ("GET", "HEAD"), "/login": ("GET", "HEAD", "POST"), "/logout": ("POST",),
                   "/events": ("GET", "HEAD"), "/system": ("GET", "HEAD"),
                   "/status.json": ("GET", "HEAD"), "/system/switch": ("POST",),
                   "/system/rollback": ("POST",), "/system/upgrade": ("PUT", "POST"),
                   "/system/licence": ("POST",)}
UPGRADE_PATH = "/system/upgrade"  # PUT: the bundle as the body, streamed (system.js sends it)
CSRF_HEADER = "x-lockgate-csrf"  # the session's CSRF token on the upload (a PUT, not a form)
CONFIG_PREFIX = "/config/"
LOGIN_COOKIE = "lockgate_login"  # the login form's CSRF token (double submit)
NAV = (("/", "Status"), ("/config/virtual_servers", "Virtual servers"), ("/config/pools", "Pools"),
       ("/config/monitors", "Monitors"), ("/config/traffic_ip_groups", "Traffic IP groups"),
       ("/events", "Event log"), ("/system", "System"))

Snapshot = Callable[[], Mapping[str, Any]]
e = html.escape


def _css() -> bytes:
    return resources.files("lockgate.runtime.admin").joinpath("style.css").read_bytes()


def _js(name: str = "chart.js") -> bytes:
    return resources.files("lockgate.runtime.admin").joinpath(name).read_bytes()


class AdminUi:
    def __init__(self, store: ConfigStore, auth: Authenticator, snapshot: Snapshot,
                 fingerprint: str, sessions: Sessions | None = None,
                 wizard: WebWizard | None = None, rest: Any = None,
                 events: EventLog | None = None) -> None:
        self.store = store
        self.wizard = wizard
        self.rest = rest  # the REST API's handler: the UI changes objects through it
        self.events = events or EventLog(store.state_dir)
        self.auth = auth
        self.snapshot = snapshot
        self.fingerprint = fingerprint
        self.sessions = sessions or Sessions()
        self.css = _css()
        self.js = _js()
        self.system_js = _js("system.js")

    def streams(self, method: str, path: str) -> bool:
        """For the HTTP server: the bundle upload's body is streamed to disk, not held."""
        return (method == "PUT" and path.rstrip("/") == UPGRADE_PATH
                and getattr(self.rest, "system", None) is not None)

    async def __call__(self, request: Request) -> Response:
        path, method = request.path, request.method
        get = method in ("GET", "HEAD")
        if path == "/style.css" and get:
            return Response(200, self.css, "text/css; charset=utf-8",
                            [("Cache-Control", "max-age=3600")])
        if path == "/chart.js" and get:
            return Response(200, self.js, "text/javascript; charset=utf-8",
                            [("Cache-Control", "max-age=3600"), *SECURITY_HEADERS])
        if path == "/system.js" and get:
            return Response(200, self.system_js, "text/javascript; charset=utf-8",
                            [("Cache-Control", "max-age=3600"), *SECURITY_HEADERS])
        if path == "/wizard" or path.startswith("/wizard/"):
            if self.wizard is None or self.wizard.finished or self.wizard.configured():
                return self._page(410 if self.auth.configured() else 404, "Initial configuration",
                                  '<p id="wizard-done">This appliance is already configured. '
                                  '<a href="/login">Log in</a>.</p>' if self.auth.configured()
                                  else f"<p>{NOT_CONFIGURED}</p>")
            if method == "POST" and not _same_origin(request):
                return self._page(403, "Forbidden", "<p>Cross-site request refused.</p>")
            return await self.wizard(request, self._page)
        allowed: tuple[str, ...]
        if path.startswith(CONFIG_PREFIX):
            allowed = ("GET", "HEAD", "POST")
        elif path not in ALLOWED_METHODS:
            return self._page(404, "Not found", "<p>There is no such page.</p>")
        else:
            allowed = ALLOWED_METHODS[path]
        if method not in allowed:
            response = self._page(405, "Method not allowed", "<p>Method not allowed.</p>")
            response.headers.append(("Allow", ", ".join(allowed)))
            return response
        if method in ("POST", "PUT") and not _same_origin(request):
            return self._page(403, "Forbidden", "<p>Cross-site request refused.</p>")
        if not self.auth.configured():
            return self._page(503 if method == "POST" else 200, "Initial configuration needed",
                              f'<section class="notice"><p>{NOT_CONFIGURED}</p></section>')
        token = cookie_token(request.headers.get("cookie"))
        if path == "/login":
            if method == "POST":
                return await self._login(request)
            return self._login_page(200)
        session = self.sessions.lookup(token)
        if session is not None and (session.credential is None or session.credential
                                    != self.auth.credential_tag(session.user)):
            self.sessions.end(token)  # password changed or user removed since the login
            session = None
        if session is None:
            return _redirect("/login")
        mark_authenticated()  # a live session: this connection keeps its slot under a flood
        if path == UPGRADE_PATH:
            return await self._upgrade(session, request)
        if path == "/system/licence":
            return await self._licence(session, request)
        if method == "POST":
            form = _form(request)
            if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
                return self._page(403, "Forbidden", "<p>This form has no valid CSRF token: "
                                  "reload the page and try again.</p>")
            if path == "/logout":
                self.sessions.end(token)
                await asyncio.to_thread(self.events.add, "login", f"{session.user} logged out")
                return _redirect("/login", [("Set-Cookie", clear_cookie())])
            if path in ("/system/switch", "/system/rollback"):
                return await self._switch(session, path, form)
            return await self._config_post(session, path, form)
        if path == "/status.json":
            snap = await asyncio.to_thread(self._observed_snapshot)
            return Response.json(200, {"time": time.time(), **snap},
                                 [("Cache-Control", "no-store"), *SECURITY_HEADERS])
        if path == "/events":
            events = await asyncio.to_thread(self.events.recent)
            return self._render(200, "events.html", session, {"events": events}, "/events")
        if path == "/system":
            return await self._system_page(session)
        if path.startswith(CONFIG_PREFIX):
            return await self._config_get(session, path, request)
        return await self._status(session)

    # ---- login ---------------------------------------------------------------------------
    async def _login(self, request: Request) -> Response:
        form = parse_qs(request.body.decode("utf-8", errors="replace"), max_num_fields=10)
        user = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        # Login CSRF: a browser's form carries the login page's token, equal to the
        # SameSite=Strict cookie set with it, which a form posted from another site lacks.
        # Browsers always send Origin on a POST ("null" under no-referrer, so it cannot
        # tell sites apart); a client sending none (curl, scripts) is no browser to abuse.
        expected = cookie_value(request.headers.get("cookie"), LOGIN_COOKIE) or ""
        given = (form.get("csrf") or [""])[0]
        browser = "origin" in request.headers
        if (browser or given or expected) and not (
                expected and hmac.compare_digest(given.encode(), expected.encode())):
            return self._login_page(403, "The login form expired; log in again.")
        verdict = await self.auth.check(request.client, user or None, password or None)
        if verdict.outcome is not Outcome.OK or not verdict.user:
            await asyncio.to_thread(self.events.add, "login",
                                    f"failed login for {user[:64]!r} from {request.client}")
        if verdict.outcome is Outcome.OK and verdict.user:
            await asyncio.to_thread(self.events.add, "login",
                                    f"{verdict.user} logged in from {request.client}")
            token = self.sessions.create(verdict.user, self.auth.credential_tag(verdict.user))
            cookie = set_cookie(token, int(self.sessions.lifetime))
            return _redirect("/", [("Set-Cookie", cookie)])
        if verdict.outcome is Outcome.LOCKED:
            response = self._login_page(429, f"Too many failed logins; try again in "
                                             f"{verdict.retry_after} seconds.")
            response.headers.append(("Retry-After", str(verdict.retry_after)))
            return response
        if verdict.outcome is Outcome.MISSING:
            return self._login_page(400, "Enter a user name and password.")
        return self._login_page(401, "Wrong user name or password.")

    def _login_page(self, status: int, message: str = "") -> Response:
        error = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
        token = secrets.token_urlsafe(24)
        body = f"""<section><h2>Log in</h2>{error}
<form class="login" method="post" action="/login">
<input type="hidden" name="csrf" value="{token}">
<label>User name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form></section>"""
        response = self._page(status, "Log in", body)
        response.headers.append(("Set-Cookie", f"{LOGIN_COOKIE}={token}; Path=/login; "
                                 "Max-Age=3600; HttpOnly; Secure; SameSite=Strict"))
        response.headers.append(("Cache-Control", "no-store"))
        return response

    # ---- status --------------------------------------------------------------------------
    async def _status(self, session: Session) -> Response:
        tree, version = await asyncio.to_thread(self._read_config)
        snap = await asyncio.to_thread(self._observed_snapshot)
        body = [f"""<section><h2>Appliance</h2><table>
<tr><th>lockgate version</th><td>{e(__version__)}</td></tr>
<tr><th>Configuration version</th><td>{version}</td></tr>
<tr><th>Certificate SHA-1 fingerprint</th><td><code>{e(self.fingerprint)}</code></td></tr>
{_licence_row(snap.get("licence"))}
</table></section>""", _CHART, self._virtual_servers(tree, snap), self._pools(tree, snap)]
        return self._page(200, "Status", "\n".join(body), self._header(session, "/"))

    def _read_config(self) -> tuple[dict[str, Any], int]:
        return self.store.tree(), self.store.version

    def _observed_snapshot(self) -> Mapping[str, Any]:
        snap = self.snapshot()
        self.events.observe(snap)
        return snap

    def _header(self, session: Session, current: str) -> str:
        links = "".join(f'<a href="{href}"{" class=current" if href == current else ""}>'
                        f"{e(label)}</a>" for href, label in NAV)
        return (f'<nav>{links}</nav><form method="post" action="/logout">'
                f'<input type="hidden" name="csrf" value="{e(session.csrf)}">'
                f'<span>{e(session.user)}</span> <button type="submit" id="logout">Log out'
                "</button></form>")

    def _render(self, status: int, template: str, session: Session, context: dict[str, Any],
                current: str) -> Response:
        from lockgate.runtime.admin.templating import render

        page = render(template, {**context, "header": self._header(session, current),
                                 "csrf": session.csrf})
        return Response(status, page.encode(), HTML, [("Cache-Control", "no-store"),
                                                       *SECURITY_HEADERS])

    # ---- configuration objects -------------------------------------------------------------
    async def _config_get(self, session: Session, path: str, request: Request) -> Response:
        parts = path[len(CONFIG_PREFIX):].strip("/").split("/")
        kind = parts[0]
        if kind not in KINDS or len(parts) > 2:
            return self._page(404, "Not found", "<p>There is no such page.</p>")
        tree, _ = await asyncio.to_thread(self._read_config)
        if len(parts) == 1:
            snap = await asyncio.to_thread(self._observed_snapshot)
            return self._render(200, "config_list.html", session, {
                "kind": kind, "title": KIND_TITLES[kind], "objects": sorted(tree[kind].items()),
                "stats": snap.get(kind) or {}}, f"/config/{kind}")
        name = parts[1]
        if name == "new":
            return self._edit_page(session, kind, None, None, {}, 200)
        if name not in tree[kind]:
            return self._page(404, "Not found", "<p>There is no such object.</p>")
        return self._edit_page(session, kind, name, tree[kind][name]["properties"], {}, 200)

    def _edit_page(self, session: Session, kind: str, name: str | None,
                   properties: dict[str, Any] | None, errors: dict[str, str], status: int,
                   new_name: str = "") -> Response:
        return self._render(status, "config_edit.html", session, {
            "kind": kind, "title": KIND_TITLES[kind], "name": name, "new_name": new_name,
            "layout": form_layout(kind, properties), "errors": errors}, f"/config/{kind}")

    async def _config_post(self, session: Session, path: str, form: dict[str, str]) -> Response:
        parts = path[len(CONFIG_PREFIX):].strip("/").split("/")
        kind = parts[0]
        if kind not in KINDS or len(parts) not in (2, 3) or self.rest is None:
            return self._page(404, "Not found", "<p>There is no such page.</p>")
        name = parts[1]
        if len(parts) == 3:
            if parts[2] != "delete":
                return self._page(404, "Not found", "<p>There is no such page.</p>")
            reply = await self.rest._delete(kind, name)
            if reply.status == 204:
                await asyncio.to_thread(self.events.add, "config",
                                        f"{session.user} deleted {kind} {name}")
                return _redirect(f"/config/{kind}")
            doc = json.loads(reply.body or b"{}")
            return self._page(reply.status, "Cannot delete",
                              f'<p class="error" role="alert">{e(doc.get("error_text", ""))}</p>'
                              f'<p><a href="/config/{e(kind)}">Back</a></p>',
                              self._header(session, f"/config/{kind}"))
        creating = name == "new"
        document = document_from_form(kind, form)
        if creating:
            name = form.get("name", "").strip()
            tree, _ = await asyncio.to_thread(self._read_config)
            if name in tree[kind]:
                return self._edit_page(session, kind, None, document["properties"],
                                       {"name": "an object of this name exists already"}, 409,
                                       name)
        reply = await self.rest._put(kind, name, json.dumps(document).encode())
        if reply.status in (200, 201):
            action = "created" if reply.status == 201 else "changed"
            await asyncio.to_thread(self.events.add, "config",
                                    f"{session.user} {action} {kind} {name}")
            return _redirect(f"/config/{kind}")
        doc = json.loads(reply.body or b"{}")
        field = str((doc.get("error_info") or {}).get("field", ""))
        text = str(doc.get("error_text", "invalid"))
        message = text.split(": ", 1)[1] if text.startswith(field + ": ") else text
        key = "name" if field == f"{kind}.{name}" else input_name(kind, name, field)
        return self._edit_page(session, kind, None if creating else name,
                               document["properties"], {key or "form": message},
                               reply.status if reply.status >= 400 else 422,
                               name if creating else "")

    # ---- system: versions, upgrade, switch, roll back -----------------------------------
    async def _system_page(self, session: Session, status: int = 200, notice: str = "",
                           problem: str = "", confirm: dict[str, Any] | None = None,
                           licence_error: str = "") -> Response:
        system = await asyncio.to_thread(self._system)
        return self._render(status, "system.html", session,
                            {**system, "notice": notice, "problem": problem,
                             "confirm": confirm, "licence_error": licence_error}, "/system")

    async def _switch(self, session: Session, path: str, form: dict[str, str]) -> Response:
        """Switch GRUB's default (or roll back) through the REST API's code: the first POST
        asks for confirmation, the second (``confirm=yes``) does it."""
        from lockgate.runtime.system.rest import PREFIX

        system = getattr(self.rest, "system", None)
        if system is None:
            return await self._system_page(session, 404, problem="This server offers no "
                                           "version switching.")
        rollback = path == "/system/rollback"
        wanted = form.get("version", "").strip()
        if not rollback and not wanted:
            return await self._system_page(session, 400, problem="Choose a version.")
        if form.get("confirm") != "yes":
            return await self._system_page(session, confirm={
                "action": path, "version": wanted, "rollback": rollback})
        restart = form.get("restart") == "yes"
        document: dict[str, Any] = {"restart": restart}
        if not rollback:
            document["version"] = wanted
        reply = await system.handle("POST" if rollback else "PUT",
                                    PREFIX + ("/rollback" if rollback else "/versions/default"),
                                    json.dumps(document).encode())
        doc = reply.document if isinstance(reply.document, dict) else {}
        what = "rolled back to" if rollback else "made the default:"
        if reply.status != 200:
            text = str(doc.get("error_text", "refused"))
            await asyncio.to_thread(self.events.add, "system",
                                    f"{session.user}: switching refused: {text}")
            return await self._system_page(session, reply.status, problem=text)
        version = str(doc.get("version", ""))
        await asyncio.to_thread(self.events.add, "system", f"{session.user} {what} {version}")
        notice = f"{doc.get('entry', version)} is now the default boot entry."
        if doc.get("restart"):
            notice += " The appliance restarts now; log in again in a minute or two."
        elif restart:
            notice += " It is already running."
        else:
            notice += " It runs from the next restart."
        if doc.get("note"):
            notice += f" Note: {doc['note']}."
        return await self._system_page(session, notice=notice)

    async def _upgrade(self, session: Session, request: Request) -> Response:
        """The bundle upload: the REST API's own streamed path (``PUT …/system/upgrade``),
        behind the session and its CSRF token (a header: system.js sends the file as the
        body, as the REST API takes it)."""
        import dataclasses

        system = getattr(self.rest, "system", None)
        if request.method != "PUT" or system is None or request.stream is None:
            return self._page(400, "Upload refused",
                              "<p>Uploading a bundle needs JavaScript in the browser (or use "
                              "<code>PUT /api/tm/1.0/system/upgrade</code> on the REST API, "
                              "port 9070).</p>", self._header(session, "/system"))
        headers = [("Cache-Control", "no-store"), *SECURITY_HEADERS]
        given = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            return Response.json(403, {"error_id": "csrf.invalid", "error_text":
                                       "no valid CSRF token: reload the page and try again"},
                                 headers)
        query = parse_qs(request.query)
        if (query.get("confirm") or [""])[0] != "yes":
            return Response.json(400, {"error_id": "upgrade.unconfirmed", "error_text":
                                       "confirm that the inactive slot may be overwritten"},
                                 headers)
        restart = (query.get("restart") or ["no"])[0] == "yes"
        # Only the switches the UI offers reach the REST code (no allow_unsigned from here).
        forwarded = dataclasses.replace(request, query="" if restart else "restart=false")
        response = await self.rest._upload(system, forwarded)
        try:
            doc = json.loads(response.body or b"{}")
        except ValueError:
            doc = {}
        if response.status == 200:
            text = (f"{session.user} installed {doc.get('version')} into slot "
                    f"{doc.get('slot')}" + (" and restarts into it" if restart else ""))
        else:
            text = f"{session.user}: upgrade refused: {doc.get('error_text', response.status)}"
        await asyncio.to_thread(self.events.add, "system", text)
        response.headers.extend(headers)
        return response

    async def _licence(self, session: Session, request: Request) -> Response:
        """Install a licence key (checked as the runtime checks it) or go back to the
        Community Edition; the workers pick the change up within a second."""
        from lockgate.runtime.admin.wizard import _form as multipart_form
        from lockgate.runtime.licence import MAX_KEY_BYTES, LicenceKeyError, check_key, key_file

        form, upload = multipart_form(request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            return self._page(403, "Forbidden", "<p>This form has no valid CSRF token: "
                              "reload the page and try again.</p>")
        path = key_file(self.store.state_dir)
        if form.get("action") == "community":
            await asyncio.to_thread(lambda: path.unlink(missing_ok=True))
            await asyncio.to_thread(self.events.add, "licence",
                                    f"{session.user} removed the licence key")
            return await self._system_page(session, notice="The licence key was removed: "
                                           "this traffic manager runs as the Community "
                                           "Edition.")
        if not upload:
            return await self._system_page(session, 422, licence_error="Choose a licence key "
                                           "file to upload.")
        try:
            if len(upload) > MAX_KEY_BYTES:
                raise LicenceKeyError("the file is too big to be a lockgate licence key")
            fields = check_key(upload)
        except LicenceKeyError as exc:
            return await self._system_page(session, 422, licence_error=str(exc))
        from lockgate.files import atomic_write

        await asyncio.to_thread(atomic_write, path, upload, 0o600)
        serial = str(fields.get("serial") or "")
        await asyncio.to_thread(self.events.add, "licence",
                                f"{session.user} installed licence key {serial}".rstrip())
        return await self._system_page(session, notice=f"Licence key {serial} installed; "
                                       "its limits apply within a second.")

    def _system(self) -> dict[str, Any]:
        versions: list[tuple[str, str]] = [("lockgate", __version__)]
        try:
            from lockgate.paths import RELEASE_FILE

            release = json.loads(RELEASE_FILE.read_text())
            if isinstance(release, dict):
                versions += [(f"release {k}", str(v)) for k, v in sorted(release.items())]
        except (OSError, ValueError):
            pass  # not on an appliance image: no release record
        members = self._members()
        from lockgate.runtime.licence import licence_state

        slots, slots_problem = self._slots()
        system = getattr(self.rest, "system", None)
        return {"versions": versions, "fingerprint": self.fingerprint, "members": members,
                "licence": licence_state(self.store.state_dir).as_dict(),
                "config_version": self.store.version, "slots": slots,
                "slots_problem": slots_problem,
                "last_upgrade": system.last_upgrade if system is not None else {},
                "inactive": next((v["slot"] for v in slots if not v["running"]),
                                 "b" if slots and slots[0]["slot"] == "a" else "a")}

    def _members(self) -> list[dict[str, Any]]:
        """The cluster's members: fingerprint, heartbeat state (the fault-tolerance
        status: alive, dead, last heard), the traffic IPs each holds and the configuration
        replication link to it. Empty when this process runs no cluster service."""
        cluster = getattr(self.rest, "cluster", None)  # what GET /api/tm/1.0/cluster shows
        if cluster is None:
            return []
        members: list[dict[str, Any]] = []
        with contextlib.suppress(Exception):  # the slot must never break the page
            from lockgate.runtime.cluster.status import cluster_status

            described = cluster.describe()
            replicator = getattr(self.rest, "replicator", None)
            links = replicator.status() if replicator is not None else {}
            try:
                heard = {str(m.get("name")): m for m in
                         cluster_status(self.store.state_dir).get("members") or []}
            except Exception:  # no fault-tolerance status yet: the links still tell
                heard = {}
            for member in described.get("members") or []:
                name = str(member.get("name", ""))
                link = links.get(name)
                beat = heard.get(name) or {}
                parts = []
                if name == described.get("name"):
                    parts.append("this traffic manager")
                else:
                    state = beat.get("state")
                    if state:
                        ago = beat.get("last_heard_s")
                        parts.append(str(state) + (f" (heard {ago:.1f} s ago)"
                                                   if isinstance(ago, int | float) else ""))
                    parts.append("configuration replication: " + (
                        "connected" if link and link.get("connected") else
                        f"not connected: {link.get('problem')}" if link else "unknown"))
                members.append({"name": name, "fingerprint": member.get("fingerprint", ""),
                                "address": f"{member.get('address', '')}:"
                                           f"{member.get('admin_port', '')}",
                                "health": "; ".join(parts),
                                "holding": ", ".join(beat.get("holding") or [])})
        return members

    def _slots(self) -> tuple[list[dict[str, Any]], str]:
        """The root slots as ``rollback-helper --json`` lists them, through the same machine
        the REST API upgrades; none and the reason off an appliance."""
        from lockgate.errors import LockgateError
        from lockgate.runtime.system.rollback import installed_versions

        system = getattr(self.rest, "system", None)
        if system is None:
            return [], "this server offers no upgrades"
        try:
            return [v.as_json() for v in installed_versions(system.machine())], ""
        except LockgateError as exc:
            return [], exc.format_message()
        except Exception as exc:  # the System page must show, whatever the disk says
            return [], f"the root slots cannot be read: {exc}"

    @staticmethod
    def _virtual_servers(tree: Mapping[str, Any], snap: Mapping[str, Any]) -> str:
        stats = snap.get("virtual_servers") or {}
        rows = []
        for name, doc in sorted((tree.get("virtual_servers") or {}).items()):
            basic = doc["properties"]["basic"]
            s = stats.get(name, {})
            rows.append(
                f"<tr><td>{e(name)}</td><td>{e(str(basic['protocol']))}</td>"
                f"<td>{e(str(basic['port']))}</td><td>{e(str(basic['pool']))}</td>"
                f"<td>{'yes' if basic['enabled'] else 'no'}</td>"
                f"<td class=\"{e(str(s.get('state', 'unknown')))}\" "
                f"title=\"{e(str(s.get('error') or ''))}\">"
                f"{e(str(s.get('state', 'unknown')))}</td>"
                f"<td>{int(s.get('listeners_failed', 0))}</td>"
                f"<td>{int(s.get('connections_current', 0))}</td>"
                f"<td>{int(s.get('requests', 0))}</td><td>{int(s.get('errors', 0))}</td></tr>")
        if not rows:
            return "<section><h2>Virtual servers</h2><p>None configured.</p></section>"
        return ("<section><h2>Virtual servers</h2><table><tr><th>Name</th><th>Protocol</th>"
                "<th>Port</th><th>Pool</th><th>Enabled</th><th>State</th><th>Listeners failed</th>"
                "<th>Connections</th>"
                "<th>Requests</th><th>Errors</th></tr>" + "".join(rows) + "</table></section>")

    @staticmethod
    def _pools(tree: Mapping[str, Any], snap: Mapping[str, Any]) -> str:
        stats = snap.get("pools") or {}
        parts = ["<section><h2>Pools</h2>"]
        pools = sorted((tree.get("pools") or {}).items())
        if not pools:
            parts.append("<p>None configured.</p>")
        for name, doc in pools:
            nodes = (stats.get(name) or {}).get("nodes") or {}
            parts.append(f"<h3>{e(name)}</h3><table><tr><th>Node</th><th>Configured</th>"
                         "<th>Health</th><th>Connections</th><th>Failures</th></tr>")
            for row in doc["properties"]["basic"]["nodes_table"]:
                node = str(row["node"])
                n = nodes.get(node, {})
                health = str(n.get("state", "unknown"))
                parts.append(f"<tr><td><code>{e(node)}</code></td><td>{e(str(row['state']))}</td>"
                             f'<td class="{e(health)}">{e(health)}</td>'
                             f"<td>{int(n.get('connections', 0))}</td>"
                             f"<td>{int(n.get('failures', 0))}</td></tr>")
            parts.append("</table>")
        parts.append("</section>")
        return "".join(parts)

    # ---- page frame ----------------------------------------------------------------------
    @staticmethod
    def _page(status: int, title: str, body: str, header_extra: str = "") -> Response:
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} - lockgate</title><link rel="stylesheet" href="/style.css"></head>
<body><header><h1>lockgate traffic manager</h1>{header_extra}</header>
<main><h2>{e(title)}</h2>
{body}
</main></body></html>
"""
        return Response(status, page.encode(), HTML, list(SECURITY_HEADERS))


_CHART = ('<section><h2>Traffic</h2><p class="hint">Requests per second over the last two '
          'minutes, refreshed every 2 s.</p><svg id="traffic" viewBox="0 0 600 120" '
          'role="img" aria-label="requests per second"></svg><p id="rate">-</p>'
          '<script src="/chart.js"></script></section>')


def _form(request: Request) -> dict[str, str]:
    parsed = parse_qs(request.body.decode("utf-8", errors="replace"), keep_blank_values=True,
                      max_num_fields=2000)
    return {k: v[0] for k, v in parsed.items()}


def _licence_row(licence: Mapping[str, Any] | None) -> str:
    """The licence as the runtime applies it; not accepted means nothing is proxied."""
    if not licence:
        return ""
    if not licence.get("accepted"):
        return (f'<tr><th>Licence</th><td class="error">{e(licence.get("message") or "")}'
                "</td></tr>")
    limits = []
    if licence.get("bandwidth_mbit_s"):
        limits.append(f"{licence['bandwidth_mbit_s']} Mb/s")
    if licence.get("max_cluster_size"):
        limits.append(f"at most {licence['max_cluster_size']} cluster members")
    text = str(licence.get("edition") or "")
    if limits:
        text += " (" + ", ".join(limits) + ")"
    if licence.get("expires"):
        text += f", expires {licence['expires']}"
    if licence.get("message"):
        text += f" - {licence['message']}"
    return f"<tr><th>Licence</th><td>{e(text)}</td></tr>"


def _redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", HTML, [("Location", location), *(headers or []),
                                     *SECURITY_HEADERS])


def _same_origin(request: Request) -> bool:
    """False when the browser says the POST comes from another site (CSRF guard)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        # No Origin (curl), or "null": what Chrome sends for a form POST under
        # Referrer-Policy no-referrer. Not evidence either way: every form's CSRF token and
        # the SameSite=Strict cookies decide.
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")
