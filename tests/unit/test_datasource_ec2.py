"""The EC2 datasource against the IMDS emulator over loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lockgate.firstboot.datasources.base import DatasourceError
from lockgate.firstboot.datasources.ec2 import Ec2Source
from lockgate.image.cloudemu import Ec2Imds
from lockgate.image.cloudemu.base import Reply

pytestmark = pytest.mark.timeout(30)

USER_DATA = b"password=Secret123 accept_license=y"


@pytest.fixture
def imds() -> Iterator[Ec2Imds]:
    with Ec2Imds(user_data=USER_DATA, instance_id="i-0abc123", region="eu-west-1",
                 local_ipv4="10.1.2.3", imdsv1=False) as emu:
        yield emu


def source(emu: Ec2Imds) -> Ec2Source:
    return Ec2Source(emu.url, per_try_timeout=1.0)


def test_fetch_reads_id_region_and_user_data_with_a_session_token(imds: Ec2Imds) -> None:
    data = source(imds).fetch(timeout=10)
    assert data.platform == "ec2"
    assert data.instance_id == "i-0abc123"
    assert data.user_data == USER_DATA
    assert data.metadata["region"] == "eu-west-1"
    assert data.metadata["availability-zone"] == "eu-west-1a"
    assert data.metadata["local-ipv4"] == "10.1.2.3"
    puts = [r for r in imds.requests if r.method == "PUT"]
    assert len(puts) == 1
    assert puts[0].headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    gets = [r for r in imds.requests if r.method == "GET"]
    assert gets and all("x-aws-ec2-metadata-token" in r.headers for r in gets)
    assert all(r.status == 200 for r in gets if "user-data" in r.path or "instance-id" in r.path)


def test_no_user_data_is_none(imds: Ec2Imds) -> None:
    imds.set_faults(no_user_data=True)
    data = source(imds).fetch(timeout=10)
    assert data.user_data is None
    assert data.instance_id == "i-0abc123"


def test_expired_token_is_renewed_once(imds: Ec2Imds) -> None:
    imds.set_faults(token_max_uses=2)
    data = source(imds).fetch(timeout=10)
    assert data.user_data == USER_DATA
    assert imds.tokens_issued >= 2
    assert any(r.status == 401 for r in imds.requests)


def test_token_rejected_twice_is_an_error(imds: Ec2Imds) -> None:
    imds.set_faults(token_max_uses=0)
    with pytest.raises(DatasourceError, match=r"401 .*even with a fresh session token"):
        source(imds).fetch(timeout=10)
    assert imds.tokens_issued == 2


def test_token_403_fails_fast(imds: Ec2Imds) -> None:
    imds.set_faults(token_forbidden=True)
    began = time.monotonic()
    with pytest.raises(DatasourceError, match=r"refused a session token \(403\).*hop limit"):
        source(imds).fetch(timeout=30)
    assert time.monotonic() - began < 2
    assert len(imds.requests) == 1


def test_imdsv1_disabled_refuses_tokenless_reads(imds: Ec2Imds) -> None:
    from lockgate.http import read_url

    assert read_url(imds.url + "/latest/meta-data/instance-id").status == 401
    imds.imdsv1 = True
    assert read_url(imds.url + "/latest/meta-data/instance-id").body == b"i-0abc123"


def test_imdsv1_only_service_without_token_endpoint() -> None:
    class V1Only(Ec2Imds):
        def route(self, method: str, path: str, query: dict[str, list[str]],
                  headers: dict[str, str], body: bytes) -> Reply:
            if path == "/latest/api/token":
                return Reply(404, b"Not Found\n")
            return super().route(method, path, query, headers, body)

    with V1Only(user_data=b"x=1", instance_id="i-v1", imdsv1=True) as emu:
        data = source(emu).fetch(timeout=10)
    assert (data.instance_id, data.user_data) == ("i-v1", b"x=1")


def test_503_burst_then_success(imds: Ec2Imds) -> None:
    imds.set_faults(fail_first=2)
    data = source(imds).fetch(timeout=20)
    assert data.instance_id == "i-0abc123"
    assert [r.status for r in imds.requests[:3]] == [503, 503, 200]


def test_unreachable_service_gives_up_at_the_deadline() -> None:
    with Ec2Imds() as emu:
        url = emu.url
    began = time.monotonic()
    with pytest.raises(DatasourceError, match=r"EC2 metadata service unreachable: .*gave up"):
        Ec2Source(url, per_try_timeout=0.5).fetch(timeout=1.0)
    assert time.monotonic() - began < 3


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5Zm9ybG9ja2dhdGVlMmV0ZXN0cw lg@test"


def test_the_launch_key_pair_and_host_name(tmp_path: object) -> None:
    with Ec2Imds(user_data=USER_DATA, imdsv1=False, ssh_keys=[KEY],
                 hostname="ip-10-9-8-7.eu-west-1.compute.internal") as emu:
        data = source(emu).fetch(timeout=10)
        listing = emu.requests_to("/latest/meta-data/public-keys/")
    assert data.public_keys == (KEY,)
    assert data.metadata["local-hostname"] == "ip-10-9-8-7.eu-west-1.compute.internal"
    assert [r.path for r in listing][:2] == ["/latest/meta-data/public-keys/",
                                             "/latest/meta-data/public-keys/0/openssh-key"]
    assert all("x-aws-ec2-metadata-token" in r.headers for r in listing)  # IMDSv2


def test_no_key_pair_is_no_keys(imds: Ec2Imds) -> None:
    assert source(imds).fetch(timeout=10).public_keys == ()
