"""``make demo`` gives a peer the appliance's host name as ``cluster_host``, the name the
appliance itself takes from the cloud's metadata, not the guest's address.

The appliance side is real: first boot runs against the EC2 metadata emulator on loopback
(as in a demo boot) and records the host name it gave the appliance; the demo, handed the
same metadata name, must print exactly that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.demo import cluster_host
from lockgate.firstboot.apply.access import last_host_name
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.datasources import get_source
from lockgate.firstboot.service import firstboot
from lockgate.image.cloudemu import Ec2Imds

GUEST_ADMIN = "https://10.0.2.15:9090"  # what the runtime's serving line says in a demo boot


@pytest.mark.parametrize("hostname", [
    "ip-10-0-0-5.ec2.internal",  # the emulator's (and EC2's usual) private DNS name
    # Longer than the kernel takes (64): the appliance keeps the first label, so must the demo.
    "ip-10-0-0-5." + "a" * 60 + ".compute.internal",
])
def test_demo_prints_the_host_name_the_appliance_took(tmp_path: Path, hostname: str) -> None:
    root = tmp_path / "root"
    with Ec2Imds(user_data=b"password=Demo-Pw-123 accept_license=y", imdsv1=False,
                 hostname=hostname) as imds:
        source = get_source("ec2", ec2={"base_url": imds.url})
        status = firstboot(root, source, Console(str(tmp_path / "console")), timeout=10)
        given = imds.hostname
    assert status.state == "configured", status.warnings
    appliance_name = last_host_name(root)
    assert appliance_name is not None
    assert cluster_host(given, GUEST_ADMIN) == appliance_name
    assert appliance_name != "10.0.2.15"


def test_without_a_usable_name_the_address_is_printed() -> None:
    assert cluster_host(None, GUEST_ADMIN) == "10.0.2.15"
    assert cluster_host("not a host name!", GUEST_ADMIN) == "10.0.2.15"
    assert cluster_host(None, None) == "<appliance-ip>"
