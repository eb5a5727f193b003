"""EC2: a private traffic IP is a secondary private IP of this instance's ENI, a public
one an Elastic IP associated with that ENI. boto3 is imported here only.

Calls (the IAM policy needs exactly these actions, see docs/cluster.md):
``ec2:AssignPrivateIpAddresses`` (AllowReassignment: takes the IP from the dead
member's ENI in one call), ``ec2:UnassignPrivateIpAddresses``,
``ec2:DescribeNetworkInterfaces``,
``ec2:DescribeAddresses``, ``ec2:AssociateAddress`` (AllowReassociation) and
``ec2:DisassociateAddress``. Credentials: the instance's role (boto3's default chain).

Throttling (``RequestLimitExceeded``, ``Throttling``) is retried with backoff; an
access denial is one line naming the IAM action that is missing.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

from lockgate.runtime.cluster.movers import MoverError

log = logging.getLogger("lockgate.runtime.cluster.movers.ec2")

THROTTLED = {"RequestLimitExceeded", "Throttling", "ThrottlingException"}
DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"}
ATTEMPTS = 5
BACKOFF = 0.2  # seconds, doubled per attempt: 0.2 .. 1.6 s, 3 s in all at most
ACTIONS = {"assign_private_ip_addresses": "ec2:AssignPrivateIpAddresses",
           "unassign_private_ip_addresses": "ec2:UnassignPrivateIpAddresses",
           "describe_addresses": "ec2:DescribeAddresses",
           "describe_network_interfaces": "ec2:DescribeNetworkInterfaces",
           "associate_address": "ec2:AssociateAddress",
           "disassociate_address": "ec2:DisassociateAddress"}


# The ranges a VPC's own CIDR blocks come from: an IP in them is a secondary private
# IP, any other an Elastic IP (whatever Python's wider idea of "private" is).
VPC_RANGES = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def is_elastic(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return not any(address in net for net in VPC_RANGES if net.version == address.version)


class Ec2Mover:
    name = "ec2"

    def __init__(self, network_interface: str, *, region: str | None = None,
                 endpoint_url: str | None = None, client: Any = None,
                 backoff: float = BACKOFF) -> None:
        self.eni = network_interface
        self.backoff = backoff
        if client is None:
            import boto3
            from botocore.config import Config

            # Our own retry loop below decides on throttling; botocore's would hide it.
            client = boto3.client("ec2", region_name=region, endpoint_url=endpoint_url,
                                  config=Config(retries={"max_attempts": 1, "mode": "standard"},
                                                connect_timeout=2, read_timeout=5))
        self.client = client

    @classmethod
    def from_instance(cls) -> Ec2Mover:
        """This instance's first ENI and region, from the instance metadata (IMDSv2)."""
        from lockgate import http

        base = "http://169.254.169.254/latest"
        token = http.read_url(f"{base}/api/token", method="PUT", headers={
            "X-aws-ec2-metadata-token-ttl-seconds": "60"}).body.decode()
        auth = {"X-aws-ec2-metadata-token": token}

        def meta(path: str) -> str:
            return http.read_url(f"{base}/meta-data/{path}", headers=auth).body.decode()

        mac = meta("mac").strip()
        eni = meta(f"network/interfaces/macs/{mac}/interface-id").strip()
        region = meta("placement/region").strip()
        return cls(eni, region=region)

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        delay = self.backoff
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return dict(getattr(self.client, operation)(**kwargs))
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in THROTTLED and attempt < ATTEMPTS:
                    log.info("EC2 %s throttled (%s); retry %d in %.1f s", operation, code,
                             attempt, delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                if code in DENIED:
                    raise MoverError(f"EC2 refused {operation}: the instance role lacks IAM "
                                     f"permission {ACTIONS[operation]}") from None
                raise MoverError(f"EC2 {operation} failed: {code or exc}") from None
        raise AssertionError("unreachable")

    def _association(self, ip: str) -> dict[str, Any]:
        found = self._call("describe_addresses", PublicIps=[ip])["Addresses"]
        if not found:
            raise MoverError(f"traffic IP {ip}: not an Elastic IP of this account")
        return dict(found[0])

    def raise_ip(self, ip: str) -> None:
        if is_elastic(ip):
            address = self._association(ip)
            if address.get("NetworkInterfaceId") == self.eni:
                return
            self._call("associate_address", AllocationId=address["AllocationId"],
                       NetworkInterfaceId=self.eni, AllowReassociation=True)
        else:
            self._call("assign_private_ip_addresses", NetworkInterfaceId=self.eni,
                       PrivateIpAddresses=[ip], AllowReassignment=True)

    def drop_ip(self, ip: str) -> None:
        if is_elastic(ip):
            address = self._association(ip)
            # Only our own association: the new holder may already have reassociated it.
            if address.get("NetworkInterfaceId") == self.eni and address.get("AssociationId"):
                self._call("disassociate_address", AssociationId=address["AssociationId"])
        elif ip in self._secondary_ips():  # AWS refuses to unassign what is not there
            self._call("unassign_private_ip_addresses", NetworkInterfaceId=self.eni,
                       PrivateIpAddresses=[ip])

    def _secondary_ips(self) -> set[str]:
        found = self._call("describe_network_interfaces",
                           NetworkInterfaceIds=[self.eni])["NetworkInterfaces"]
        return {p["PrivateIpAddress"] for n in found for p in n.get("PrivateIpAddresses", [])
                if not p.get("Primary")}

    def announce(self, ip: str) -> None:
        """Nothing to do: the VPC routes by its own mapping, not by ARP."""

    def prepare(self, ips: list[str]) -> None:
        """Nothing to look up in advance."""
