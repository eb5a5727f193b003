"""The REST API's resources (``/api/tm/1.0/...``) and ``/metrics``.

Shaped like the reference product's REST API so users' scripts translate:
collections answer ``{"children": [{"name", "href"}]}``, objects are
``{"properties": {section: {field: value}}}``, errors are
``{"error_id", "error_text", "error_info": {"field"}}``. Every resource needs
HTTP Basic auth. The store does file I/O under a lock, so it is called in a
worker thread; calls are serialised so a PUT's "created or replaced" answer is
exact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

from lockgate.runtime import metrics
from lockgate.runtime.api.auth import Authenticator, Outcome, parse_basic
from lockgate.runtime.api.http import BodyStreamError, Request, Response
from lockgate.runtime.config.schema import KINDS, NAME_RE, ConfigError, fill_document
from lockgate.runtime.config.store import ConfigNotFound, ConfigStore, StaleVersion
from lockgate.runtime.listen import address_is_local, ip_literal, load_reserved_ports, traffic_ips
from lockgate.runtime.system.rest import PREFIX as SYSTEM
from lockgate.runtime.system.rest import UPGRADE, Reply, SystemApi, UploadError

ROOT = "/api/tm/1.0"
CONFIG = f"{ROOT}/config/active"
CLUSTER = f"{ROOT}/cluster"
STATS = f"{ROOT}/status/local_tm/statistics"
STAT_KINDS = ("virtual_servers", "pools")
LICENCE = f"{ROOT}/status/local_tm/licence"
CLUSTER_STATUS = f"{ROOT}/status/cluster"
REALM = 'Basic realm="lockgate", charset="UTF-8"'

Snapshot = Callable[[], Mapping[str, Any]]
SYSTEM_METHODS = {"": "GET", "versions": "GET", "versions/default": "PUT", "rollback": "POST",
                  "upgrade": "GET, PUT"}


class NotOnHost(ConfigError):
    """A listen address or port this host cannot give a virtual server (422)."""


def children(base: str, names: list[str]) -> dict[str, Any]:
    return {"children": [{"name": n, "href": f"{base}/{n}"} for n in names]}


class RestApi:
    def __init__(self, store: ConfigStore, auth: Authenticator, snapshot: Snapshot,
                 openapi: Mapping[str, Any], system: SystemApi | None = None) -> None:
        self.store = store
        # Upgrade, rollback and version switching (lockgate.runtime.system.rest); None on
        # a server that offers none (404).
        self.system = system
        self.auth = auth
        self.snapshot = snapshot
        self.openapi = openapi
        self._store_lock = asyncio.Lock()
        # Set by ``lockgate runtime serve`` when it runs the cluster service
        # (lockgate.runtime.cluster.service): join, members, replication status.
        self.cluster: Any = None
        self.replicator: Any = None

    async def __call__(self, request: Request) -> Response:
        denied = await self._authenticate(request)
        if denied is not None:
            return denied
        path = request.path.rstrip("/") or "/"
        method = "GET" if request.method == "HEAD" else request.method
        if path == "/metrics":
            return _only(method, "GET") or await self._metrics()
        if path == f"{ROOT}/openapi.json":
            return _only(method, "GET") or Response.json(200, self.openapi)
        if path == CONFIG or path.startswith(CONFIG + "/"):
            return await self._config(method, path[len(CONFIG):].strip("/"), request)
        if path == CLUSTER or path.startswith(CLUSTER + "/"):
            return await self._cluster(method, path[len(CLUSTER):].strip("/"), request)
        if path == STATS or path.startswith(STATS + "/"):
            return _only(method, "GET") or await self._stats(path[len(STATS):].strip("/"))
        if path == LICENCE:
            return _only(method, "GET") or await self._licence()
        if path == CLUSTER_STATUS:
            return _only(method, "GET") or await self._cluster_status()
        if path == SYSTEM or path.startswith(SYSTEM + "/"):
            return await self._system(method, path, request)
        index = {"/api/tm": children("/api/tm", ["1.0"]),
                 ROOT: children(ROOT, ["config", "status", "system"]),
                 f"{ROOT}/config": children(f"{ROOT}/config", ["active"]),
                 f"{ROOT}/status": children(f"{ROOT}/status", ["cluster", "local_tm"]),
                 f"{ROOT}/status/local_tm": children(f"{ROOT}/status/local_tm",
                                                               ["licence", "statistics"])}
        if path in index:
            return _only(method, "GET") or Response.json(200, index[path])
        return _not_found(request.path)

    async def _authenticate(self, request: Request) -> Response | None:
        user, password = parse_basic(request.headers.get("authorization"))
        verdict = await self.auth.check(request.client, user, password)
        if verdict.outcome is Outcome.OK:
            return None
        if verdict.outcome is Outcome.LOCKED:
            return Response.error(
                429, "auth.locked_out",
                f"too many failed logins from {request.client}; try again in "
                f"{verdict.retry_after} s", headers=[("Retry-After", str(verdict.retry_after))])
        challenge = [("WWW-Authenticate", REALM)]
        if verdict.outcome is Outcome.UNCONFIGURED:
            return Response.error(401, "auth.not_configured",
                                  "initial configuration is not finished: no admin user yet "
                                  "(give user-data or run z-initial-config)", headers=challenge)
        if verdict.outcome is Outcome.MISSING:
            return Response.error(401, "auth.required", "HTTP Basic authentication required",
                                  headers=challenge)
        return Response.error(401, "auth.invalid", "wrong user name or password",
                              headers=challenge)

    def streams(self, method: str, path: str) -> bool:
        """For the HTTP server: requests whose body is a stream (a bundle upload)."""
        return self.system is not None and method == "PUT" and path.rstrip("/") == UPGRADE

    # ---- upgrade, rollback, versions -----------------------------------------------------
    async def _system(self, method: str, path: str, request: Request) -> Response:
        if self.system is None:
            return Response.error(404, "system.not_appliance",
                                  "this server does not manage an A/B appliance")
        allowed = SYSTEM_METHODS.get(path[len(SYSTEM):].strip("/"))
        if allowed is not None and method not in allowed.split(", "):
            return _method_not_allowed(allowed)  # with Allow, which Reply cannot carry
        if path == UPGRADE and method == "PUT":
            return await self._upload(self.system, request)
        return _reply(await self.system.handle(method, path, request.body))

    async def _upload(self, system: SystemApi, request: Request) -> Response:
        """The bundle, streamed to the data partition chunk by chunk, then installed."""
        stream = request.stream
        if stream is None:  # came through a server that does not stream (the Admin UI's)
            return Response.error(413, "upgrade.not_streamed",
                                  "upload bundles to the REST API (port 9070)")
        try:
            sink = system.upload(request.headers)
        except UploadError as exc:
            return _reply(exc.reply)
        try:
            stream.start()
            while chunk := await stream.read():
                sink.write(chunk)
        except UploadError as exc:
            return _reply(exc.reply)  # the sink removed what it had
        except BodyStreamError as exc:
            sink.abort()
            return Response.error(408, "upgrade.body", f"upload abandoned: {exc}")
        except BaseException:
            sink.abort()
            raise
        return _reply(await system.install_upload(sink, request.query))

    # ---- configuration -------------------------------------------------------------------
    async def _config(self, method: str, rest: str, request: Request) -> Response:
        if not rest:
            return _only(method, "GET") or Response.json(200, children(CONFIG, list(KINDS)))
        kind, _, name = rest.partition("/")
        if kind not in KINDS or "/" in name:
            return _not_found(f"{CONFIG}/{rest}")
        if not name:
            if method != "GET":
                return _method_not_allowed("GET")
            names = await self._in_store(self.store.list, kind)
            return Response.json(200, children(f"{CONFIG}/{kind}", names))
        if method == "GET":
            return await self._get(kind, name)
        expect, bad = _if_match(request)
        if bad is not None:
            return bad
        if method == "PUT":
            return _unsupported_media(request) or await self._put(kind, name, request.body,
                                                                  expect)
        if method == "DELETE":
            return await self._delete(kind, name, expect)
        return _method_not_allowed("GET, PUT, DELETE")

    async def _in_store(self, call: Callable[..., Any], *args: Any) -> Any:
        async with self._store_lock:
            return await asyncio.to_thread(call, *args)

    async def _get(self, kind: str, name: str) -> Response:
        if not NAME_RE.fullmatch(name):
            return _not_found(f"{CONFIG}/{kind}/{name}")
        try:
            version, document = await self._in_store(self._get_versioned, kind, name)
        except ConfigNotFound:
            return _not_found(f"{CONFIG}/{kind}/{name}")
        return Response.json(200, document, headers=[("ETag", f'"{version}"')])

    def _get_versioned(self, kind: str, name: str) -> tuple[int, Any]:
        """The object and the configuration version it was read at (one file read)."""
        version, tree = self.store.snapshot()
        if name not in tree[kind]:
            raise ConfigNotFound(f"{kind}.{name}", "no such object")
        return version, tree[kind][name]

    async def _put(self, kind: str, name: str, body: bytes,
                   expect: int | None = None) -> Response:
        try:
            document = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            text = "request body is not valid JSON"
            if isinstance(exc, json.JSONDecodeError):
                text += f" (line {exc.lineno} column {exc.colno}: {exc.msg})"
            return Response.error(400, "json.parse_error", text)
        path = f"{kind}.{name}"
        if not NAME_RE.fullmatch(name):
            return _invalid(ConfigError(path, "expected an object name (letters, digits, "
                                              ". _ ~ -, up to 128, starting with a letter or digit)"))
        if not isinstance(document, dict) or "properties" not in document:
            return _invalid(ConfigError(f"{path}.properties",
                                        'required: the body is {"properties": {...}}'))
        try:
            filled = fill_document(kind, name, document)  # the object on its own: 422
        except ConfigError as exc:
            return _invalid(exc)
        warnings: list[str] = []
        async with self._store_lock:
            try:
                if kind == "virtual_servers":
                    warnings = await asyncio.to_thread(self._check_listen, name, filled)
                existed = name in await asyncio.to_thread(self.store.list, kind)
                await asyncio.to_thread(self.store.put, kind, name, document, expect)
                stored = await asyncio.to_thread(self.store.get, kind, name)
            except NotOnHost as exc:
                return _invalid(exc)
            except StaleVersion as exc:
                return Response.error(409, "config.stale", str(exc), {"field": exc.field})
            except ConfigError as exc:  # does not fit with the rest of the configuration
                return Response.error(409, "config.conflict", str(exc), {"field": exc.field})
        self._changed()
        return Response.json(200 if existed else 201,
                             {**stored, "warnings": warnings} if warnings else stored)

    def _check_listen(self, name: str, filled: Mapping[str, Any]) -> list[str]:
        """Refuse a management port, and a plain address this host does not have; warn
        about a traffic IP not raised here.

        Like the reference product: a traffic IP may be raised on another cluster
        member now and here later, so listening on it is accepted (the workers bind
        it with IP_FREEBIND); any other address must be on this host. Host names
        are resolved by the workers, which report a failure in the status."""
        basic = filled["properties"]["basic"]
        reserved = load_reserved_ports(self.store.state_dir)
        if basic["port"] in reserved:
            raise NotOnHost(f"virtual_servers.{name}.basic.port",
                            f"{basic['port']} is a management port of this appliance (REST API, "
                            f"Admin UI, cluster control: {', '.join(map(str, reserved))}); "
                            "choose another")
        tree = self.store.tree()
        tips = traffic_ips(doc["properties"]["basic"]["ipaddresses"]
                           for doc in tree["traffic_ip_groups"].values())
        warnings = []
        for i, host in enumerate(basic["listen_on_hosts"]):
            address = ip_literal(host)
            if address is None or address_is_local(address):
                continue
            field = f"virtual_servers.{name}.basic.listen_on_hosts[{i}]"
            if address in tips:
                warnings.append(f"{field}: {address} is a traffic IP not raised on this traffic "
                                "manager now; it serves here once the address is raised here")
                continue
            raise NotOnHost(field, f"{address} is not an address of this host; add it to the "
                                     "host, or to a traffic IP group to listen on a traffic IP")
        return warnings

    async def _delete(self, kind: str, name: str, expect: int | None = None) -> Response:
        if not NAME_RE.fullmatch(name):
            return _not_found(f"{CONFIG}/{kind}/{name}")
        try:
            await self._in_store(self.store.delete, kind, name, expect)
        except ConfigNotFound:
            return _not_found(f"{CONFIG}/{kind}/{name}")
        except StaleVersion as exc:
            return Response.error(409, "config.stale", str(exc), {"field": exc.field})
        except ConfigError as exc:  # still referenced by another object
            return Response.error(409, "config.in_use", str(exc), {"field": exc.field})
        self._changed()
        return Response(204)

    def _changed(self) -> None:
        """Send a change to the other cluster members now, not at the next 50 ms poll."""
        if self.replicator is not None:
            self.replicator.refresh()

    # ---- cluster ---------------------------------------------------------------------------
    async def _cluster(self, method: str, rest: str, request: Request) -> Response:
        """``GET cluster`` (members, no secret), ``POST cluster/join`` (a new member, see
        lockgate.runtime.cluster.joining), ``DELETE cluster/members/NAME``."""
        from lockgate.runtime.cluster.joining import JoinRefused

        service = self.cluster
        if service is None:
            return Response.error(503, "cluster.not_running",
                                  "this process does not run the cluster service")
        try:
            if not rest:
                if method != "GET":
                    return _method_not_allowed("GET")
                described = await asyncio.to_thread(service.describe)
                if self.replicator is not None:
                    described["links"] = self.replicator.status()
                return Response.json(200, described)
            if rest == "join":
                if method != "POST":
                    return _method_not_allowed("POST")
                bad = _unsupported_media(request)
                if bad is not None:
                    return bad
                try:
                    given = json.loads(request.body)
                except ValueError:
                    return Response.error(400, "json.parse_error", "request body is not valid JSON")
                if not isinstance(given, dict):
                    return Response.error(400, "cluster.bad_request", "expected a JSON object")
                answer = await self._in_store(service.accept, given, request.client)
                return Response.json(200, answer)
            kind, _, name = rest.partition("/")
            if kind == "members" and name and "/" not in name:
                if method != "DELETE":
                    return _method_not_allowed("DELETE")
                await self._in_store(service.remove, name)
                return Response(204)
        except JoinRefused as exc:
            return Response.error(exc.status, exc.error_id, str(exc))
        return _not_found(f"{CLUSTER}/{rest}")

    # ---- status --------------------------------------------------------------------------
    async def _stats(self, rest: str) -> Response:
        snap = await asyncio.to_thread(self.snapshot)
        if not rest:
            return Response.json(200, children(STATS, list(STAT_KINDS)))
        kind, _, name = rest.partition("/")
        if kind not in STAT_KINDS or "/" in name:
            return _not_found(f"{STATS}/{rest}")
        objects: Mapping[str, Any] = snap.get(kind) or {}
        if not name:
            return Response.json(200, children(f"{STATS}/{kind}", sorted(objects)))
        if name not in objects:
            return _not_found(f"{STATS}/{kind}/{name}")
        return Response.json(200, {"statistics": objects[name]})

    async def _licence(self) -> Response:
        from lockgate.runtime.licence import licence_state

        lic = await asyncio.to_thread(licence_state, self.store.state_dir)
        return Response.json(200, {"licence": {**lic.as_dict(), "proxying": lic.accepted}})

    async def _cluster_status(self) -> Response:
        """Members, their liveness and who holds which traffic IP
        (lockgate.runtime.cluster.status); live from this process's fault tolerance."""
        from lockgate.runtime.cluster import status

        state_dir = self.store.state_dir
        if status.live_service(state_dir) is not None:
            doc = status.cluster_status(state_dir)  # on the loop: the service's own thread
        else:
            doc = await asyncio.to_thread(status.cluster_status, state_dir)
        return Response.json(200, {"cluster": doc})

    async def _metrics(self) -> Response:
        snap = await asyncio.to_thread(self.snapshot)
        version = await asyncio.to_thread(lambda: self.store.version)
        return Response(200, metrics.render(snap, version).encode(), metrics.CONTENT_TYPE)


