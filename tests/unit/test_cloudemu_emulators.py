"""The metadata emulators themselves: API shapes, fault knobs and lifecycle."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lockgate.http import read_url
from lockgate.image.cloudemu import AzureEmulator, Ec2Imds, GceMetadata, make_cidata_image
from lockgate.proc import run, which

pytestmark = pytest.mark.timeout(30)

TTL = {"X-aws-ec2-metadata-token-ttl-seconds": "300"}


def token(emu: Ec2Imds) -> str:
    return read_url(emu.url + "/latest/api/token", method="PUT", headers=TTL).text()


def test_ec2_token_ttl_is_validated() -> None:
    with Ec2Imds() as emu:
        url = emu.url + "/latest/api/token"
        assert read_url(url, method="PUT").status == 400
        for bad in ("0", "21601", "abc"):
            headers = {"X-aws-ec2-metadata-token-ttl-seconds": bad}
            assert read_url(url, method="PUT", headers=headers).status == 400
        assert read_url(url).status == 405
        proxied = {**TTL, "X-Forwarded-For": "10.9.9.9"}
        assert read_url(url, method="PUT", headers=proxied).status == 403


def test_ec2_bad_token_is_401_even_with_imdsv1_allowed() -> None:
    with Ec2Imds(imdsv1=True, instance_id="i-9") as emu:
        iid = emu.url + "/latest/meta-data/instance-id"
        assert read_url(iid).body == b"i-9"
        assert read_url(iid, headers={"X-aws-ec2-metadata-token": "forged"}).status == 401
        good = {"X-aws-ec2-metadata-token": token(emu)}
        assert read_url(iid, headers=good).body == b"i-9"


def test_ec2_token_max_uses() -> None:
    with Ec2Imds(imdsv1=False) as emu:
        emu.set_faults(token_max_uses=2)
        headers = {"X-aws-ec2-metadata-token": token(emu)}
        iid = emu.url + "/latest/meta-data/instance-id"
        assert [read_url(iid, headers=headers).status for _ in range(3)] == [200, 200, 401]


def test_ec2_listings_and_identity_document() -> None:
    with Ec2Imds(region="ap-south-1", instance_id="i-7") as emu:
        top = read_url(emu.url + "/latest/meta-data/").text().splitlines()
        assert "instance-id" in top and "placement/" in top and "local-ipv4" in top
        placement = read_url(emu.url + "/latest/meta-data/placement").text().splitlines()
        assert placement == ["availability-zone", "region"]
        doc = read_url(emu.url + "/latest/dynamic/instance-identity/document").json()
        assert doc == {"instanceId": "i-7", "region": "ap-south-1",
                       "availabilityZone": "ap-south-1a", "privateIp": "10.0.0.5"}
        assert read_url(emu.url + "/2021-07-15/meta-data/instance-id").body == b"i-7"
        assert read_url(emu.url + "/latest/user-data").status == 404


def test_gce_paths_and_listing() -> None:
    flavor = {"Metadata-Flavor": "Google"}
    with GceMetadata(user_data=b"a=b", attributes={"ssh-keys": "k"}) as emu:
        base = emu.url + "/computeMetadata/v1/"
        attrs = read_url(base + "instance/attributes/", headers=flavor).text().split()
        assert attrs == ["ssh-keys", "user-data"]
        assert read_url(base + "instance/hostname", headers=flavor).text().startswith("lockgate-1")
        assert read_url(base + "project/project-id", headers=flavor).body == b"demo-project"
        assert "instance/" in read_url(base, headers=flavor).text().split()
        assert read_url(base + "instance/nothing", headers=flavor).status == 404
        wrong = {"Metadata-Flavor": "google"}
        assert read_url(base + "instance/id", headers=wrong).status == 403


def test_azure_imds_shapes() -> None:
    with AzureEmulator(user_data=b"k=v") as emu:
        meta = {"Metadata": "true"}
        assert read_url(emu.url + "/metadata/instance", headers=meta).status == 400
        doc = read_url(emu.url + "/metadata/instance?api-version=2021-08-01",
                       headers=meta).json()
        assert isinstance(doc, dict)
        assert doc["compute"]["vmId"] == emu.vm_id
        assert base64.b64decode(doc["compute"]["userData"]) == b"k=v"
        text = read_url(emu.url + "/metadata/instance/compute/userData?api-version=2021-01-01"
                        "&format=text", headers=meta)
        assert base64.b64decode(text.body) == b"k=v"
        err = read_url(emu.url + "/metadata/instance?api-version=2021-08-01")
        assert err.status == 400 and "error" in json.loads(err.body)


def test_azure_wire_server_needs_version_and_valid_xml() -> None:
    with AzureEmulator(incarnation=3) as emu:
        goal = emu.url + "/machine/?comp=goalstate"
        assert read_url(goal).status == 400
        body = read_url(goal, headers={"x-ms-version": "2012-11-30"}).text()
        assert "<Incarnation>3</Incarnation>" in body and emu.container_id in body
        health = emu.url + "/machine?comp=health"
        resp = read_url(health, method="POST", data=b"<Health", headers={"x-ms-version": "x"})
        assert resp.status == 400
        assert emu.health_reports == []


def test_stop_is_prompt_while_a_delayed_reply_is_pending() -> None:
    emu = Ec2Imds().start()
    emu.set_faults(delay=20)
    url = emu.url + "/latest/meta-data/instance-id"
    outcome: list[object] = []
    client = threading.Thread(target=lambda: outcome.append(
        read_url(url, timeout=10, deadline=10, retries=1).status))
    client.start()
    assert emu.wait_arrived(1, timeout=5)  # the handler is now sleeping in the delay
    assert emu.requests == []
    began = time.monotonic()
    emu.stop()
    assert time.monotonic() - began < 3
    client.join(12)
    assert not client.is_alive()


def test_wait_for_request_returns_the_answered_request() -> None:
    with Ec2Imds(user_data=b"x=1") as emu:
        assert emu.wait_for_request("/latest/user-data", timeout=0.2) is None
        client = threading.Thread(target=read_url, args=(emu.url + "/latest/user-data",))
        client.start()
        seen = emu.wait_for_request("/latest/user-data", timeout=5)
        client.join(5)
        assert seen is not None and seen.status == 200


def test_two_emulators_get_their_own_ports() -> None:
    with Ec2Imds() as a, GceMetadata() as b:
        assert a.port != b.port
    with pytest.raises(RuntimeError, match="not running"):
        _ = a.url


@pytest.mark.skipif(not which("mdir"), reason="mtools needed")
def test_make_cidata_image_has_the_files(tmp_path: Path) -> None:
    image = make_cidata_image(tmp_path / "s.img", "u=1", network_config="version: 2\n",
                              vendor_data=b"")
    listing = run(["mdir", "-b", "-i", image, "::"], capture=True,
                  env={"MTOOLS_SKIP_CHECK": "1"}).stdout.decode().split()
    assert sorted(listing) == ["::/meta-data", "::/network-config", "::/user-data",
                               "::/vendor-data"]
    label = run(["mlabel", "-s", "-i", image, "::"], capture=True,
                env={"MTOOLS_SKIP_CHECK": "1"}).stdout.decode()
    assert "CIDATA" in label
    make_cidata_image(image, "u=2")  # replaces an existing image
    assert image.stat().st_size == 1024 * 1024


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVtdWtleWVtdWtleWVtdWtleWVtdWtleWVtdWtleQ e@m"


@pytest.mark.parametrize("cloud", ["ec2", "gce", "azure", "nocloud"])
def test_boot_serves_the_ssh_key_as_each_cloud_does(cloud: str, tmp_path: Path) -> None:
    """``lockgate image boot --ssh-key``: the guest's datasource finds the key and the
    emulator's host name, read the way the appliance reads them."""
    from lockgate.firstboot.datasources import get_source
    from lockgate.image.boot.metadata import Cloud, serve_metadata

    if cloud == "nocloud" and not (shutil.which("mcopy") and shutil.which("mkfs.vfat")):
        pytest.skip("mtools and dosfstools are needed for the CIDATA image")
    with serve_metadata(Cloud(cloud), b"password=x", tmp_path, None, KEY) as route:
        url = f"http://127.0.0.1:{_port_of(route)}" if cloud != "nocloud" else ""
        by_cloud: dict[str, dict[str, Any]] = {
            "ec2": {"ec2": {"base_url": url}}, "gce": {"gce": {"base_urls": [url]}},
            "azure": {"azure": {"imds_url": url, "wireserver_url": url,
                                "ovf_path": tmp_path / "no-media"}},
            "nocloud": {"nocloud": {"seed_dirs": [], "device": tmp_path / "cidata.img"}},
        }
        options = by_cloud[cloud]
        data = get_source(cloud, **options).fetch(timeout=10)
    assert data.public_keys == (KEY,)
    assert route.hostname and data.metadata["local-hostname"] == route.hostname


def _port_of(route: Any) -> int:
    # The guestfwd command ends in the emulator's loopback port (socat or the bridge).
    command = route.guestfwds[0].command
    return int(command.rsplit(":", 1)[-1].split()[-1])
