"""A local fake of the GCE compute API's images and global operations endpoints.

Just the calls ``lockgate image publish gce`` makes, over plain HTTP on a kernel-chosen
loopback port, with the request shapes of the REST API (compute/v1, camelCase JSON):

* ``GET  /compute/v1/projects/{p}/global/images/{name}``            → Image or 404
* ``POST /compute/v1/projects/{p}/global/images``                   → Operation (RUNNING)
* ``GET  /compute/v1/projects/{p}/global/operations/{op}``          → Operation
* ``POST /compute/v1/projects/{p}/global/operations/{op}/wait``     → Operation

It refuses what the real API refuses (checked synchronously, 400 with the API's error
shape): an unknown field (snake_case instead of camelCase), no ``rawDisk.source``, a
source that is no ``https://storage.googleapis.com/<bucket>/<object>`` URL, a name or
family that breaks the RFC 1035 rule, a label key or value that breaks GCE's label rules,
an unknown guest OS feature or architecture, a name that exists (409). When given the
storage emulator's URL it also checks, as the real insert does while it runs, that the
source object exists (the operation then ends DONE with an error).

``forbidden`` names calls ("images.get", "images.insert", "operations") answered 403 the
way GCE words it. Every request is recorded (method, path, host, body).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import quote, urlsplit

from loopback import LoopbackServer

NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")
SOURCE_RE = re.compile(r"https://storage\.googleapis\.com/([a-z0-9][a-z0-9._-]{1,221}[a-z0-9])/(.+)")
IMAGE_FIELDS = {"name", "description", "family", "labels", "guestOsFeatures", "rawDisk",
                "architecture", "storageLocations", "licenses", "diskSizeGb",
                "sourceDisk", "sourceImage", "sourceSnapshot", "shieldedInstanceInitialState"}
RAW_DISK_FIELDS = {"source", "containerType", "sha1Checksum"}
FEATURES = {"MULTI_IP_SUBNET", "SECURE_BOOT", "SEV_CAPABLE", "SEV_LIVE_MIGRATABLE",
            "SEV_LIVE_MIGRATABLE_V2", "SEV_SNP_CAPABLE", "UEFI_COMPATIBLE",
            "VIRTIO_SCSI_MULTIQUEUE", "WINDOWS", "GVNIC", "IDPF", "TDX_CAPABLE",
            "SUSPEND_RESUME_COMPATIBLE"}
ARCHITECTURES = {"X86_64", "ARM64", "ARCHITECTURE_UNSPECIFIED"}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message,
                          "errors": [{"domain": "global", "reason": self.reason,
                                      "message": self.message}]}}


def check_image(body: Any) -> None:
    """Raise ApiError for an Image the real images.insert would refuse."""
    if not isinstance(body, dict):
        raise ApiError(400, "parseError", "Invalid JSON payload: not an object")
    unknown = sorted(set(body) - IMAGE_FIELDS)
    if unknown:
        raise ApiError(400, "invalid", f'Invalid JSON payload received. Unknown name "{unknown[0]}"')
    name = body.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ApiError(400, "invalid", f"Invalid value for field 'resource.name': '{name}'. "
                       "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
    family = body.get("family")
    if family is not None and not (isinstance(family, str) and NAME_RE.fullmatch(family)):
        raise ApiError(400, "invalid", f"Invalid value for field 'resource.family': '{family}'.")
    raw = body.get("rawDisk")
    has_other_source = any(body.get(k) for k in ("sourceDisk", "sourceImage", "sourceSnapshot"))
    if not has_other_source and not (isinstance(raw, dict) and raw.get("source")):
        raise ApiError(400, "invalid", "Invalid value for field 'resource.rawDisk.source': ''. "
                           "Source must be specified (raw disk, disk, image or snapshot).")
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - RAW_DISK_FIELDS)
        if unknown:
            raise ApiError(400, "invalid", f'Invalid JSON payload received. Unknown name "{unknown[0]}" at \'resource.rawDisk\'')
        if not SOURCE_RE.fullmatch(str(raw.get("source", ""))):
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.rawDisk.source': "
                           f"'{raw.get('source')}'. Expected a Google Cloud Storage URL")
        if raw.get("containerType", "TAR") != "TAR":
            raise ApiError(400, "invalid", "Invalid value for field 'resource.rawDisk.containerType'")
    labels = body.get("labels", {})
    if not isinstance(labels, dict) or len(labels) > 64:
        raise ApiError(400, "invalid", "Invalid value for field 'resource.labels'")
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.labels': label key '{key}' "
                           "must start with a lowercase letter and contain only lowercase letters, "
                           "numeric characters, underscores and dashes, at most 63 characters")
        if not isinstance(value, str) or not LABEL_VALUE_RE.fullmatch(value):
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.labels': label value "
                           f"'{value}' may contain only lowercase letters, numeric characters, "
                           "underscores and dashes, at most 63 characters")
    features = body.get("guestOsFeatures", [])
    for feature in features:
        if not isinstance(feature, dict) or feature.get("type") not in FEATURES:
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.guestOsFeatures': {feature}")
    if body.get("architecture", "ARCHITECTURE_UNSPECIFIED") not in ARCHITECTURES:
        raise ApiError(400, "invalid", f"Invalid value for field 'resource.architecture': '{body['architecture']}'")


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    host: str
    headers: dict[str, str] = field(repr=False)
    body: Any = None


@dataclass
class _Operation:
    name: str
    project: str
    image: dict[str, Any]
    polls_left: int
    progress: int = 0
    error: dict[str, Any] | None = None
    done: bool = False


class FakeCompute(LoopbackServer):
    """``with FakeCompute() as fake: fake.url`` — the api_endpoint to hand the SDK."""

    def __init__(self, *, polls: int = 2, storage_url: str | None = None,
                 forbidden: frozenset[str] = frozenset()) -> None:
        self.polls = polls  # operation polls before DONE
        self.storage_url = storage_url
        self.forbidden = set(forbidden)
        self.images: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, _Operation] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        super().__init__(methods=("GET", "POST"))

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        self._handle(handler, handler.command)

    # --- request handling ---------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        path = urlsplit(handler.path).path
        with self._lock:
            self.seen.append(Seen(method, handler.path, handler.headers.get("Host", ""),
                                  {k.lower(): v for k, v in handler.headers.items()}, body))
            try:
                status, reply = self._route(method, path, body)
            except ApiError as exc:
                status, reply = exc.status, exc.body()
        data = json.dumps(reply).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _deny(self, call: str, permission: str, resource: str) -> None:
        if call in self.forbidden:
            raise ApiError(403, "forbidden",
                           f"Required '{permission}' permission for '{resource}'")

    def _route(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        if path.startswith(("/storage/v1/", "/upload/storage/v1/")):
            return self._storage(method, path)
        m = re.fullmatch(r"/compute/v1/projects/([^/]+)/global/(images|operations)(?:/([^/]+))?(/wait)?", path)
        if not m:
            raise ApiError(404, "notFound", f"no such endpoint: {method} {path}")
        project, kind, name, wait = m.groups()
        if kind == "images" and method == "GET" and name and not wait:
            self._deny("images.get", "compute.images.get", f"projects/{project}/global/images/{name}")
            image = self.images.get((project, name))
            if image is None:
                raise ApiError(404, "notFound",
                               f"The resource 'projects/{project}/global/images/{name}' was not found")
            return 200, image
        if kind == "images" and method == "POST" and not name:
            self._deny("images.insert", "compute.images.create", f"projects/{project}/global/images")
            check_image(body)
            if (project, body["name"]) in self.images or any(
                    op.image["name"] == body["name"] and not op.done for op in self.operations.values()):
                raise ApiError(409, "alreadyExists", f"The resource 'projects/{project}/global/images/"
                               f"{body['name']}' already exists")
            op = _Operation(f"operation-{next(self._ids)}-insert", project, dict(body), self.polls)
            self.operations[op.name] = op
            return 200, self._op_json(op)
        if kind == "operations" and name and ((method == "GET" and not wait) or (method == "POST" and wait)):
            self._deny("operations", "compute.globalOperations.get",
                       f"projects/{project}/global/operations/{name}")
            found = self.operations.get(name)
            if found is None or found.project != project:
                raise ApiError(404, "notFound", f"The resource 'projects/{project}/global/operations/{name}' was not found")
            self._advance(found)
            return 200, self._op_json(found)
        raise ApiError(405, "methodNotAllowed", f"{method} {path}")

    def _storage(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """Cloud Storage that says no, as GCS words it (the emulator has no permissions)."""
        who = "anonymous@example.iam.gserviceaccount.com"
        if method == "GET" and "objects.get" in self.forbidden:
            raise ApiError(403, "forbidden", f"{who} does not have storage.objects.get access "
                           "to the Google Cloud Storage object. Permission 'storage.objects.get' denied")
        if method == "GET":
            raise ApiError(404, "notFound", "No such object")
        if "objects.insert" in self.forbidden:
            raise ApiError(403, "forbidden", f"{who} does not have storage.objects.create access "
                           "to the Google Cloud Storage object. Permission 'storage.objects.create' denied")
        raise ApiError(501, "notImplemented", "this fake stores no objects: use the emulator")

    def _advance(self, op: _Operation) -> None:
        if op.done:
            return
        op.polls_left -= 1
        op.progress = min(100, op.progress + 100 // max(self.polls, 1))
        if op.polls_left > 0:
            return
        op.done, op.progress = True, 100
        missing = self._missing_source(op.image["rawDisk"]["source"])
        if missing:
            op.error = {"errors": [{"code": "RESOURCE_NOT_FOUND", "message": missing}]}
            return
        image = dict(op.image, status="READY", kind="compute#image",
                     selfLink=f"{self.url}/compute/v1/projects/{op.project}/global/images/{op.image['name']}")
        self.images[(op.project, op.image["name"])] = image

    def _missing_source(self, source: str) -> str | None:
        if not self.storage_url:
            return None
        bucket, obj = SOURCE_RE.fullmatch(source).groups()  # type: ignore[union-attr]
        url = f"{self.storage_url}/storage/v1/b/{bucket}/o/{quote(obj, safe='')}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                json.load(reply)
        except urllib.error.HTTPError as exc:
            return f"The resource '{source}' of type 'gcs object' was not found ({exc.code})"
        return None

    def _op_json(self, op: _Operation) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "kind": "compute#operation", "name": op.name, "operationType": "insert",
            "status": "DONE" if op.done else "RUNNING", "progress": op.progress,
            "targetLink": f"{self.url}/compute/v1/projects/{op.project}/global/images/{op.image['name']}",
            "selfLink": f"{self.url}/compute/v1/projects/{op.project}/global/operations/{op.name}"}
        if op.error:
            reply.update(error=op.error, httpErrorStatusCode=404,
                         httpErrorMessage="NOT FOUND")
        return reply

    # --- what the tests look at -----------------------------------------------------------

    def requests(self, method: str | None = None, pattern: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (method is None or s.method == method)
                    and re.search(pattern, s.path)]
