"""Azure publishing: generation, VHD checks, options, page trimming, and the fakes' checks.

The ARM fake's and the blob gate's refusals are tested here on their own, with raw
requests, so a publish test that passes through them means real Azure would have
taken the same requests.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))

import publish_artifacts as pa
from azure_arm import FakeArm
from blob_gate import BlobGate, page_error

from lockgate.errors import BadInput
from lockgate.image.publish import azure
from lockgate.image.publish.common import load_manifest
from lockgate.proc import run

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("firmware", "want"), [("bios", "V1"), ("uefi", "V2"), ("hybrid", "V2")])
def test_hyper_v_generation_follows_the_firmware(firmware: str, want: str) -> None:
    assert azure.hyper_v_generation(firmware) == want


@pytest.fixture(scope="module")
def vhd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vhd")
    return pa.make_vhd(pa.make_raw(out / "small.raw", size=3 * MiB, data=[(0, 4096)]), out)


def test_check_vhd_takes_the_fixed_vhd_the_build_makes(vhd: Path) -> None:
    azure.check_vhd(vhd)


def test_check_vhd_refuses_a_dynamic_vhd_and_a_raw_disk(vhd: Path, tmp_path: Path) -> None:
    raw = pa.make_raw(tmp_path / "d.raw", size=3 * MiB, data=[(0, 4096)])
    dynamic = tmp_path / "dynamic.vhd"
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic",
         str(raw), str(dynamic)])
    for path in (raw, dynamic):
        with pytest.raises(BadInput, match="not a fixed VHD"):
            azure.check_vhd(path)


@pytest.fixture
def manifest(vhd: Path, tmp_path: Path) -> Path:
    return pa.write_manifest(vhd.parent, {"vhd": vhd})


BASE: dict[str, Any] = {"subscription": "s", "resource_group": "rg", "location": "westeurope",
                        "storage_account": "acct", "container": None, "name": None,
                        "gallery": None, "gallery_image": None}


@pytest.mark.parametrize(("change", "message"), [
    ({"location": None}, "--location is required"),
    ({"subscription": None}, "--subscription"),
    ({"storage_account": None}, "--storage-account is required"),
    ({"gallery": "g"}, "--gallery and --gallery-image go together"),
    ({"name": "-bad"}, "an Azure image name"),
])
def test_bad_options_end_in_one_clear_error(manifest: Path, change: dict[str, Any],
                                            message: str) -> None:
    with pytest.raises(BadInput, match=message):
        azure.make_plan(load_manifest(manifest), **(BASE | change))


def test_gallery_version_must_be_major_minor_patch(vhd: Path, tmp_path: Path) -> None:
    m = load_manifest(pa.write_manifest(vhd.parent, {"vhd": vhd}, version="2026.1"))
    with pytest.raises(BadInput, match=r"Major\.Minor\.Patch"):
        azure.make_plan(m, **(BASE | {"gallery": "g", "gallery_image": "i"}))


def test_plan_bodies_have_the_documented_shape(manifest: Path) -> None:
    plan = azure.make_plan(load_manifest(manifest), **BASE)
    assert plan.blob_name == f"{plan.image}.vhd" and plan.container == "images"
    body = plan.image_body("https://acct.blob.core.windows.net/images/x.vhd")
    assert body["properties"] == {"hyperVGeneration": "V2", "storageProfile": {"osDisk": {
        "osType": "Linux", "osState": "Generalized",
        "blobUri": "https://acct.blob.core.windows.net/images/x.vhd"}}}
    assert plan.storage_account_id() == ("/subscriptions/s/resourceGroups/rg/providers/"
                                         "Microsoft.Storage/storageAccounts/acct")


@pytest.mark.parametrize(("data", "want"), [
    (bytes(4 * MiB - 512) + b"\1" * 512, (4 * MiB - 512, 4 * MiB)),
    (b"\1" + bytes(4 * MiB - 1), (0, 512)),
    (bytes(1000) + b"\1" + bytes(3000) + b"\1" + bytes(100), (512, 4096)),
])
def test_trim_keeps_the_non_zero_pages_aligned(data: bytes, want: tuple[int, int]) -> None:
    start, end = azure._trim(data)
    assert (start, end) == want
    assert start % 512 == 0 and end % 512 == 0
    assert not data[:start].strip(b"\0") and not data[end:].strip(b"\0")


def test_dry_run_loads_no_sdk_and_needs_no_credentials(manifest: Path) -> None:
    # A fresh interpreter: the dry run must not import azure.* at all.
    code = ("import sys\nfrom lockgate.cli import root\n"
            "try:\n    root.main(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print(sorted(m for m in sys.modules if m.startswith('azure')))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_"))}
    result = subprocess.run(
        [sys.executable, "-c", code, "image", "publish", "azure", "--manifest", str(manifest),
         "--subscription", "s", "--resource-group", "rg", "--location", "westeurope",
         "--storage-account", "acct", "--dry-run"],
        capture_output=True, text=True, env=env, timeout=60, check=True)
    assert result.stdout.strip().endswith("[]")
    assert "dry-run: compute.images.createOrUpdate" in result.stdout
    assert "https://acct.blob.core.windows.net/images/" in result.stdout


# --- the ARM fake refuses what ARM refuses ---------------------------------------------------

IMAGE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/img?api-version=2026-04-01"
GOOD: dict[str, Any] = {"location": "westeurope", "properties": {
    "hyperVGeneration": "V2", "storageProfile": {"osDisk": {
        "osType": "Linux", "osState": "Generalized", "blobUri": "https://a/images/x.vhd"}}}}


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[FakeArm]:
    with FakeArm(tmp_path) as fake:
        yield fake


def call(arm: FakeArm, method: str, path: str, body: Any = None,
         token: str | None = "yes") -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(arm.cert_path))
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {arm.token if token == 'yes' else token}"
    request = urllib.request.Request(arm.url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def changed(path: list[str], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(GOOD))
    node = body
    for key in path[:-1]:
        node = node[key]
    if value is None:
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    return body


OS_DISK = ["properties", "storageProfile", "osDisk"]


@pytest.mark.parametrize(("body", "status", "code"), [
    (changed(["location"], None), 400, "LocationRequired"),
    (changed([*OS_DISK, "blobUri"], None), 400, "InvalidParameter"),
    (changed([*OS_DISK, "osState"], "generalized"), 400, "InvalidParameter"),
    (changed([*OS_DISK, "osType"], None), 400, "InvalidParameter"),
    (changed(["properties", "hyperVGeneration"], "V3"), 400, "InvalidParameter"),
    (changed(["properties", "storageProfile"], None), 400, "InvalidParameter"),
])
def test_fake_refuses_a_bad_image(arm: FakeArm, body: dict[str, Any], status: int,
                                  code: str) -> None:
    got, reply = call(arm, "PUT", IMAGE, body)
    assert (got, reply["error"]["code"]) == (status, code)
    assert arm.resources == {}


def test_fake_wants_its_token_and_an_api_version(arm: FakeArm) -> None:
    assert call(arm, "GET", IMAGE, token=None)[0] == 401
    assert call(arm, "GET", IMAGE, token="someone-else")[0] == 401
    status, reply = call(arm, "GET", IMAGE.split("?")[0])
    assert (status, reply["error"]["code"]) == (400, "MissingApiVersionParameter")


def test_fake_accepts_a_good_image_as_a_long_running_operation(arm: FakeArm) -> None:
    assert call(arm, "GET", IMAGE)[0] == 404
    status, reply = call(arm, "PUT", IMAGE, GOOD)
    assert (status, reply["properties"]["provisioningState"]) == (201, "Creating")
    assert call(arm, "GET", IMAGE)[1]["properties"]["provisioningState"] == "Creating"
    op = next(iter(arm.operations))
    poll = f"/subscriptions/s/providers/Microsoft.Compute/locations/westeurope/operations/{op}?api-version=1"
    assert [call(arm, "GET", poll)[1]["status"] for _ in range(arm.polls)] == ["InProgress", "Succeeded"]
    assert call(arm, "GET", IMAGE)[1]["properties"]["provisioningState"] == "Succeeded"


def test_fake_forbidden_answers_like_arm(arm: FakeArm) -> None:
    arm.forbidden.add("Microsoft.Compute/images/write")
    status, reply = call(arm, "PUT", IMAGE, GOOD)
    assert (status, reply["error"]["code"]) == (403, "AuthorizationFailed")
    assert "perform action 'Microsoft.Compute/images/write'" in reply["error"]["message"]


GALLERY = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/i"


def test_fake_gallery_rules(arm: FakeArm) -> None:
    definition = {"location": "westeurope", "properties": {
        "osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V2",
        "identifier": {"publisher": "p", "offer": "o", "sku": "s"}}}
    status, reply = call(arm, "PUT", GALLERY + "?api-version=1", definition)
    assert (status, reply["error"]["code"]) == (404, "ParentResourceNotFound")
    arm.galleries.add(("s", "rg", "g"))
    no_identifier = json.loads(json.dumps(definition))
    no_identifier["properties"].pop("identifier")
    assert call(arm, "PUT", GALLERY + "?api-version=1", no_identifier)[0] == 400
    assert call(arm, "PUT", GALLERY + "?api-version=1", definition)[0] == 201
    source = {"uri": "https://a/images/x.vhd", "storageAccountId": "/subscriptions/s/x"}
    version = {"location": "westeurope",
               "properties": {"storageProfile": {"osDiskImage": {"source": source}}}}
    assert call(arm, "PUT", GALLERY + "/versions/1.2?api-version=1", version)[0] == 400
    no_account = json.loads(json.dumps(version))
    no_account["properties"]["storageProfile"]["osDiskImage"]["source"].pop("storageAccountId")
    status, reply = call(arm, "PUT", GALLERY + "/versions/1.2.3?api-version=1", no_account)
    assert status == 400 and "storageAccountId" in reply["error"]["message"]
    assert call(arm, "PUT", GALLERY + "/versions/1.2.3?api-version=1", version)[0] == 201


def test_fake_checks_the_blob_is_a_fixed_vhd(tmp_path: Path, vhd: Path) -> None:
    blobs = {"https://a/images/good.vhd": vhd, "https://a/images/raw.vhd": vhd.with_suffix(".raw")}
    vhd.with_suffix(".raw").write_bytes(bytes(2 * MiB))

    def read(uri: str) -> tuple[int, bytes] | None:
        path = blobs.get(uri)
        if path is None:
            return None
        data = path.read_bytes()
        return len(data), data[-512:]

    with FakeArm(tmp_path, blob_reader=read) as arm:
        for uri, want in (("https://a/images/good.vhd", 201),
                          ("https://a/images/raw.vhd", 400),
                          ("https://a/images/missing.vhd", 400)):
            body = changed([*OS_DISK, "blobUri"], uri)
            assert call(arm, "PUT", IMAGE, body)[0] == want, uri


# --- the blob gate refuses the Put Pages Azure refuses ---------------------------------------

@pytest.mark.parametrize(("start", "end", "body", "want"), [
    (0, 511, 512, None),
    (0, 4 * MiB - 1, 4 * MiB, None),
    (100, 611, 512, "InvalidPageRange"),
    (0, 1000, 1001, "InvalidPageRange"),
    (0, 8 * MiB - 1, 8 * MiB, "RequestBodyTooLarge"),
    (0, 1023, 512, "InvalidHeaderValue"),
])
def test_page_rules(start: int, end: int, body: int, want: str | None) -> None:
    error = page_error({"x-ms-range": f"bytes={start}-{end}"}, body)
    assert (error[1] if error else None) == want


def test_gate_answers_a_bad_put_page_itself() -> None:
    # The upstream is a closed port: a refused page must never be forwarded.
    with BlobGate("http://127.0.0.1:9") as gate:
        host, port = gate.url.removeprefix("http://").split(":")
        for start, length, status, code in ((512, 8 * MiB, 413, "RequestBodyTooLarge"),
                                            (100, 512, 416, "InvalidPageRange")):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("PUT", "/devstoreaccount1/images/x.vhd?comp=page", body=bytes(length),
                         headers={"x-ms-page-write": "update",
                                  "x-ms-range": f"bytes={start}-{start + length - 1}"})
            reply = conn.getresponse()
            assert (reply.status, reply.getheader("x-ms-error-code")) == (status, code)
            assert f"<Code>{code}</Code>" in reply.read().decode()
            conn.close()
        assert gate.pages == [] and [c for _, c in gate.refused] == ["RequestBodyTooLarge",
                                                                       "InvalidPageRange"]


def test_bench_reads_the_summary_lines_publish_prints() -> None:
    from lockgate.benchmarks.publish_emulators import _parse
    from lockgate.image.publish.common import Summary

    line = Summary("upload x.vhd", 256 * MiB, 256 * MiB, 52 * MiB, 0.5, 65, 51).line()
    stderr = (f"{line}\nazure: 14 Put Page calls wrote 52.0 MiB; 79.7 % of the 512-byte "
              "pages were zero and never sent\n")
    up = _parse("azure", stderr)
    assert (up.sent_mib, up.artifact_mib, up.zero_blocks, up.blocks) == (52.0, 256.0, 51, 65)
    assert up.mib_s == 104.0 and up.pages_skipped_share == pytest.approx(0.797)
    gce_line = Summary("upload gs://b/x.tar.gz", 52 * MiB, 52 * MiB, 52 * MiB, 2.0, 0, 0).line()
    assert _parse("gce", gce_line).mib_s == 26.0
