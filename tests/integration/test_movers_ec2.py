"""The EC2 IP mover against moto in server mode (through the strict front that records
every call): secondary private IPs and Elastic IPs move between two ENIs with the
right calls and arguments, throttling is retried, a denial names the IAM action."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import emulators
import pytest

from lockgate.runtime.cluster.movers import MoverError
from lockgate.runtime.cluster.movers.ec2 import Ec2Mover

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from aws_fake import AwsFake, Request


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    saved = dict(os.environ)
    os.environ.update(emulators.AWS_TEST_ENV)  # boto3 in this process talks to moto only
    try:
        with emulators.moto_server() as url:
            yield url
    finally:
        os.environ.clear()
        os.environ.update(saved)


class ThrottlingFake(AwsFake):
    """Answers the first ``times`` calls of each operation in ``throttle`` as AWS does
    when the account's request rate is exceeded."""

    def __init__(self, upstream: str, throttle: set[str], times: int) -> None:
        super().__init__(upstream)
        self.left = dict.fromkeys(throttle, times)

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        import urllib.parse

        form = urllib.parse.parse_qs(body.decode())
        operation = form.get("Action", ["?"])[0]
        if self.left.get(operation, 0) > 0:
            self.left[operation] -= 1
            with self.lock:
                self.requests.append(Request("ec2", operation, "POST", "/", {}, {}, len(body)))
            err = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                   f"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
                   f"</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>")
            return self.reply(h, 503, err.encode(), "text/xml;charset=UTF-8")
        return super().handle(h, body)


def world(url: str) -> dict[str, Any]:
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=url, region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.50.1.0/24")["Subnet"]["SubnetId"]
    enis = [ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
            for _ in range(2)]
    eip = ec2.allocate_address(Domain="vpc")["PublicIp"]
    return {"ec2": ec2, "enis": enis, "eip": eip}


def private_ips(ec2: Any, eni: str) -> set[str]:
    found = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    return {p["PrivateIpAddress"] for p in found["PrivateIpAddresses"] if not p.get("Primary")}


def test_private_and_elastic_ips_move_with_the_right_calls(moto: str) -> None:
    w = world(moto)
    ec2, (eni_a, eni_b), eip = w["ec2"], w["enis"], w["eip"]
    with AwsFake(moto) as front:
        a = Ec2Mover(eni_a, region="us-east-1", endpoint_url=front.url)
        b = Ec2Mover(eni_b, region="us-east-1", endpoint_url=front.url)
        a.raise_ip("10.50.1.77")
        assert "10.50.1.77" in private_ips(ec2, eni_a)
        b.raise_ip("10.50.1.77")  # takeover: one call, reassignment allowed
        assert "10.50.1.77" in private_ips(ec2, eni_b)
        a.drop_ip("10.50.1.77")  # the old holder cleaning up after the fact: not its IP now
        assert "10.50.1.77" not in private_ips(ec2, eni_a)
        assert "10.50.1.77" in private_ips(ec2, eni_b)
        a.raise_ip(eip)
        assoc = ec2.describe_addresses(PublicIps=[eip])["Addresses"][0]
        assert assoc["NetworkInterfaceId"] == eni_a
        b.raise_ip(eip)
        assert ec2.describe_addresses(PublicIps=[eip])["Addresses"][0]["NetworkInterfaceId"] == eni_b
        a.drop_ip(eip)  # not ours any more: must not disassociate b's
        assert ec2.describe_addresses(PublicIps=[eip])["Addresses"][0]["NetworkInterfaceId"] == eni_b
        b.drop_ip(eip)
        assert not ec2.describe_addresses(PublicIps=[eip])["Addresses"][0].get("NetworkInterfaceId")
        sent = [(r.operation, r.form) for r in front.requests]
    ops = [op for op, _ in sent]
    assert ops == ["AssignPrivateIpAddresses", "AssignPrivateIpAddresses",
                   # moto leaves a reassigned IP on the old ENI too (AWS moves it), so the
                   # old holder's cleanup finds it there and unassigns it
                   "DescribeNetworkInterfaces", "UnassignPrivateIpAddresses",
                   "DescribeAddresses", "AssociateAddress",
                   "DescribeAddresses", "AssociateAddress",
                   "DescribeAddresses",
                   "DescribeAddresses", "DisassociateAddress"]
    assign = sent[1][1]
    assert assign["NetworkInterfaceId"] == eni_b and assign["PrivateIpAddress.1"] == "10.50.1.77"
    assert assign["AllowReassignment"] == "true"
    associate = sent[7][1]
    assert associate["NetworkInterfaceId"] == eni_b and associate["AllowReassociation"] == "true"
    assert associate["AllocationId"].startswith("eipalloc-")


def test_throttling_is_retried(moto: str) -> None:
    w = world(moto)
    with ThrottlingFake(moto, {"AssignPrivateIpAddresses"}, times=2) as front:
        Ec2Mover(w["enis"][0], region="us-east-1", endpoint_url=front.url,
                 backoff=0.01).raise_ip("10.50.1.88")
        assert front.operations() == ["AssignPrivateIpAddresses"] * 3
    assert "10.50.1.88" in private_ips(w["ec2"], w["enis"][0])


def test_access_denied_names_the_missing_action(moto: str) -> None:
    w = world(moto)
    with AwsFake(moto, deny={"AssignPrivateIpAddresses", "AssociateAddress"}) as front:
        mover = Ec2Mover(w["enis"][0], region="us-east-1", endpoint_url=front.url)
        with pytest.raises(MoverError) as private:
            mover.raise_ip("10.50.1.99")
        with pytest.raises(MoverError) as elastic:
            mover.raise_ip(w["eip"])
    assert str(private.value) == ("EC2 refused assign_private_ip_addresses: the instance role "
                                  "lacks IAM permission ec2:AssignPrivateIpAddresses")
    assert "ec2:AssociateAddress" in str(elastic.value) and "\n" not in str(elastic.value)
