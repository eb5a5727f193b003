"""IP movers: how a traffic IP is raised on (and dropped from) this appliance.

One interface, chosen by where the appliance runs (``choose``):

* :mod:`.local` — ``ip addr add``/``del`` on the interface whose subnet holds the IP,
  then gratuitous ARP (IPv4) or an unsolicited neighbour advertisement (IPv6);
* :mod:`.ec2` — secondary private IPs on the instance's ENI, Elastic IPs associated
  with ``AllowReassociation`` (boto3, imported only there);
* :mod:`.gce` — alias IP ranges on nic0, or nic0's access config for an external IP
  (google-cloud-compute, imported only there).

* :mod:`.azure` — secondary IP configurations of the VM's NIC
  (azure-mgmt-network, imported only there).

On a cloud, :class:`WithLocal` also raises a private traffic IP on the local
interface (the clouds route it to the VM but leave the guest to configure it).
Every method is blocking and idempotent: raising a raised IP, or dropping one not
held, is not an error. Callers run them off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class MoverError(Exception):
    """One line for the log and the status: what failed and what to do."""


class Mover(Protocol):
    name: str

    def raise_ip(self, ip: str) -> None: ...

    def drop_ip(self, ip: str) -> None: ...

    def announce(self, ip: str) -> None:
        """Tell the network again that the IP is here (repeated after a takeover)."""

    def prepare(self, ips: list[str]) -> None:
        """Look up now what a takeover of ``ips`` will need (not during one)."""


class WithLocal:
    """A cloud mover, plus the address on the local interface for a private traffic IP:
    the clouds route a secondary private IP (EC2), alias range (GCE) or secondary IP
    configuration (Azure) to the VM but do not configure it in the guest, and the
    appliance runs no cloud guest agent that would. Public IPs are NATed to the
    primary address by the cloud: nothing local."""

    def __init__(self, cloud: Mover, local: Mover, private: Callable[[str], bool]) -> None:
        self.cloud, self.local, self.private = cloud, local, private
        self.name = cloud.name

    def raise_ip(self, ip: str) -> None:
        self.cloud.raise_ip(ip)
        if self.private(ip):
            self.local.raise_ip(ip)

    def drop_ip(self, ip: str) -> None:
        if self.private(ip):
            self.local.drop_ip(ip)  # first: stop answering before the cloud moves it
        self.cloud.drop_ip(ip)

    def announce(self, ip: str) -> None:
        self.cloud.announce(ip)

    def prepare(self, ips: list[str]) -> None:
        self.cloud.prepare(ips)
        self.local.prepare([ip for ip in ips if self.private(ip)])


def choose(platform: str | None) -> Mover:
    """The mover for ``platform`` ("ec2", "gce", "azure", or anything else: local)."""
    from lockgate.runtime.cluster.movers.local import LocalMover

    cloud: Mover
    if platform == "ec2":
        from lockgate.runtime.cluster.movers.ec2 import Ec2Mover, is_elastic

        cloud, private = Ec2Mover.from_instance(), (lambda ip: not is_elastic(ip))
    elif platform == "gce":
        from lockgate.runtime.cluster.movers.gce import GceMover, is_external

        cloud, private = GceMover.from_instance(), (lambda ip: not is_external(ip))
    elif platform == "azure":
        from lockgate.runtime.cluster.movers.azure import AzureMover, is_public

        cloud, private = AzureMover.from_instance(), (lambda ip: not is_public(ip))
    else:
        return LocalMover()
    return WithLocal(cloud, LocalMover(), private)
