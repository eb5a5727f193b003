"""Upgrade and rollback over the REST API (HTTPS 9070, authenticated), for appliances
without a shell.

Resources under ``/api/tm/1.0/system`` (shaped like the rest of the API:
``{"children": …}`` collections, ``{"error_id", "error_text"}`` errors):

=========================================  ==========================================
``GET  …/system``                          ``{"children": [versions, upgrade, rollback]}``
``GET  …/system/versions``                 installed versions (``rollback-helper --json``)
``PUT  …/system/versions/default``         ``{"version": V, "restart": true}``: switch
``POST …/system/rollback``                 ``{"restart": true}``: the version not running
``PUT  …/system/upgrade``                  the bundle as the body (``application/octet-stream``,
                                           streamed to the data partition, never held in
                                           memory); ``?restart=false`` to stay up
``GET  …/system/upgrade``                  the last upload's outcome
=========================================  ==========================================

An upload is written to ``/var/lib/lockgate/upgrade/upload.upgrade`` chunk by
chunk through :class:`UploadSink` (the HTTP server hands it the body as it
arrives), then installed exactly as ``upgrade FILE`` does, in a worker
thread; the reply says what was installed, and the reboot follows the reply.
The module does not import the HTTP server: :mod:`lockgate.runtime.api`
dispatches to :meth:`SystemApi.handle` and :meth:`SystemApi.upload`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate.errors import LockgateError
from lockgate.files import make_dirs
from lockgate.runtime.system import rollback as rb
from lockgate.runtime.system.bundle import unsigned_allowed
from lockgate.runtime.system.keys import PublicKey
from lockgate.runtime.system.slots import Machine

PREFIX = "/api/tm/1.0/system"
UPGRADE = f"{PREFIX}/upgrade"
MAX_UPLOAD = 8 * 1024 * 1024 * 1024
MiB = 1024 * 1024

Reboot = Callable[[str], None]


@dataclass
class Reply:
    """What a handler answers; the API turns it into its own Response."""

    status: int
    document: Mapping[str, Any] | list[Any]


def error(status: int, error_id: str, text: str) -> Reply:
    return Reply(status, {"error_id": error_id, "error_text": text})


class UploadError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.document)
        self.reply = reply


class UploadSink:
    """A bundle upload on its way to the data partition: ``write`` each body chunk as it
    arrives, then ``finish``; ``abort`` on a broken connection. Synchronous, small writes:
    safe to call from the event loop (the data partition is a local disk)."""

    def __init__(self, folder: Path, length: int | None, max_bytes: int = MAX_UPLOAD) -> None:
        if length is None:
            raise UploadError(error(411, "upgrade.length_required",
                                    "send the bundle with a Content-Length"))
        if length > max_bytes:
            raise UploadError(error(413, "upgrade.too_large",
                                    f"{length} bytes; at most {max_bytes} accepted"))
        make_dirs(folder, 0o700)
        free = shutil.disk_usage(folder).free
        if length + 16 * MiB > free:
            raise UploadError(error(507, "upgrade.no_space",
                                    f"{length / MiB:.0f} MiB to store; the data partition has "
                                    f"{free / MiB:.0f} MiB free"))
        self.path = folder / "upload.upgrade"
        self.length = length
        self.received = 0
        self.on_close: Callable[[], None] | None = None  # once, when finished or aborted
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def write(self, chunk: bytes) -> None:
        assert self._fd is not None
        self.received += len(chunk)
        if self.received > self.length:
            self.abort()
            raise UploadError(error(400, "upgrade.too_long", "more bytes than Content-Length"))
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view):]

    def finish(self) -> Path:
        assert self._fd is not None
        if self.received != self.length:
            self.abort()
            raise UploadError(error(400, "upgrade.cut_short",
                                    f"{self.received} of {self.length} bytes arrived"))
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        return self.path

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        """The upload is over (installed, refused or abandoned): let the next one in."""
        done, self.on_close = self.on_close, None
        if done is not None:
            done()


class SystemApi:
    def __init__(self, machine: Callable[[], Machine], trusted: Callable[[], list[PublicKey]],
                 reboot: Reboot) -> None:
        self.machine = machine
        self.trusted = trusted
        self.reboot = reboot
        self.last_upgrade: dict[str, Any] = {"state": "none"}
        self._busy = threading.Lock()

    # ---- plain requests ------------------------------------------------------------------
    async def handle(self, method: str, path: str, body: bytes) -> Reply:
        rest = path[len(PREFIX):].strip("/")
        if rest == "":
            return _only(method, "GET") or Reply(200, _children(["versions", "upgrade",
                                                                 "rollback"]))
        if rest == "versions":
            return _only(method, "GET") or await self._versions()
        if rest == "versions/default":
            return _only(method, "PUT") or await self._switch(_json(body), rollback=False)
        if rest == "rollback":
            return _only(method, "POST") or await self._switch(_json(body), rollback=True)
        if rest == "upgrade":
            if method == "GET":
                return Reply(200, self.last_upgrade)
            return error(405, "http.method_not_allowed",
                         "method not allowed (allowed: GET, PUT with the bundle as the body)")
        return error(404, "resource.not_found", f"no such resource: {path[:200]}")

    async def _versions(self) -> Reply:
        try:
            machine = self._machine_or_refuse()
        except UploadError as exc:
            return exc.reply
        try:
            versions = await asyncio.to_thread(rb.installed_versions, machine)
        except LockgateError as exc:
            return error(500, "system.slots", exc.format_message())
        return Reply(200, [v.as_json() for v in versions])

    async def _switch(self, document: Any, *, rollback: bool) -> Reply:
        if isinstance(document, Reply):
            return document
        wanted = document.get("version") if isinstance(document, dict) else None
        restart = document.get("restart", True) if isinstance(document, dict) else True
        if not rollback and not isinstance(wanted, str):
            return error(400, "system.version_required", 'give {"version": "<version>"}')
        if not isinstance(restart, bool):
            return error(400, "system.restart", '"restart" must be true or false')
        try:
            machine = self._machine_or_refuse()
        except UploadError as exc:
            return exc.reply
        try:
            versions = await asyncio.to_thread(rb.installed_versions, machine)
            target = rb.choose(versions, wanted if isinstance(wanted, str) else None)
        except LockgateError as exc:
            return error(422 if exc.exit_code == 2 else 500, "system.switch",
                         exc.format_message())
        if not target.running:
            await asyncio.to_thread(rb.switch, machine, target)
        reply = {"version": target.version, "entry": target.entry, "default": True,
                 "restart": restart and not target.running,
                 "note": "configuration changes made since upgrading stay with the newer "
                         "version" if rollback else ""}
        if restart and not target.running:
            self._reboot_after_reply(target.entry)
        return Reply(200, reply)

    # ---- upload ---------------------------------------------------------------------------
    def upload(self, headers: Mapping[str, str]) -> UploadSink:
        """The sink for ``PUT …/system/upgrade``'s body; raises UploadError to refuse it."""
        if not self._busy.acquire(blocking=False):
            raise UploadError(error(409, "upgrade.busy", "another upgrade is in progress"))
        try:
            length = headers.get("content-length", "")
            sink = UploadSink(self._machine_or_refuse().state.base / "upgrade",
                              int(length) if length.isdigit() else None)
            sink.on_close = self._busy.release
            return sink
        except BaseException:
            self._busy.release()
            raise

    async def install_upload(self, sink: UploadSink, query: str) -> Reply:
        """After the whole body arrived: install it as ``upgrade FILE`` does."""
        from lockgate.runtime.system.upgrade import install

        restart = "restart=false" not in query.split("&")
        lines: list[str] = []
        try:
            path = sink.finish()
            self.last_upgrade = {"state": "installing", "bytes": sink.received}
            result = await asyncio.to_thread(
                install, self.machine(), path, self.trusted(),
                allow_unsigned=unsigned_allowed("allow_unsigned=true" in query.split("&")),
                say=lines.append)
        except UploadError as exc:
            self.last_upgrade = {"state": "failed", "error": exc.reply.document}
            return exc.reply
        except LockgateError as exc:
            status = 422 if exc.exit_code == 2 or "bundle" in type(exc).__name__.lower() else 500
            self.last_upgrade = {"state": "refused", "error": exc.format_message(), "log": lines}
            return error(status, "upgrade.refused", exc.format_message())
        finally:
            sink.path.unlink(missing_ok=True)
            sink.close()
        self.last_upgrade = {"state": "installed", "version": result.version,
                             "slot": result.slot, "entry": result.entry, "signer": result.signer,
                             "write_s": round(result.write_s, 2), "log": lines,
                             "restart": restart}
        if restart:
            self._reboot_after_reply(result.entry)
        return Reply(200, self.last_upgrade)

    def _machine_or_refuse(self) -> Machine:
        try:
            return self.machine()
        except LockgateError as exc:  # not an A/B appliance (a development host)
            raise UploadError(not_appliance(exc)) from exc

    def _reboot_after_reply(self, entry: str) -> None:
        # A moment for the reply to reach the client before systemd stops everything.
        asyncio.get_running_loop().call_later(1.0, self.reboot, entry)


