"""Azure: a traffic IP is a secondary IP configuration of this VM's NIC — a static
private IP, or (for a public traffic IP) the public IP address resource that has it,
attached through such a configuration. azure-mgmt-network is imported here only
(extra ``cluster-cloud``).

Azure never moves an IP by itself: a takeover first removes the configuration from
the NIC that has it (the failed member's, found by listing the resource group's
NICs), then adds it here; each update is a PUT of the whole NIC, waited for. The
configurations this mover makes are named ``lockgate-tip-<ip>``; it never touches
others. RBAC actions it needs (docs/cluster.md): ``Microsoft.Network/
networkInterfaces/read``, ``.../networkInterfaces/write``,
``Microsoft.Network/publicIPAddresses/read``, ``.../publicIPAddresses/join/action``,
``Microsoft.Network/virtualNetworks/subnets/join/action``.

Throttling (429 with Retry-After) is retried by azure-core's retry policy; a 403
``AuthorizationFailed`` is one line naming the action ARM says is missing.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any

from lockgate.runtime.cluster.movers import MoverError

log = logging.getLogger("lockgate.runtime.cluster.movers.azure")

PREFIX = "lockgate-tip-"
_ACTION = re.compile(r"perform action '([^']+)'")
PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def config_name(ip: str) -> str:
    return PREFIX + ip.replace(".", "-").replace(":", "-")


def is_public(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return not any(address in net for net in PRIVATE if net.version == address.version)


class AzureMover:
    name = "azure"

    def __init__(self, subscription: str, resource_group: str, nic: str, *,
                 base_url: str | None = None, credential: Any = None, **client_kwargs: Any
                 ) -> None:
        from azure.mgmt.network import NetworkManagementClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()  # the VM's managed identity
        options: dict[str, Any] = dict(client_kwargs)
        if base_url:
            options.update(base_url=base_url, credential_scopes=[f"{base_url}/.default"])
        self.group, self.nic = resource_group, nic
        self.client = NetworkManagementClient(credential, subscription, **options)

    @classmethod
    def from_instance(cls) -> AzureMover:
        """Subscription, resource group and this VM's NIC (the one with the primary
        interface's MAC address) from the instance metadata service."""
        import json

        from lockgate import http

        reply = http.read_url("http://169.254.169.254/metadata/instance?api-version=2021-02-01",
                              headers={"Metadata": "true"})
        meta = json.loads(reply.body)
        compute = meta["compute"]
        mac = str(meta["network"]["interface"][0]["macAddress"]).replace("-", "").upper()
        mover = cls(compute["subscriptionId"], compute["resourceGroupName"], "")
        for nic in mover._do("networkInterfaces/read",
                             lambda: list(mover.client.network_interfaces.list(mover.group))):
            if str(nic.mac_address or "").replace("-", "").upper() == mac:
                mover.nic = str(nic.name)
                return mover
        raise MoverError(f"Azure: no network interface in resource group {mover.group} has "
                         f"this VM's MAC address {mac}")

    def _do(self, what: str, call: Any) -> Any:
        from azure.core.exceptions import HttpResponseError

        try:
            return call()
        except HttpResponseError as exc:
            text = str(exc.message or exc)
            found = _ACTION.search(text)
            if exc.status_code == 403 or found:
                action = found.group(1) if found else what
                raise MoverError(f"Azure refused {what}: the VM's identity lacks permission "
                                 f"for {action}") from None
            raise MoverError(f"Azure {what} failed: {text.splitlines()[0]}") from None

    def _get(self, name: str) -> Any:
        return self._do("networkInterfaces/read",
                        lambda: self.client.network_interfaces.get(self.group, name))

    def _put(self, nic: Any) -> None:
        self._do("networkInterfaces/write", lambda: self.client.network_interfaces
                 .begin_create_or_update(self.group, nic.name, nic).result())

    def _public_ip_id(self, ip: str) -> str:
        for pip in self._do("publicIPAddresses/read",
                            lambda: list(self.client.public_ip_addresses.list(self.group))):
            if pip.ip_address == ip:
                return str(pip.id)
        raise MoverError(f"traffic IP {ip}: no public IP address resource in resource group "
                         f"{self.group} has it")

    @staticmethod
    def _has(nic: Any, ip: str, pip_id: str | None) -> bool:
        for conf in nic.ip_configurations or []:
            if pip_id is not None:
                if conf.public_ip_address is not None and conf.public_ip_address.id == pip_id:
                    return True
            elif conf.private_ip_address == ip and conf.name.startswith(PREFIX):
                return True
        return False

    def _remove(self, nic: Any, ip: str, pip_id: str | None) -> None:
        keep = [c for c in nic.ip_configurations if not (c.name == config_name(ip) or (
            pip_id is not None and c.name.startswith(PREFIX) and c.public_ip_address is not None
            and c.public_ip_address.id == pip_id))]
        if len(keep) != len(nic.ip_configurations):
            nic.ip_configurations = keep
            self._put(nic)

    def raise_ip(self, ip: str) -> None:
        from azure.mgmt.network.models import (
            NetworkInterfaceIPConfiguration,
            NetworkInterfaceIPConfigurationPropertiesFormat,
            PublicIPAddress,
            Subnet,
        )

        pip_id = self._public_ip_id(ip) if is_public(ip) else None
        nics = self._do("networkInterfaces/read",
                        lambda: list(self.client.network_interfaces.list(self.group)))
        for other in nics:
            if other.name != self.nic and self._has(other, ip, pip_id):
                self._remove(other, ip, pip_id)
        nic = self._get(self.nic)
        if self._has(nic, ip, pip_id):
            return
        primary = next((c for c in nic.ip_configurations if c.primary), nic.ip_configurations[0])
        props = NetworkInterfaceIPConfigurationPropertiesFormat(subnet=Subnet(id=primary.subnet.id))
        if pip_id is None:
            props.private_ip_address = ip
            props.private_ip_allocation_method = "Static"
        else:
            props.private_ip_allocation_method = "Dynamic"
            props.public_ip_address = PublicIPAddress(id=pip_id)
        conf = NetworkInterfaceIPConfiguration(name=config_name(ip), properties=props)
        nic.ip_configurations = [*nic.ip_configurations, conf]
        self._put(nic)

    def drop_ip(self, ip: str) -> None:
        pip_id = self._public_ip_id(ip) if is_public(ip) else None
        self._remove(self._get(self.nic), ip, pip_id)

    def announce(self, ip: str) -> None:
        """Nothing to do: the virtual network routes by its own mapping, not by ARP."""

    def prepare(self, ips: list[str]) -> None:
        """Nothing to look up in advance."""
