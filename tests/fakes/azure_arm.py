"""A local HTTPS fake of the Azure Resource Manager calls ``lockgate image publish azure`` makes.

Over TLS on a kernel-chosen loopback port with a self-signed certificate
(lockgate.runtime.tls.generate): the SDK sends a bearer token only over https, so
this is also how the real credential chain gets exercised. It serves:

* ``GET /msi/token`` — an App Service managed-identity endpoint, so azure-identity's
  DefaultAzureCredential (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``) gets a token
  from here; every ARM call must carry exactly that token. A token for Azure Storage
  is a JWT with the claims Azurite's ``--oauth basic`` checks, so the blob side can
  use the same credential chain against Azurite over https.
* ``GET|PUT .../providers/Microsoft.Compute/images/{name}``
* ``GET|PUT .../galleries/{g}/images/{i}`` and ``.../images/{i}/versions/{v}``
* ``GET .../locations/{loc}/operations/{id}`` — the ``Azure-AsyncOperation`` poll.

A PUT answers 201 "Creating" with an ``Azure-AsyncOperation`` URL on this same host;
the operation says InProgress ``polls`` times, then Succeeded, and the resource's
provisioningState follows. It refuses what ARM refuses: no api-version, no or another
token, no location, an osType/osState/hyperVGeneration outside the enums, an image
without a blobUri, a gallery version whose source has no storageAccountId or whose
name is not Major.Minor.Patch, a child of a gallery (image) that does not exist, and —
with ``blob_reader`` — a blob that is missing or is not a fixed VHD of whole MiB
(Azure checks the footer when it makes the image's disk). ``forbidden`` holds RBAC
actions ("Microsoft.Compute/images/write") answered 403 AuthorizationFailed the way
ARM words it.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loopback import LoopbackServer

from lockgate.runtime.tls import generate

MiB = 1024 * 1024
PREFIX = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute"
ROUTES = [
    ("image", re.compile(PREFIX + r"/images/(?P<name>[^/]+)", re.I)),
    ("gallery_image", re.compile(PREFIX + r"/galleries/(?P<gallery>[^/]+)/images/(?P<name>[^/]+)", re.I)),
    ("gallery_version", re.compile(PREFIX + r"/galleries/(?P<gallery>[^/]+)/images/(?P<image>[^/]+)"
                                   r"/versions/(?P<name>[^/]+)", re.I)),
    ("operation", re.compile(r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/"
                             r"(?P<loc>[^/]+)/operations/(?P<name>[^/]+)", re.I)),
]
ACTIONS = {"image": "Microsoft.Compute/images", "gallery_image": "Microsoft.Compute/galleries/images",
           "gallery_version": "Microsoft.Compute/galleries/images/versions"}
VERSION_RE = re.compile(r"\d{1,9}\.\d{1,9}\.\d{1,9}")

#: url → (size, last 512 bytes) of the blob, or None when there is no such blob.
BlobReader = Callable[[str], tuple[int, bytes] | None]


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    host: str
    headers: dict[str, str] = field(repr=False)
    body: Any = None


@dataclass
class _Operation:
    key: tuple[str, ...]
    polls_left: int


def check_vhd(size: int, footer: bytes) -> str | None:
    """Why Azure would refuse this blob as an image's OS disk, or None."""
    if footer[:8] != b"conectix":
        return "The specified cookie value in VHD footer indicates that the blob is not a supported VHD"
    if struct.unpack_from(">I", footer, 60)[0] != 2:
        return "The VHD is not a fixed VHD: only fixed VHDs are supported"
    if (size - 512) % MiB or struct.unpack_from(">Q", footer, 48)[0] != size - 512:
        return f"The VHD's virtual size {size - 512} is not a whole number of MiB"
    return None


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key): the fake's, and Azurite's
    when it serves https beside it (one REQUESTS_CA_BUNDLE then trusts both)."""
    key_pem, cert_pem = generate("localhost", ["127.0.0.1"])
    cert_path, key_path = folder / "fake-tls.crt", folder / "fake-tls.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)
    return cert_path, key_path


def storage_jwt(tenant: str = "72f988bf-86f1-41af-91ab-2d7cd011db47") -> str:
    """A token shaped like Entra ID's for Azure Storage: a JWT with the issuer, audience
    and lifetime Azurite's ``--oauth basic`` checks (it checks no signature)."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"aud": "https://storage.azure.com", "iss": f"https://sts.windows.net/{tenant}/",
              "iat": now - 60, "nbf": now - 60, "exp": now + 3600, "oid": "publisher",
              "tid": tenant}
    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.{secrets.token_hex(16)}"


