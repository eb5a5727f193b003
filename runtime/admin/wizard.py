"""The web initial-configuration wizard on HTTPS 9090 (when no admin user exists yet).

The same steps as the console wizard ``z-initial-config``: every answer goes
through :mod:`lockgate.firstboot.wizard.questions`' validators and Finish runs
:func:`lockgate.firstboot.wizard.finish.apply_all`, so both front ends accept
the same answers and write the same state (users file, time zone,
``config/time.json``, ``config/security.json``, licence key and record --
which first boot puts into effect at every boot).

Only the holder of the one-time token printed on the console can claim it:
``/wizard?token=T`` (compared in constant time) binds the wizard to a random
cookie and the token is spent. Every POST carries that session's CSRF token.
Once the appliance is configured every wizard URL answers 410 and points to
the login page.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from lockgate.paths import STATE_DIR, StatePaths
from lockgate.runtime.api.http import Request, Response

COOKIE = "lockgate_wizard"
STEPS = ("welcome", "password", "licence", "time", "security", "licence-key", "summary")
TITLES = {
    "welcome": "Welcome", "password": "Administrator password", "licence": "Licence agreement",
    "time": "Date, time and time zone", "security": "Security", "licence-key": "Licence key",
    "summary": "Summary",
}
# The console wizard's question steps (Question.step) -> this wizard's pages.
QUESTION_STEPS = {"password": "password", "licence": "licence", "timezone": "time", "ntp": "time",
                  "security": "security", "licence key": "licence-key",
                  "services director": "licence-key"}
SD_FIELDS = ("sd_address", "sd_registration_key", "sd_cert")
UPLOAD_NAME = "licence.upload"  # the uploaded key, in config/, until Finish installs it


def root_of(state_dir: Path) -> Path | None:
    """The root the first-boot functions take (they write ``root/var/lib/lockgate``...);
    None when ``state_dir`` is not laid out as ``<root>/var/lib/lockgate``."""
    parts = STATE_DIR.relative_to("/").parts
    if state_dir.parts[-len(parts):] != parts:
        return None
    return state_dir.parents[len(parts) - 1]


@dataclass
class WizardSession:
    cookie: str
    csrf: str
    values: dict[str, str] = field(default_factory=dict)  # what the user typed, per field
    errors: dict[str, str] = field(default_factory=dict)  # field -> message, for one render


class WebWizard:
    def __init__(self, state_dir: Path, root: Path, configured: Any) -> None:
        """``configured()`` says whether the appliance has been configured meanwhile."""
        self.state_dir = state_dir
        self.root = root
        self.configured = configured
        self.token: str | None = secrets.token_urlsafe(24)
        self.session: WizardSession | None = None
        self.finishing = asyncio.Lock()
        self.finished = False

    # ---- dispatch -------------------------------------------------------------------
    async def __call__(self, request: Request, page: Any) -> Response:
        """``page(status, title, body_html)`` frames a page like the rest of the UI."""
        if self.finished or self.configured():
            return _gone()
        if request.path == "/wizard" and request.method in ("GET", "HEAD") and "token" in \
                parse_qs(request.query):
            return self._claim(request)
        session = self._session(request)
        if session is None:
            return _render(403, "wizard_locked.html", {})
        step = request.path.removeprefix("/wizard").strip("/") or "welcome"
        if step not in STEPS:
            return _render(404, "wizard_locked.html", {"missing": True})
        if request.method in ("GET", "HEAD"):
            return self._show(session, step, request)
        if request.method != "POST":
            return Response(405, b"", "text/plain", [("Allow", "GET, HEAD, POST")])
        form, upload = _form(request)
        if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
            return _render(403, "wizard_locked.html", {"csrf": True})
        if form.get("action") == "back":
            return _redirect(_url(STEPS[max(0, STEPS.index(step) - 1)]))
        if step == "summary":
            return await self._finish(session)
        session.errors = {}
        self._accept(session, step, form, upload)
        if session.errors:
            return self._show(session, step, request, 422)
        return _redirect(_url(STEPS[STEPS.index(step) + 1]))

    def _claim(self, request: Request) -> Response:
        given = (parse_qs(request.query).get("token") or [""])[0]
        token = self.token
        if token is None or not hmac.compare_digest(given.encode(), token.encode()):
            return _render(403, "wizard_locked.html", {"claimed": token is None})
        self.token = None  # spent: the wizard now belongs to this browser
        cookie = secrets.token_urlsafe(32)
        self.session = WizardSession(cookie, secrets.token_urlsafe(32))
        return _redirect("/wizard", [("Set-Cookie", f"{COOKIE}={cookie}; Path=/wizard; "
                                                    "HttpOnly; Secure; SameSite=Strict")])

    def _session(self, request: Request) -> WizardSession | None:
        from lockgate.runtime.admin.sessions import cookie_value

        given = cookie_value(request.headers.get("cookie"), COOKIE)
        session = self.session
        if session is None or given is None or not hmac.compare_digest(
                given.encode(), session.cookie.encode()):
            return None
        return session

    # ---- steps ----------------------------------------------------------------------
    def _accept(self, session: WizardSession, step: str, form: dict[str, str],
                upload: bytes | None) -> None:
        """Check one step's answers with the console wizard's validators."""
        from lockgate.firstboot.wizard import questions as q

        values, errors = session.values, session.errors

        def check(name: str, parse: Any, text: str) -> None:
            values[name] = text
            try:
                parse(text)
            except q.InvalidAnswer as exc:
                errors[name] = str(exc)

        if step == "password":
            password, again = form.get("password", ""), form.get("confirm", "")
            check("password", q.parse_password, password)
            if "password" not in errors and password != again:
                errors["confirm"] = "the two passwords differ"
        elif step == "licence":
            values["accept_license"] = "accept" if form.get("accept_license") == "accept" else ""
            if not values["accept_license"]:
                errors["accept_license"] = ("accept the licence to go on: the appliance cannot "
                                            "be used without it")
        elif step == "time":
            check("timezone", q.parse_timezone, form.get("timezone", ""))
            check("ntp_server", q.parse_ntp_server, form.get("ntp_server", ""))
        elif step == "security":
            values["ssh_intrusion_prevention"] = "y" if form.get(
                "ssh_intrusion_prevention") == "on" else "n"
        elif step == "licence-key":
            self._accept_key(session, form, upload)

    def _accept_key(self, session: WizardSession, form: dict[str, str],
                    upload: bytes | None) -> None:
        from lockgate.files import atomic_write
        from lockgate.firstboot.wizard import questions as q

        choice = form.get("edition", "community")
        values = session.values
        values["edition"] = choice
        path = StatePaths(self.state_dir).config / UPLOAD_NAME
        values["register_sd"] = "y" if choice == "sd" else "n"
        if choice != "sd":
            for name in SD_FIELDS:
                values.pop(name, None)
        if choice in ("community", "sd"):
            values["license_key"] = ""
        if choice == "community":
            return
        if choice == "sd":
            # The console wizard's validators; the registration itself is sent at Finish.
            for name, parse in (("sd_address", q.parse_sd_address),
                                ("sd_registration_key", q.parse_sd_registration_key),
                                ("sd_cert", q.parse_sd_cert)):
                values[name] = form.get(name, "").strip()
                try:
                    parse(values[name])
                except q.InvalidAnswer as exc:
                    session.errors[name] = str(exc)
            return
        if choice != "key":
            session.errors["edition"] = ("choose a licence key, Services Director registration "
                                         "or the Community Edition")
            return
        if upload:
            atomic_write(path, upload, 0o600)
        elif not path.is_file():
            session.errors["license_key"] = "choose a licence key file to upload"
            return
        try:
            q.parse_licence_key_path(str(path))
        except q.InvalidAnswer as exc:
            session.errors["license_key"] = str(exc).replace(str(path), "the uploaded file")
            path.unlink(missing_ok=True)  # refused: nothing of it stays on the appliance
            return
        session.values["license_key"] = str(path)

    def answers(self, session: WizardSession) -> tuple[Any, dict[str, str]]:
        """The :class:`Answers`, or the first step with a missing or bad answer.

        The console wizard's own steps decide: its ``collect_answers`` runs over what
        this browser answered, exactly as over a ``--replay-from`` file."""
        from lockgate.errors import BadInput
        from lockgate.firstboot.wizard.flow import (
            Context,
            Stopped,
            collect_answers,
            current_timezone,
            find_licence_text,
        )
        from lockgate.firstboot.wizard.prompter import ReplayAnswers
        from lockgate.firstboot.wizard.questions import REPLAY_KEYS

        given = {k: v for k, v in session.values.items() if k in REPLAY_KEYS}
        context = Context(root=self.root, current_timezone=current_timezone(self.root),
                          licence_text=find_licence_text(self.root), already_configured=False)
        try:
            return collect_answers(ReplayAnswers(given), context), {}
        except Stopped:
            return None, {"step": "licence"}
        except BadInput as exc:
            step = str(exc.format_message()).split(":", 1)[0]
            return None, {"step": QUESTION_STEPS.get(step, "password")}

    def _show(self, session: WizardSession, step: str, request: Request,
              status: int = 200) -> Response:
        from lockgate.firstboot.wizard import questions as q
        from lockgate.firstboot.wizard.flow import LICENCE_SUMMARY, current_timezone

        context: dict[str, Any] = {
            "step": step, "steps": STEPS, "titles": TITLES, "number": STEPS.index(step) + 1,
            "csrf": session.csrf, "values": session.values, "errors": session.errors,
            "licence": LICENCE_SUMMARY, "community": q.COMMUNITY_EDITION,
            "default_timezone": current_timezone(self.root),
            "zones": sorted(q.known_timezones()) if step == "time" else [],
        }
        if step == "summary":
            answers, missing = self.answers(session)
            context["missing"] = missing.get("step")
            if answers is not None:
                context["rows"], context["user_data"] = self._summary(
                    answers, "show" in parse_qs(request.query))
        session.errors = {}
        return _render(status, "wizard.html", context)

    def _summary(self, answers: Any, show_password: bool) -> tuple[list[tuple[str, str]], str]:
        from lockgate.firstboot.wizard.finish import user_data_lines
        from lockgate.firstboot.wizard.flow import summary_lines

        rows = [tuple(x.strip() for x in line.split(":", 1)) for line in summary_lines(answers)]
        text = "\n".join(user_data_lines(self.root, answers, show_password=True))
        if not show_password:
            text = text.replace(answers.password, "<redacted>")
        return [(a, b) for a, b in rows], text

    async def _finish(self, session: WizardSession) -> Response:
        from lockgate.errors import Failure
        from lockgate.firstboot.wizard.finish import apply_all

        answers, missing = self.answers(session)
        if answers is None:
            return _redirect(_url(missing["step"]))
        async with self.finishing:
            if self.finished or self.configured():
                return _gone()
            said: list[str] = []
            try:
                await asyncio.to_thread(apply_all, self.root, answers, said.append)
            except Failure as exc:
                session.errors = {"finish": str(exc)}
                return _render(500, "wizard_locked.html", {"failed": str(exc)})
            self.finished = True
            self.session = None
            (StatePaths(self.state_dir).config / UPLOAD_NAME).unlink(missing_ok=True)
        return _render(200, "wizard_done.html", {})


def _url(step: str) -> str:
    return "/wizard" if step == "welcome" else f"/wizard/{step}"


def _form(request: Request) -> tuple[dict[str, str], bytes | None]:
    """A urlencoded or multipart form: its text fields, and the uploaded file's bytes."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + request.body)
        fields: dict[str, str] = {}
        upload: bytes | None = None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if not isinstance(name, str) or not isinstance(payload, bytes):
                continue
            if part.get_filename() is not None:
                upload = payload or upload
            else:
                fields[name] = payload.decode("utf-8", errors="replace")
        return fields, upload
    parsed = parse_qs(request.body.decode("utf-8", errors="replace"), keep_blank_values=True,
                      max_num_fields=20)
    return {k: v[0] for k, v in parsed.items()}, None


def _gone() -> Response:
    return _render(410, "wizard_locked.html", {"done": True})


def _redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """The Admin UI's redirect, never cached (a wizard step's answer depends on the session)."""
    from lockgate.runtime.admin.ui import _redirect as admin_redirect

    return admin_redirect(location, [("Cache-Control", "no-store"), *(headers or [])])


def _render(status: int, template: str, context: dict[str, Any]) -> Response:
    from lockgate.runtime.admin.templating import render
    from lockgate.runtime.admin.ui import SECURITY_HEADERS

    return Response(status, render(template, context).encode(), "text/html; charset=utf-8",
                    [("Cache-Control", "no-store"), *SECURITY_HEADERS])
