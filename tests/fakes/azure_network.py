"""The network-interface calls of Azure Resource Manager, on top of the publish fake
(``azure_arm.FakeArm``: TLS, its token endpoint, the bearer token checked on every
call, ``api-version`` required):

* ``GET .../resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces[/{nic}]``
* ``PUT .../networkInterfaces/{nic}`` — the whole NIC; refused (400
  ``PrivateIPAddressInUse``) when a static private IP or a public IP address resource
  is already on another NIC, as ARM does; answered 200 Succeeded (no polling)
* ``GET .../providers/Microsoft.Network/publicIPAddresses``

``throttle``: how many NIC PUTs to answer 429 (Retry-After: 0) first. ``forbidden``
takes RBAC actions, e.g. ``Microsoft.Network/networkInterfaces/write`` (403
``AuthorizationFailed`` in ARM's words).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from azure_arm import ArmError, FakeArm

NET = re.compile(r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
                 r"Microsoft\.Network/(?P<kind>networkInterfaces|publicIPAddresses)(?:/(?P<name>[^/]+))?",
                 re.I)
SUBNET = ("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/"
          "vnet/subnets/default")


class FakeNetwork(FakeArm):
    def __init__(self, tmp: Path, sub: str, rg: str, nics: dict[str, str],
                 public_ips: dict[str, str]) -> None:
        super().__init__(tmp)
        self.sub, self.rg = sub, rg
        self.throttle = 0
        base = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network"
        subnet = SUBNET.format(sub=sub, rg=rg)
        self.nics: dict[str, dict[str, Any]] = {
            name: {"name": name, "id": f"{base}/networkInterfaces/{name}", "location": "westeurope",
                   "properties": {"ipConfigurations": [{
                       "name": "ipconfig1", "properties": {
                           "primary": True, "privateIPAddress": primary,
                           "privateIPAllocationMethod": "Dynamic", "subnet": {"id": subnet}}}]}}
            for name, primary in nics.items()}
        self.pips = {ip: {"name": name, "id": f"{base}/publicIPAddresses/{name}",
                          "location": "westeurope", "properties": {"ipAddress": ip}}
                     for name, ip in public_ips.items()}

    def _route(self, method: str, target: str, headers: dict[str, str],
               body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        match = NET.fullmatch(target.split("?", 1)[0])
        if match is None or target.startswith("/msi/"):
            return super()._route(method, target, headers, body)
        if headers.get("authorization") != f"Bearer {self.token}":
            raise ArmError(401, "InvalidAuthenticationToken", "The access token is missing or invalid.")
        if "api-version=" not in target:
            raise ArmError(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        kind, name = match.group("kind"), match.group("name")
        action = f"Microsoft.Network/{kind}/{'read' if method == 'GET' else 'write'}"
        if action in self.forbidden:
            raise ArmError(403, "AuthorizationFailed",
                           f"The client 'vm' with object id '1' does not have authorization to "
                           f"perform action '{action}' over scope '{target.split('?')[0]}' or the "
                           "scope is invalid.")
        if kind == "publicIPAddresses":
            return 200, {"value": list(self.pips.values())}, {}
        if method == "GET":
            if name is None:
                return 200, {"value": list(self.nics.values())}, {}
            if name not in self.nics:
                raise ArmError(404, "NotFound", f"networkInterfaces/{name} not found")
            return 200, self.nics[name], {}
        if self.throttle > 0:
            self.throttle -= 1
            raise _Throttled()
        assert name is not None
        self._check_nic(name, body)
        self.nics[name] = dict(body, name=name, id=self.nics[name]["id"])
        self.nics[name]["properties"] = dict(body["properties"], provisioningState="Succeeded")
        return 200, self.nics[name], {}

    def _check_nic(self, name: str, body: Any) -> None:
        configs = body["properties"]["ipConfigurations"]
        for conf in configs:
            props = conf["properties"]
            if "subnet" not in props:
                raise ArmError(400, "InvalidRequestFormat", f"ipConfiguration {conf['name']} has no subnet")
            for other, nic in self.nics.items():
                if other == name:
                    continue
                for theirs in nic["properties"]["ipConfigurations"]:
                    p = theirs["properties"]
                    if props.get("privateIPAllocationMethod") == "Static" and \
                            p.get("privateIPAddress") == props.get("privateIPAddress"):
                        raise ArmError(400, "PrivateIPAddressInUse",
                                       f"IP configuration {conf['name']} is using the private IP "
                                       f"address {props['privateIPAddress']} which is already "
                                       f"allocated to resource {nic['id']}.")
                    pip = props.get("publicIPAddress", {}).get("id")
                    if pip and p.get("publicIPAddress", {}).get("id") == pip:
                        raise ArmError(400, "PublicIPAddressInUse",
                                       f"Public IP address {pip} is already in use by {nic['id']}.")


class _Throttled(ArmError):
    def __init__(self) -> None:
        super().__init__(429, "TooManyRequests", "The request is being throttled.")
