"""The GCE datasource against the metadata emulator over loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from lockgate.firstboot.datasources.base import DatasourceError
from lockgate.firstboot.datasources.gce import GceSource
from lockgate.http import read_url
from lockgate.image.cloudemu import GceMetadata

pytestmark = pytest.mark.timeout(30)

USER_DATA = b"password=Secret123\naccept_license=Yes"


@pytest.fixture
def gce() -> Iterator[GceMetadata]:
    with GceMetadata(user_data=USER_DATA, instance_id="777000111", zone="europe-west1-b",
                     hostname="lg.europe-west1-b.c.p.internal") as emu:
        yield emu


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_fetch_reads_id_hostname_zone_and_user_data(gce: GceMetadata) -> None:
    source = GceSource([gce.url], per_try_timeout=1.0)
    data = source.fetch(timeout=10)
    assert (data.platform, data.instance_id, data.user_data) == ("gce", "777000111", USER_DATA)
    assert data.metadata["local-hostname"] == "lg.europe-west1-b.c.p.internal"
    assert data.metadata["zone"] == "europe-west1-b"
    assert data.metadata["local-ipv4"] == "10.128.0.2"
    assert all(r.headers.get("metadata-flavor") == "Google" for r in gce.requests)


def test_falls_back_to_the_second_address_when_the_first_is_dead(gce: GceMetadata) -> None:
    source = GceSource([dead_url(), gce.url], per_try_timeout=1.0)
    began = time.monotonic()
    data = source.fetch(timeout=10)
    assert data.instance_id == "777000111"
    assert source.base_url == gce.url
    assert time.monotonic() - began < 3


def test_first_address_is_used_when_it_answers(gce: GceMetadata) -> None:
    with GceMetadata(instance_id="999") as second:
        source = GceSource([gce.url, second.url])
        assert source.fetch(timeout=10).instance_id == "777000111"
        assert second.requests == []


def test_missing_user_data_is_none(gce: GceMetadata) -> None:
    gce.set_faults(no_user_data=True)
    assert GceSource(gce.url).fetch(timeout=10).user_data is None


def test_emulator_refuses_requests_without_the_flavor_header(gce: GceMetadata) -> None:
    resp = read_url(gce.url + "/computeMetadata/v1/instance/id")
    assert resp.status == 403
    assert resp.headers["Metadata-Flavor"] == "Google"


def test_a_server_that_is_not_gce_is_not_trusted() -> None:
    from lockgate.image.cloudemu import Ec2Imds

    # Answers 404 without the Metadata-Flavor header: some other service on that address.
    with Ec2Imds() as other:
        began = time.monotonic()
        with pytest.raises(DatasourceError, match="Metadata-Flavor"):
            GceSource(other.url).fetch(timeout=1.0)
        assert time.monotonic() - began < 3


def test_503_burst_then_success_and_all_dead_gives_up(gce: GceMetadata) -> None:
    gce.set_faults(fail_first=3)
    source = GceSource([dead_url(), gce.url], per_try_timeout=1.0)
    assert source.fetch(timeout=15).user_data == USER_DATA
    began = time.monotonic()
    with pytest.raises(DatasourceError, match="not reachable within 1 s"):
        GceSource([dead_url(), dead_url()]).fetch(timeout=1.0)
    assert time.monotonic() - began < 2.5


KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtleWFrZXlha2V5YWtleWFrZXlha2V5YWtleWFr a@x"
KEY_P = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQprojectkey p@x"


def test_ssh_keys_for_admin_from_instance_and_project() -> None:
    instance = {"ssh-keys": f"admin:{KEY_A}\nalice:ssh-ed25519 AAAAother alice\n\n"}
    project = {"ssh-keys": f"admin:{KEY_P}"}
    with GceMetadata(user_data=USER_DATA, attributes=instance,
                     project_attributes=project) as emu:
        data = GceSource([emu.url], per_try_timeout=1.0).fetch(timeout=10)
    assert data.public_keys == (KEY_A, KEY_P)  # only admin's lines, instance first
    assert data.metadata["local-hostname"] == "lockgate-1.us-central1-a.c.demo-project.internal"


def test_block_project_ssh_keys() -> None:
    instance = {"ssh-keys": f"admin:{KEY_A}", "block-project-ssh-keys": "TRUE"}
    with GceMetadata(attributes=instance, project_attributes={"ssh-keys": f"admin:{KEY_P}"}) as emu:
        data = GceSource([emu.url], per_try_timeout=1.0).fetch(timeout=10)
        asked = [r.path for r in emu.requests]
    assert data.public_keys == (KEY_A,)
    assert not any(p.startswith("/computeMetadata/v1/project/") for p in asked)


def test_expired_console_keys_are_left_out() -> None:
    from datetime import UTC, datetime

    from lockgate.firstboot.datasources.gce import gce_ssh_keys

    old = f'admin:{KEY_A} google-ssh {{"userName":"a@x","expireOn":"2020-01-01T00:00:00+0000"}}'
    new = f'admin:{KEY_P} google-ssh {{"userName":"p@x","expireOn":"2099-01-01T00:00:00+00:00"}}'
    keys = gce_ssh_keys(f"{old}\n{new}\n", now=datetime(2026, 1, 1, tzinfo=UTC))
    assert len(keys) == 1 and keys[0].startswith(KEY_P)
