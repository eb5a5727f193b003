"""The GCE IP mover against a local fake of the compute API (documented request
shapes): an alias IP and an external IP move from a failed instance to this one,
rate limits are retried, a denial names the permission."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials

from lockgate.runtime.cluster.movers import MoverError
from lockgate.runtime.cluster.movers.gce import GceMover

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from gce_instances import GceInstances


def mover(fake: GceInstances, instance: str) -> GceMover:
    return GceMover("proj", "europe-west1-b", instance, endpoint=fake.url,
                    credentials=AnonymousCredentials(), backoff=0.01)


def test_alias_and_external_ip_move_between_instances() -> None:
    with GceInstances("proj", "europe-west1-b", ["tm1", "tm2"]) as fake:
        mover(fake, "tm1").raise_ip("10.132.0.50")
        assert fake.nic("tm1")["aliasIpRanges"] == [{"ipCidrRange": "10.132.0.50/32"}]
        tm2 = mover(fake, "tm2")
        tm2.raise_ip("10.132.0.50")  # tm1 failed: its alias is released first
        assert fake.nic("tm1")["aliasIpRanges"] == []
        assert fake.nic("tm2")["aliasIpRanges"] == [{"ipCidrRange": "10.132.0.50/32"}]
        tm2.raise_ip("10.132.0.50")  # already here: no change
        updates = [(q, b) for m, c, q, b in fake.seen if c == "updateNetworkInterface"]
        assert len(updates) == 3
        assert updates[1][0]["networkInterface"] == ["nic0"]
        # Releasing the last range says so explicitly (the SDK would leave the list out).
        assert updates[1][1] == {"fingerprint": "f1", "aliasIpRanges": []}

        mover(fake, "tm1").raise_ip("34.77.1.2")
        assert fake.nic("tm1")["accessConfigs"][0]["natIP"] == "34.77.1.2"
        tm2.raise_ip("34.77.1.2")
        assert fake.nic("tm1")["accessConfigs"] == []
        added = [b for _, c, _, b in fake.seen if c == "addAccessConfig"]
        assert added[-1] == {"name": "External NAT", "natIP": "34.77.1.2",
                             "type": "ONE_TO_ONE_NAT"}
        tm2.drop_ip("34.77.1.2")
        tm2.drop_ip("10.132.0.50")
        assert fake.nic("tm2")["accessConfigs"] == [] and fake.nic("tm2")["aliasIpRanges"] == []
        assert "wait" in fake.calls()  # every change waited for


def test_rate_limit_is_retried_and_denial_names_the_permission() -> None:
    with GceInstances("proj", "europe-west1-b", ["tm1"]) as fake:
        fake.throttle["updateNetworkInterface"] = 2
        mover(fake, "tm1").raise_ip("10.132.0.51")
        assert fake.calls().count("updateNetworkInterface") == 3
        assert fake.nic("tm1")["aliasIpRanges"] == [{"ipCidrRange": "10.132.0.51/32"}]
        fake.forbidden.add("updateNetworkInterface")
        with pytest.raises(MoverError) as denied:
            mover(fake, "tm1").drop_ip("10.132.0.51")
    assert str(denied.value) == ("GCE refused update_network_interface: the service account "
                                 "lacks permission compute.instances.updateNetworkInterface")
