"""The Azure IP mover against a local fake of ARM's network-interface calls (over TLS,
bearer token checked): a private and a public traffic IP move from a failed VM's NIC
to this one, throttling is retried, a denial names the RBAC action."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.network", reason="extra cluster-cloud not installed")

from lockgate.runtime.cluster.movers import MoverError
from lockgate.runtime.cluster.movers.azure import AzureMover

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from azure_network import FakeNetwork

SUB, RG = "00000000-0000-0000-0000-0000000000aa", "tm-rg"


class Token:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)


def mover(fake: FakeNetwork, nic: str) -> AzureMover:
    return AzureMover(SUB, RG, nic, base_url=fake.url, credential=Token(fake.token),
                      connection_verify=str(fake.cert_path), retry_backoff_factor=0.01)


def configs(fake: FakeNetwork, nic: str) -> list[dict[str, Any]]:
    return [c for c in fake.nics[nic]["properties"]["ipConfigurations"] if c["name"] != "ipconfig1"]


def test_private_and_public_ips_move_between_nics(tmp_path: Path) -> None:
    with FakeNetwork(tmp_path, SUB, RG, {"tm1-nic": "10.1.0.4", "tm2-nic": "10.1.0.5"},
                     {"web-pip": "20.50.1.2"}) as fake:
        mover(fake, "tm1-nic").raise_ip("10.1.0.100")
        assert configs(fake, "tm1-nic")[0]["properties"]["privateIPAddress"] == "10.1.0.100"
        tm2 = mover(fake, "tm2-nic")
        tm2.raise_ip("10.1.0.100")  # tm1 failed: removed there first, then added here
        assert configs(fake, "tm1-nic") == []
        added = configs(fake, "tm2-nic")[0]
        assert added["name"] == "lockgate-tip-10-1-0-100"
        assert added["properties"]["privateIPAllocationMethod"] == "Static"
        assert added["properties"]["subnet"]["id"].endswith("/virtualNetworks/vnet/subnets/default")

        mover(fake, "tm1-nic").raise_ip("20.50.1.2")
        tm2.raise_ip("20.50.1.2")
        assert configs(fake, "tm1-nic") == []
        public = [c for c in configs(fake, "tm2-nic") if "publicIPAddress" in c["properties"]]
        assert public[0]["properties"]["publicIPAddress"]["id"].endswith("/publicIPAddresses/web-pip")
        tm2.drop_ip("20.50.1.2")
        tm2.drop_ip("10.1.0.100")
        assert configs(fake, "tm2-nic") == []
        puts = [s for s in fake.seen if s.method == "PUT"]
        assert all("api-version=" in s.path for s in puts)


def test_throttling_retried_and_denial_names_the_action(tmp_path: Path) -> None:
    with FakeNetwork(tmp_path, SUB, RG, {"tm1-nic": "10.1.0.4"}, {}) as fake:
        fake.throttle = 2
        mover(fake, "tm1-nic").raise_ip("10.1.0.101")
        assert len([s for s in fake.seen if s.method == "PUT"]) == 3
        fake.forbidden.add("Microsoft.Network/networkInterfaces/write")
        with pytest.raises(MoverError) as denied:
            mover(fake, "tm1-nic").drop_ip("10.1.0.101")
    assert str(denied.value) == ("Azure refused networkInterfaces/write: the VM's identity "
                                 "lacks permission for Microsoft.Network/networkInterfaces/write")