def _if_match(request: Request) -> tuple[int | None, Response | None]:
    """``If-Match: "N"`` (the ETag of a GET): change only if the configuration is still at
    version N, else 409 -- how a client avoids overwriting another's change."""
    given = request.headers.get("if-match")
    if given is None:
        return None, None
    text = given.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        return None, Response.error(400, "http.bad_if_match",
                                    'If-Match must be an ETag from a GET: "<version>"')
    return int(text), None


def _unsupported_media(request: Request) -> Response | None:
    """Request bodies are JSON: anything else is 415 (a form or text body is a mistake)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == "application/json":
        return None
    shown = media[:100] or "none"
    return Response.error(415, "http.unsupported_media_type",
                          f"request bodies must be Content-Type: application/json (got {shown})")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _invalid(exc: ConfigError) -> Response:
    return Response.error(422, "config.invalid", str(exc), {"field": exc.field})


def _reply(reply: Reply) -> Response:
    return Response.json(reply.status, reply.document)


def _only(method: str, allowed: str) -> Response | None:
    return None if method == allowed else _method_not_allowed(allowed)


def _method_not_allowed(allowed: str) -> Response:
    return Response.error(405, "http.method_not_allowed", f"method not allowed (allowed: {allowed})",
                          headers=[("Allow", allowed)])


def _not_found(path: str) -> Response:
    shown = path if len(path) <= 200 else path[:200] + "..."
    return Response.error(404, "resource.not_found", f"no such resource: {shown}")

