"""The Azure datasource against the IMDS + wire server emulator over loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from lockgate.firstboot.datasources.azure import AzureSource, custom_data_from_ovf
from lockgate.firstboot.datasources.base import DatasourceError
from lockgate.http import read_url
from lockgate.image.cloudemu import AzureEmulator, ovf_env_xml, write_ovf_env

pytestmark = pytest.mark.timeout(30)

USER_DATA = b"password=Secret123 accept_license=true"
CUSTOM_DATA = b"password=FromCustomData accept_license=y"


@pytest.fixture
def azure() -> Iterator[AzureEmulator]:
    with AzureEmulator(user_data=USER_DATA, vm_id="0f1e2d3c-aaaa-bbbb-cccc-1234567890ab",
                       vm_name="lg-az", location="northeurope") as emu:
        yield emu


def source(emu: AzureEmulator, tmp_path: Path, ovf: Path | None = None) -> AzureSource:
    return AzureSource(emu.url, emu.url, ovf_path=ovf or tmp_path / "no-media",
                       per_try_timeout=1.0)


def test_user_data_from_imds(azure: AzureEmulator, tmp_path: Path) -> None:
    data = source(azure, tmp_path).fetch(timeout=10)
    assert data.platform == "azure"
    assert data.instance_id == "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"
    assert data.user_data == USER_DATA
    assert data.metadata == {"local-hostname": "lg-az", "region": "northeurope",
                             "local-ipv4": "10.0.0.4"}
    first = azure.requests[0]
    assert first.path == "/metadata/instance?api-version=2021-08-01"
    assert first.headers["metadata"] == "true"


def test_custom_data_from_ovf_env_in_a_media_directory(azure: AzureEmulator,
                                                       tmp_path: Path) -> None:
    azure.user_data = None
    media = tmp_path / "media"
    write_ovf_env(media, CUSTOM_DATA)
    data = source(azure, tmp_path, media).fetch(timeout=10)
    assert data.user_data == CUSTOM_DATA


def test_custom_data_from_the_ovf_env_file_itself(azure: AzureEmulator, tmp_path: Path) -> None:
    azure.set_faults(no_user_data=True)
    ovf = write_ovf_env(tmp_path / "m", CUSTOM_DATA)
    assert source(azure, tmp_path, ovf).fetch(timeout=10).user_data == CUSTOM_DATA


def test_imds_user_data_wins_over_custom_data(azure: AzureEmulator, tmp_path: Path) -> None:
    media = tmp_path / "media"
    write_ovf_env(media, CUSTOM_DATA)
    assert source(azure, tmp_path, media).fetch(timeout=10).user_data == USER_DATA


def test_no_user_data_anywhere_is_none(azure: AzureEmulator, tmp_path: Path) -> None:
    azure.user_data = None
    media = tmp_path / "media"
    write_ovf_env(media, None)
    assert source(azure, tmp_path, media).fetch(timeout=10).user_data is None
    assert source(azure, tmp_path).fetch(timeout=10).user_data is None


def test_bad_custom_data_is_a_clear_error() -> None:
    bad = ovf_env_xml(None).replace("</UserName>", "</UserName><CustomData>@@@</CustomData>")
    with pytest.raises(DatasourceError, match="CustomData is not valid base64"):
        custom_data_from_ovf(bad.encode())
    with pytest.raises(DatasourceError, match="not XML"):
        custom_data_from_ovf(b"<Environment")


def test_imds_refuses_requests_without_the_metadata_header(azure: AzureEmulator) -> None:
    resp = read_url(azure.url + "/metadata/instance?api-version=2021-08-01")
    assert resp.status == 400
    assert "metadata header" in resp.text()


def test_report_ready_posts_the_goal_state_ids(azure: AzureEmulator, tmp_path: Path) -> None:
    assert source(azure, tmp_path).report_ready(timeout=10) is True
    assert len(azure.health_reports) == 1
    report = azure.health_reports[0]
    assert report.container_id == azure.container_id
    assert report.instance_id == azure.role_instance_id
    assert report.incarnation == "1"
    assert report.state == "Ready"
    goal = azure.requests_to("/machine/?comp=goalstate")[0]
    assert goal.headers["x-ms-version"] == "2012-11-30"
    post = azure.requests_to("/machine/?comp=health")[0]
    assert post.method == "POST"
    assert post.headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(post.body)
    assert root.tag == "Health"
    assert root.findtext("Container/RoleInstanceList/Role/Health/State") == "Ready"


def test_report_ready_survives_a_503_burst(azure: AzureEmulator, tmp_path: Path) -> None:
    azure.set_faults(fail_first=2)
    assert source(azure, tmp_path).report_ready(timeout=10) is True
    assert [r.state for r in azure.health_reports] == ["Ready"]


def test_report_failure_says_not_ready_and_why(azure: AzureEmulator, tmp_path: Path) -> None:
    assert source(azure, tmp_path).report_failure("bad user-data: password", timeout=10)
    report = azure.health_reports[0]
    assert (report.state, report.substatus) == ("NotReady", "ProvisioningFailed")
    assert report.description == "bad user-data: password"


def test_report_ready_failure_is_reported_not_raised(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    src = AzureSource(dead, dead, ovf_path=tmp_path / "none", per_try_timeout=0.5)
    began = time.monotonic()
    assert src.report_ready(timeout=1.0) is False
    assert time.monotonic() - began < 2.5
    assert src.last_report_error and "connection refused" in src.last_report_error


def test_wrong_container_id_is_rejected_by_the_emulator(azure: AzureEmulator,
                                                        tmp_path: Path) -> None:
    from lockgate.firstboot.datasources.azure import GoalState, health_report_xml

    body = health_report_xml(GoalState("1", "not-the-container", azure.role_instance_id))
    resp = read_url(azure.url + "/machine/?comp=health", method="POST", data=body,
                    headers={"x-ms-version": "2012-11-30"})
    assert resp.status == 400
    assert azure.health_reports == []


def test_imds_outage_is_a_datasource_error(azure: AzureEmulator, tmp_path: Path) -> None:
    azure.set_faults(fail_first=1000)
    with pytest.raises(DatasourceError, match=r"Azure IMDS unreachable: .*HTTP 503"):
        source(azure, tmp_path).fetch(timeout=1.0)


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGF6dXJla2V5YXp1cmVrZXlhenVyZWtleWF6dXJla2V5 az@x"


def test_ssh_keys_from_imds_compute_public_keys(tmp_path: Path) -> None:
    with AzureEmulator(user_data=USER_DATA, public_keys=[KEY], vm_name="lg-keys") as emu:
        data = source(emu, tmp_path).fetch(timeout=10)
    assert data.public_keys == (KEY,)
    assert data.metadata["local-hostname"] == "lg-keys"


def test_ssh_keys_from_ovf_env_when_imds_has_none(azure: AzureEmulator, tmp_path: Path) -> None:
    media = tmp_path / "media"
    write_ovf_env(media, None, ssh_keys=[KEY])
    data = source(azure, tmp_path, media).fetch(timeout=10)
    assert data.public_keys == (KEY,)
    assert data.user_data == USER_DATA  # IMDS user-data still wins