class FakeArm(LoopbackServer):
    def __init__(self, tmp: Path, *, polls: int = 2, forbidden: frozenset[str] = frozenset(),
                 blob_reader: BlobReader | None = None,
                 cert: tuple[Path, Path] | None = None) -> None:
        self.polls = polls
        self.forbidden = set(forbidden)
        self.blob_reader = blob_reader
        self.token = "arm-" + secrets.token_hex(8)
        self.identity_header = secrets.token_hex(8)
        self.resources: dict[tuple[str, ...], dict[str, Any]] = {}
        self.galleries: set[tuple[str, str, str]] = set()  # (sub, rg, gallery), made by tests
        self.operations: dict[str, _Operation] = {}
        self.seen: list[Seen] = []
        self.resources_asked: list[str] = []  # the token endpoint's ?resource= values
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        if cert is None:
            cert = make_cert(tmp)
        self.cert_path, key_path = cert
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, key_path)
        super().__init__(methods=("GET", "PUT"), tls=context)
        self.identity_endpoint = f"{self.url}/msi/token"

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        self._handle(handler, handler.command)

    def env(self) -> dict[str, str]:
        """The environment that points DefaultAzureCredential and the SDK's TLS here."""
        return {"IDENTITY_ENDPOINT": self.identity_endpoint,
                "IDENTITY_HEADER": self.identity_header,
                "REQUESTS_CA_BUNDLE": str(self.cert_path)}

    # --- requests -----------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        headers = {k.lower(): v for k, v in handler.headers.items()}
        extra: dict[str, str] = {}
        with self._lock:
            self.seen.append(Seen(method, handler.path, headers.get("host", ""), headers, body))
            try:
                status, reply, extra = self._route(method, handler.path, headers, body)
            except ArmError as exc:
                status, reply = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        data = json.dumps(reply).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _route(self, method: str, target: str, headers: dict[str, str],
               body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        if parts.path == "/msi/token":
            if headers.get("x-identity-header") != self.identity_header:
                raise ArmError(401, "Unauthorized", "X-IDENTITY-HEADER missing or wrong")
            audience = query.get("resource", [""])[0]
            # Storage gets a JWT (Azurite checks its claims); everything else ARM's token.
            token = storage_jwt() if audience.startswith("https://storage.azure.com") else self.token
            self.resources_asked.append(audience)
            return 200, {"access_token": token, "token_type": "Bearer",
                         "expires_on": str(int(time.time()) + 3600), "resource": audience}, {}
        if headers.get("authorization") != f"Bearer {self.token}":
            raise ArmError(401, "InvalidAuthenticationToken",
                           "The access token is missing or invalid.")
        if not query.get("api-version"):
            raise ArmError(400, "MissingApiVersionParameter",
                           "The api-version query parameter (?api-version=) is required for all requests.")
        found = next(((k, m) for k, pattern in ROUTES if (m := pattern.fullmatch(parts.path))), None)
        if found is None:
            raise ArmError(404, "InvalidResourceType", f"no such resource type: {parts.path}")
        kind, groups = found[0], found[1].groupdict()
        if kind == "operation":
            return self._operation(groups["name"])
        key = (kind, *(groups[k].lower() for k in ("sub", "rg", "gallery", "image", "name") if groups.get(k)))
        scope = parts.path
        action = f"{ACTIONS[kind]}/{'read' if method == 'GET' else 'write'}"
        if action in self.forbidden:
            raise ArmError(403, "AuthorizationFailed",
                           f"The client 'publisher@example.com' with object id '00000000-0000-0000-0000-"
                           f"000000000001' does not have authorization to perform action '{action}' "
                           f"over scope '{scope}' or the scope is invalid. If access was recently "
                           "granted, please refresh your credentials.")
        if method == "GET":
            resource = self.resources.get(key)
            if resource is None:
                self._check_parent(kind, groups)
                raise ArmError(404, "ResourceNotFound", f"The Resource '{ACTIONS[kind]}/{groups['name']}' "
                               f"under resource group '{groups['rg']}' was not found.")
            return 200, resource, {}
        self._check_parent(kind, groups)
        self._validate(kind, groups, body)
        op = f"op-{next(self._ids)}"
        self.operations[op] = _Operation(key, self.polls)
        resource = dict(body, name=groups["name"], id=scope, type=ACTIONS[kind])
        resource["properties"] = dict(body["properties"], provisioningState="Creating")
        self.resources[key] = resource
        location = body["location"]
        poll = (f"{self.url}/subscriptions/{groups['sub']}/providers/Microsoft.Compute/locations/"
                f"{location}/operations/{op}?api-version={query['api-version'][0]}")
        # retry-after-ms keeps the SDK's poll quick (azure-core reads it before Retry-After).
        return 201, resource, {"Azure-AsyncOperation": poll, "retry-after-ms": "10"}

    def _operation(self, name: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        op = self.operations.get(name)
        if op is None:
            raise ArmError(404, "NotFound", f"operation {name} not found")
        op.polls_left -= 1
        if op.polls_left > 0:
            return 200, {"name": name, "status": "InProgress"}, {"retry-after-ms": "10"}
        self.resources[op.key]["properties"]["provisioningState"] = "Succeeded"
        return 200, {"name": name, "status": "Succeeded"}, {}

    def _check_parent(self, kind: str, groups: dict[str, str]) -> None:
        sub, rg = groups["sub"].lower(), groups["rg"].lower()
        if kind in ("gallery_image", "gallery_version") and \
                (sub, rg, groups["gallery"].lower()) not in self.galleries:
            raise ArmError(404, "ParentResourceNotFound", f"Can not perform requested operation on "
                           f"nested resource. Parent resource '{groups['gallery']}' not found.")
        if kind == "gallery_version" and ("gallery_image", sub, rg, groups["gallery"].lower(),
                                          groups["image"].lower()) not in self.resources:
            raise ArmError(404, "ParentResourceNotFound", f"Can not perform requested operation on "
                           f"nested resource. Parent resource '{groups['gallery']}/{groups['image']}' not found.")

    def _validate(self, kind: str, groups: dict[str, str], body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid: no properties")
        if not body.get("location"):
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        props = body["properties"]
        generation = props.get("hyperVGeneration", "V1")
        if generation not in ("V1", "V2"):
            raise ArmError(400, "InvalidParameter", f"The value '{generation}' of parameter "
                           "'hyperVGeneration' is not allowed. Allowed values are 'V1', 'V2'.")
        if kind == "image":
            disk = (props.get("storageProfile") or {}).get("osDisk")
            if not isinstance(disk, dict):
                raise ArmError(400, "InvalidParameter", "Required parameter 'osDisk' is missing (null).")
            self._check_os(disk, "osDisk")
            if not disk.get("blobUri") and not disk.get("snapshot") and not disk.get("managedDisk"):
                raise ArmError(400, "InvalidParameter", "Required parameter 'osDisk.blobUri' is missing (null).")
            self._check_blob(str(disk.get("blobUri")))
        elif kind == "gallery_image":
            self._check_os(props, "properties")
            identifier = props.get("identifier") or {}
            if not all(identifier.get(k) for k in ("publisher", "offer", "sku")):
                raise ArmError(400, "InvalidParameter", "Required parameter 'identifier' (publisher, "
                               "offer, sku) is missing.")
        else:
            if not VERSION_RE.fullmatch(groups["name"]):
                raise ArmError(400, "InvalidParameter", f"The gallery image version name "
                               f"'{groups['name']}' is invalid: it must be Major.Minor.Patch.")
            source = ((props.get("storageProfile") or {}).get("osDiskImage") or {}).get("source") or {}
            if not source.get("uri"):
                raise ArmError(400, "InvalidParameter", "Required parameter 'osDiskImage.source.uri' is missing.")
            if not source.get("storageAccountId"):
                raise ArmError(400, "InvalidParameter", "'storageAccountId' is required when "
                               "'osDiskImage.source.uri' is specified.")
            self._check_blob(str(source["uri"]))

    @staticmethod
    def _check_os(props: dict[str, Any], where: str) -> None:
        if props.get("osType") not in ("Linux", "Windows"):
            raise ArmError(400, "InvalidParameter", f"The value '{props.get('osType')}' of parameter "
                           f"'{where}.osType' is not allowed. Allowed values are 'Windows', 'Linux'.")
        if props.get("osState") not in ("Generalized", "Specialized"):
            raise ArmError(400, "InvalidParameter", f"The value '{props.get('osState')}' of parameter "
                           f"'{where}.osState' is not allowed. Allowed values are 'Generalized', 'Specialized'.")

    def _check_blob(self, uri: str) -> None:
        if self.blob_reader is None:
            return
        found = self.blob_reader(uri)
        if found is None:
            raise ArmError(400, "InvalidParameter", f"The blob '{uri}' was not found.")
        problem = check_vhd(*found)
        if problem:
            raise ArmError(400, "InvalidParameter", f"{problem} (blob '{uri}').")

    # --- what the tests look at -----------------------------------------------------------

    def requests(self, method: str | None = None, pattern: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (method is None or s.method == method)
                    and re.search(pattern, s.path)]