def not_appliance(exc: LockgateError) -> Reply:
    return error(404, "system.not_appliance", exc.format_message())


def _children(names: list[str]) -> dict[str, Any]:
    return {"children": [{"name": n, "href": f"{PREFIX}/{n}"} for n in names]}


def _only(method: str, allowed: str) -> Reply | None:
    if method == allowed:
        return None
    return error(405, "http.method_not_allowed", f"method not allowed (allowed: {allowed})")


def _json(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError:
        return error(400, "json.parse_error", "request body is not valid JSON")


#: For lockgate.runtime.api.openapi: the paths above, to merge into the document.
OPENAPI_PATHS: dict[str, Any] = {
    PREFIX + "/versions": {"get": {
        "summary": "Installed versions (slot, version, default, running, healthy, installed)",
        "responses": {"200": {"description": "a list, one object per installed version"}}}},
    PREFIX + "/versions/default": {"put": {
        "summary": "Make an installed version GRUB's default and (restart: true) reboot",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["version"],
            "properties": {"version": {"type": "string"}, "restart": {"type": "boolean"}}}}}},
        "responses": {"200": {"description": "switched"}, "422": {"description": "not installed"}}}},
    PREFIX + "/rollback": {"post": {
        "summary": "Switch to the installed version not running and (restart: true) reboot",
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"restart": {"type": "boolean"}}}}}},
        "responses": {"200": {"description": "switched"},
                      "422": {"description": "no other version"}}}},
    PREFIX + "/upgrade": {
        "put": {"summary": "Upload a signed bundle (streamed to disk) and install it into the "
                           "inactive slot for a one-time trial boot",
                "parameters": [{"name": "restart", "in": "query",
                                "schema": {"type": "boolean", "default": True}}],
                "requestBody": {"required": True, "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}},
                "responses": {"200": {"description": "installed; reboots unless restart=false"},
                              "411": {"description": "no Content-Length"},
                              "413": {"description": "too large"},
                              "422": {"description": "bundle refused (one-line reason)"},
                              "507": {"description": "no space on the data partition"}}},
        "get": {"summary": "The last upload's outcome",
                "responses": {"200": {"description": "state, version, log"}}}},
}
