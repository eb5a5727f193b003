"""A local fake of the GCE compute API's zonal instance calls the GCE IP mover makes.

Plain HTTP on a kernel-chosen loopback port, REST shapes of compute/v1 (camelCase):

* ``GET   /compute/v1/projects/{p}/zones/{z}/instances[/{i}]``
* ``PATCH .../instances/{i}/updateNetworkInterface?networkInterface=nic0`` — body a
  NetworkInterface with ``fingerprint`` and ``aliasIpRanges``; a stale fingerprint is
  412 ``conditionNotMet``, an alias another instance has is 400 (GCE never moves it)
* ``POST  .../instances/{i}/addAccessConfig?networkInterface=nic0`` — ``natIP`` in use
  elsewhere or a second access config on the interface: 400
* ``POST  .../instances/{i}/deleteAccessConfig?accessConfig=NAME&networkInterface=nic0``
* ``POST  .../zones/{z}/operations/{op}/wait``, ``GET .../operations/{op}``

``throttle``: call name -> how many times to answer 429 ``rateLimitExceeded`` first.
``forbidden``: call names answered 403 with GCE's "Required '<permission>' permission".
Every request is recorded in ``seen`` as (method, call, query, body).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loopback import LoopbackServer, read_body

PERMISSIONS = {"list": "compute.instances.list", "get": "compute.instances.get",
               "updateNetworkInterface": "compute.instances.updateNetworkInterface",
               "addAccessConfig": "compute.instances.addAccessConfig",
               "deleteAccessConfig": "compute.instances.deleteAccessConfig",
               "wait": "compute.zoneOperations.get"}
NIC_FIELDS = {"fingerprint", "aliasIpRanges"}


class Fail(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class GceInstances(LoopbackServer):
    def __init__(self, project: str, zone: str, names: list[str]) -> None:
        self.project, self.zone = project, zone
        self.instances: dict[str, dict[str, Any]] = {
            n: {"name": n, "networkInterfaces": [{"name": "nic0", "fingerprint": "f0",
                                                  "aliasIpRanges": [], "accessConfigs": []}]}
            for n in names}
        self.throttle: dict[str, int] = {}
        self.forbidden: set[str] = set()
        self.seen: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.ops: dict[str, dict[str, Any]] = {}
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        super().__init__(methods=("GET", "POST", "PATCH"))

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        raw = read_body(handler)
        try:
            status, reply = self.handle(handler.command, handler.path,
                                        json.loads(raw) if raw else None)
        except Fail as exc:
            status, reply = exc.status, {"error": {
                "code": exc.status, "message": exc.message,
                "errors": [{"domain": "global", "reason": exc.reason, "message": exc.message}]}}
        data = json.dumps(reply).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def calls(self) -> list[str]:
        return [call for _, call, _, _ in self.seen]

    def nic(self, name: str) -> dict[str, Any]:
        return dict(self.instances[name]["networkInterfaces"][0])

    def handle(self, method: str, target: str, body: Any) -> tuple[int, Any]:
        split = urlsplit(target)
        query = parse_qs(split.query)
        base = f"/compute/v1/projects/{self.project}/zones/{self.zone}/"
        if not split.path.startswith(base):
            raise Fail(404, "notFound", f"no such endpoint: {split.path}")
        rest = split.path[len(base):]
        m = re.fullmatch(r"instances(?:/([^/]+))?(?:/([A-Za-z]+))?|operations/([^/]+)(/wait)?", rest)
        if m is None:
            raise Fail(404, "notFound", f"no such endpoint: {split.path}")
        instance, verb, op, _wait = m.groups()
        call = ("wait" if op else verb or ("get" if instance else "list"))
        with self.lock:
            self.seen.append((method, call, query, body))
            if self.throttle.get(call, 0) > 0:
                self.throttle[call] -= 1
                raise Fail(429, "rateLimitExceeded", "Rate Limit Exceeded")
            if call in self.forbidden:
                resource = f"projects/{self.project}/zones/{self.zone}/instances/{instance}"
                raise Fail(403, "forbidden",
                           f"Required '{PERMISSIONS[call]}' permission for '{resource}'")
            if op:
                if op not in self.ops:
                    raise Fail(404, "notFound", f"operation {op} not found")
                return 200, self.ops[op]
            if call == "list" and method == "GET":
                return 200, {"kind": "compute#instanceList",
                             "items": list(self.instances.values())}
            if instance not in self.instances:
                raise Fail(404, "notFound", f"instance {instance} not found")
            if call == "get" and method == "GET":
                return 200, self.instances[instance]
            nic = self._nic(instance, query)
            if call == "updateNetworkInterface" and method == "PATCH":
                self._update(instance, nic, body)
            elif call == "addAccessConfig" and method == "POST":
                self._add_access(instance, nic, body)
            elif call == "deleteAccessConfig" and method == "POST":
                names = query.get("accessConfig", [""])
                before = len(nic["accessConfigs"])
                nic["accessConfigs"] = [a for a in nic["accessConfigs"] if a["name"] != names[0]]
                if len(nic["accessConfigs"]) == before:
                    raise Fail(400, "invalid", f"no access config {names[0]!r}")
            else:
                raise Fail(405, "methodNotAllowed", f"{method} {call}")
            return 200, self._operation(call, instance)

    def _nic(self, instance: str, query: dict[str, list[str]]) -> dict[str, Any]:
        if query.get("networkInterface") != ["nic0"]:
            raise Fail(400, "required", "Required parameter: networkInterface")
        nic: dict[str, Any] = self.instances[instance]["networkInterfaces"][0]
        return nic

    def _update(self, instance: str, nic: dict[str, Any], body: Any) -> None:
        if not isinstance(body, dict) or set(body) - NIC_FIELDS - {"name"}:
            raise Fail(400, "invalid", f"Invalid JSON payload: {sorted(set(body or {}) - NIC_FIELDS)}")
        if body.get("fingerprint") != nic["fingerprint"]:
            raise Fail(412, "conditionNotMet", "Supplied fingerprint does not match current "
                                               "metadata fingerprint.")
        if "aliasIpRanges" not in body:
            return  # PATCH: a field left out is left as it is
        ranges = [r["ipCidrRange"] for r in body["aliasIpRanges"]]
        for other, data in self.instances.items():
            held = {r["ipCidrRange"] for r in data["networkInterfaces"][0]["aliasIpRanges"]}
            if other != instance and held & set(ranges):
                raise Fail(400, "invalid", f"IP {sorted(held & set(ranges))[0]} is already "
                                           f"being used by another resource ({other})")
        nic["aliasIpRanges"] = [{"ipCidrRange": r} for r in ranges]
        nic["fingerprint"] = f"f{next(self.counter)}"

    def _add_access(self, instance: str, nic: dict[str, Any], body: Any) -> None:
        if nic["accessConfigs"]:
            raise Fail(400, "invalid", "At most one access config currently supported.")
        for other, data in self.instances.items():
            if any(a.get("natIP") == body.get("natIP")
                   for a in data["networkInterfaces"][0]["accessConfigs"]):
                raise Fail(400, "invalid", f"The IP address {body['natIP']} is already being "
                                           f"used by another resource ({other})")
        nic["accessConfigs"] = [{"name": body["name"], "natIP": body["natIP"],
                                 "type": body.get("type", "ONE_TO_ONE_NAT")}]

    def _operation(self, call: str, instance: str) -> dict[str, Any]:
        name = f"operation-{next(self.counter)}"
        link = f"{self.url}/compute/v1/projects/{self.project}/zones/{self.zone}"
        op = {"kind": "compute#operation", "id": str(next(self.counter)), "name": name,
              "zone": link, "operationType": call, "status": "DONE", "progress": 100,
              "targetLink": f"{link}/instances/{instance}",
              "selfLink": f"{link}/operations/{name}"}
        self.ops[name] = op
        return op
