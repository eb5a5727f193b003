"""IP movers: how a traffic IP is raised on (and dropped from) this appliance.

One interface, chosen by where the appliance runs (``choose``):

* :mod:`.local` — ``ip addr add``/``del`` on the interface whose subnet holds the IP,
  then gratuitous ARP (IPv4) or an unsolicited neighbour advertisement (IPv6);
* :mod:`.ec2` — secondary private IPs on the instance's ENI, Elastic IPs associated
  with ``AllowReassociation`` (boto3, imported only there);
* :mod:`.gce` — alias IP ranges on nic0, or nic0's access config for an external IP
  (google-cloud-compute, imported only there).

The Azure mover is not written yet (see docs/cluster.md).
Every method is blocking and idempotent: raising a raised IP, or dropping one not
held, is not an error. Callers run them off the event loop.
"""

from __future__ import annotations

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


def choose(platform: str | None) -> Mover:
    """The mover for ``platform`` ("ec2", "gce", or anything else: local)."""
    if platform == "ec2":
        from lockgate.runtime.cluster.movers.ec2 import Ec2Mover

        return Ec2Mover.from_instance()
    if platform == "gce":
        from lockgate.runtime.cluster.movers.gce import GceMover

        return GceMover.from_instance()
    from lockgate.runtime.cluster.movers.local import LocalMover

    return LocalMover()
