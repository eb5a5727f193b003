"""GCE publishing: what the image claims, the names it makes, and the compute fake's checks.

The fake's validations are tested here on their own (raw HTTP, no SDK), so a publish
test that passes against it means the real API would have taken the same request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))

import publish_artifacts as pa
from gce_compute import FakeCompute

from lockgate.errors import BadInput
from lockgate.image.publish import gce
from lockgate.image.publish.common import load_manifest


@pytest.mark.parametrize(("firmware", "drivers", "sev", "want"), [
    ("hybrid", ["gve", "nvme"], False, ["GVNIC", "UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE"]),
    ("uefi", ["nvme"], False, ["UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE"]),
    ("bios", ["gve"], False, ["GVNIC", "VIRTIO_SCSI_MULTIQUEUE"]),
    ("uefi", [], True, ["SEV_CAPABLE", "UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE"]),
])
def test_guest_os_features_only_what_the_image_has(firmware: str, drivers: list[str], sev: bool,
                                                   want: list[str]) -> None:
    assert gce.guest_os_features(firmware, drivers, sev) == want


def test_sev_on_a_bios_image_is_refused() -> None:
    with pytest.raises(BadInput, match="SEV needs UEFI"):
        gce.guest_os_features("bios", [], True)


@pytest.mark.parametrize(("text", "want"), [
    ("1.2.3", "1-2-3"), ("2026.12.1+RC1", "2026-12-1-rc1"), ("x" * 80, "x" * 63)])
def test_label_value_follows_the_label_rules(text: str, want: str) -> None:
    assert gce.label_value(text) == want
    assert gce.LABEL_VALUE_RE.fullmatch(want)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    tar = tmp_path / "lockgate.gce.tar.gz"
    tar.write_bytes(b"not really a tarball")
    return pa.write_manifest(tmp_path, {"gce": tar})


@pytest.mark.parametrize(("options", "message"), [
    ({"project": None}, "--project is required"),
    ({"bucket": None}, "--bucket is required"),
    ({"name": "Lockgate_1"}, "a GCE image name is"),
    ({"name": "lockgate-"}, "a GCE image name is"),
    ({"family": "9lives"}, "a GCE image family is"),
])
def test_bad_options_end_in_one_clear_error(manifest: Path, options: dict[str, Any],
                                            message: str) -> None:
    args: dict[str, Any] = {"project": "p", "bucket": "b", "name": None, "family": None}
    args.update(options)
    with pytest.raises(BadInput, match=message):
        gce.make_plan(load_manifest(manifest), **args)


def test_plan_names_labels_and_body(manifest: Path) -> None:
    m = load_manifest(manifest)
    plan = gce.make_plan(m, project="p", bucket="images", name=None, family=None)
    assert plan.image == m.image_name() and gce.NAME_RE.fullmatch(plan.image)
    assert plan.object_name == f"{plan.image}.tar.gz"
    assert plan.labels == {"version": "1-2-3", "manifest-sha256": m.sha256[:32]}
    body = plan.image_body()
    assert body["rawDisk"] == {"source": f"https://storage.googleapis.com/images/{plan.image}.tar.gz",
                               "containerType": "TAR"}
    assert body["family"] == "lockgate" and body["architecture"] == "X86_64"


def test_a_manifest_without_the_driver_list_claims_no_gvnic(tmp_path: Path) -> None:
    tar = tmp_path / "lockgate.gce.tar.gz"
    tar.write_bytes(b"x")
    m = load_manifest(pa.write_manifest(tmp_path, {"gce": tar}, drivers=None))
    assert "GVNIC" not in gce.make_plan(m, project="p", bucket="b", name=None, family=None).features


# --- the fake refuses what GCE refuses ------------------------------------------------------

GOOD: dict[str, Any] = {
    "name": "lockgate-1", "family": "lockgate", "architecture": "X86_64",
    "labels": {"version": "1-2-3", "manifest-sha256": "ab" * 16},
    "guestOsFeatures": [{"type": "UEFI_COMPATIBLE"}],
    "rawDisk": {"source": "https://storage.googleapis.com/lockgate-images/x.tar.gz",
                "containerType": "TAR"},
}


def post(fake: FakeCompute, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(fake.url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def with_(change: dict[str, Any], drop: str | None = None) -> dict[str, Any]:
    body = json.loads(json.dumps(GOOD))
    body.update(change)
    if drop:
        body.pop(drop)
    return body


@pytest.mark.parametrize(("body", "words"), [
    (with_({}, drop="rawDisk"), "rawDisk.source"),
    (with_({"rawDisk": {"containerType": "TAR"}}), "rawDisk.source"),
    (with_({"rawDisk": {"source": "gs://lockgate-images/x.tar.gz"}}), "Google Cloud Storage URL"),
    (with_({"raw_disk": GOOD["rawDisk"]}, drop="rawDisk"), 'Unknown name "raw_disk"'),
    (with_({"labels": {"version": "1.2.3"}}), "label value '1.2.3'"),
    (with_({"labels": {"Version": "1"}}), "label key 'Version'"),
    (with_({"labels": {"version": "x" * 64}}), "label value"),
    (with_({"name": "Lockgate"}), "resource.name"),
    (with_({"family": "lockgate-"}), "resource.family"),
    (with_({"guestOsFeatures": [{"type": "UEFI"}]}), "guestOsFeatures"),
    (with_({"architecture": "x86_64"}), "architecture"),
])
def test_fake_refuses_what_images_insert_refuses(body: dict[str, Any], words: str) -> None:
    with FakeCompute() as fake:
        status, reply = post(fake, "/compute/v1/projects/p/global/images", body)
        assert status == 400, reply
        assert words in reply["error"]["message"]
        assert reply["error"]["errors"][0]["reason"] == "invalid"
        assert fake.operations == {}


def test_fake_accepts_a_good_image_and_finishes_its_operation() -> None:
    with FakeCompute(polls=2) as fake:
        status, op = post(fake, "/compute/v1/projects/p/global/images", GOOD)
        assert (status, op["status"]) == (200, "RUNNING")
        assert post(fake, "/compute/v1/projects/p/global/images", GOOD)[0] == 409
        wait = f"/compute/v1/projects/p/global/operations/{op['name']}/wait"
        assert post(fake, wait)[1]["status"] == "RUNNING"
        assert post(fake, wait)[1] == {**post(fake, wait)[1], "status": "DONE", "progress": 100}
        assert fake.images[("p", "lockgate-1")]["status"] == "READY"


def test_fake_operation_fails_when_the_source_object_is_missing() -> None:
    # Pointed at a storage endpoint with no such object (the fake itself: 404 for objects).
    with FakeCompute(polls=1) as storage, FakeCompute(polls=1, storage_url=storage.url) as fake:
        _, op = post(fake, "/compute/v1/projects/p/global/images", GOOD)
        _, done = post(fake, f"/compute/v1/projects/p/global/operations/{op['name']}/wait")
    assert done["status"] == "DONE"
    assert done["error"]["errors"][0]["code"] == "RESOURCE_NOT_FOUND"
    assert ("p", "lockgate-1") not in fake.images


def test_dry_run_loads_no_sdk_and_needs_no_credentials(manifest: Path) -> None:
    # A fresh interpreter with no Google settings: the dry run imports no google.* module.
    code = ("import sys\nfrom lockgate.cli import root\n"
            "try:\n    root.main(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print(sorted(m for m in sys.modules if m.startswith('google')))\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "CLOUDSDK_", "STORAGE_EMULATOR_HOST"))}
    result = subprocess.run(
        [sys.executable, "-c", code, "image", "publish", "gce", "--manifest", str(manifest),
         "--project", "p", "--bucket", "images", "--dry-run"],
        capture_output=True, text=True, env=env, timeout=60, check=True)
    assert result.stdout.strip().endswith("[]")
    calls = [line.split()[1] for line in result.stdout.splitlines()
             if line.startswith("dry-run:") and not line.startswith("dry-run: #")]
    assert calls == ["compute.images.get", "storage.objects.get", "storage.objects.insert",
                     "compute.images.insert", "compute.globalOperations.wait"]
