"""`lockgate image publish aws` against moto in server mode, through a strict local front.

moto keeps the snapshot blocks (read back byte for byte) and the images; the front
(aws_fake.AwsFake) checks what moto lets through — block size, per-block and
aggregate checksums, the changed-block count — fakes ImportSnapshot, which moto
lacks, and answers 403 where a test takes a permission away. RegisterImage's
arguments, which moto drops, are read off the request by a botocore event hook.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import emulators
import pytest
from botocore.exceptions import ClientError

from lockgate.errors import Failure
from lockgate.image.publish import aws as publish_aws
from lockgate.image.publish.common import load_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from aws_fake import AwsFake

BLOCK = 512 * 1024
LOCKGATE = str(Path(sys.executable).with_name("lockgate"))
SECRET = "lockgate-test-secret-4f1c9e"  # must never show in any output
TOKEN = "lockgate-test-session-token-77ab"


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with emulators.moto_server() as url:
        yield url


@pytest.fixture
def fake(moto: str) -> Iterator[AwsFake]:
    with AwsFake(moto) as front:
        yield front


def aws_env(endpoint: str) -> dict[str, str]:
    return {**emulators.AWS_TEST_ENV, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_SESSION_TOKEN": TOKEN, "AWS_ENDPOINT_URL": endpoint}


@pytest.fixture
def env(fake: AwsFake, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = aws_env(fake.url)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith(("AWS_PROFILE", "AWS_ENDPOINT_URL_"))]:
        monkeypatch.delenv(key)
    return values


def moto_client(moto: str, service: str, region: str = "us-east-1") -> Any:
    return boto3.client(service, endpoint_url=moto, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_build(folder: Path, *, version: str = "1.2.3", firmware: str = "hybrid") -> dict[str, Any]:
    """A small raw disk (6 MiB + 4 KiB, so the last block is short) with data in some
    blocks, a block of written zeros, holes, and its VMDK and manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"lockgate-{version}.raw"
    blocks = {0: os.urandom(BLOCK), 3: os.urandom(BLOCK // 2) + bytes(BLOCK // 2), 5: os.urandom(BLOCK)}
    with raw.open("wb") as f:
        f.truncate(6 * 1024 * 1024 + 4096)
        for index, data in blocks.items():
            f.seek(index * BLOCK)
            f.write(data)
        f.seek(7 * BLOCK)
        f.write(bytes(BLOCK))  # written zeros: read, found zero, skipped
        f.seek(12 * BLOCK)
        f.write(b"tail" * 1024)
    blocks[12] = (b"tail" * 1024).ljust(BLOCK, b"\0")
    vmdk = folder / f"lockgate-{version}.vmdk"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
                    "subformat=streamOptimized", str(raw), str(vmdk)], check=True, timeout=60)
    artifacts = [{"format": fmt, "path": p.name, "size": p.stat().st_size,
                  "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                 for fmt, p in (("raw", raw), ("vmdk", vmdk))]
    manifest = {"manifest_format": 1, "name": "lockgate", "version": version,
                "firmware": firmware, "disk": {"size": raw.stat().st_size},
                "artifacts": artifacts, "partitions": [], "packages": []}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {"manifest": folder / "manifest.json", "raw": raw, "vmdk": vmdk, "blocks": blocks}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full.update(env)
    return subprocess.run([LOCKGATE, *args], capture_output=True, text=True, env=full,
                          timeout=300, check=False)


def hooked_session() -> tuple[Any, list[dict[str, Any]]]:
    """A boto3 session that records RegisterImage's request as it goes on the wire."""
    session = boto3.session.Session()
    seen: list[dict[str, Any]] = []

    def capture(params: dict[str, Any], **_: Any) -> None:
        seen.append(dict(params["body"]))

    session.events.register("before-call.ec2.RegisterImage", capture)
    return session, seen


def snapshot_blocks(moto: str, snapshot: str) -> dict[int, bytes]:
    ebs = moto_client(moto, "ebs")
    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
    return {b["BlockIndex"]: ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=b["BlockIndex"],
                                                    BlockToken=b["BlockToken"])["BlockData"].read()
            for b in listed}


@pytest.mark.parametrize("firmware, mode", [("hybrid", "uefi-preferred"), ("bios", "legacy-bios")])
def test_raw_disk_goes_into_a_snapshot_and_the_ami_has_every_flag(
        tmp_path: Path, moto: str, fake: AwsFake, env: dict[str, str], firmware: str, mode: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    build = make_build(tmp_path, version=f"1.2.3-{firmware}", firmware=firmware)
    session, requests = hooked_session()
    result = publish_aws.publish(load_manifest(build["manifest"]), dry_run=False, session=session,
                                 region="us-east-1", workers=4)
    ami = result["us-east-1"]
    out, err = capsys.readouterr()
    assert out.strip() == f"us-east-1 {ami}"
    assert fake.errors == []  # the strict checks (block size, checksums, count) all passed

    # Only the non-zero blocks were sent (written zeros and holes skipped) ...
    puts = [r for r in fake.requests if r.operation == "PutSnapshotBlock"]
    assert sorted(int(r.path.rsplit("/", 1)[1]) for r in puts) == sorted(build["blocks"])
    assert "9 of 13 blocks all zero, skipped (69.2 %)" in err
    # ... and moto holds them byte for byte.
    [body] = requests
    snapshot = body["BlockDeviceMapping.1.Ebs.SnapshotId"]
    assert snapshot_blocks(moto, snapshot) == build["blocks"]

    assert body["Architecture"] == "x86_64"
    assert body["VirtualizationType"] == "hvm"
    assert body["EnaSupport"] == "true"
    assert body["SriovNetSupport"] == "simple"
    assert body["BootMode"] == mode
    assert body["ImdsSupport"] == "v2.0"
    assert body["RootDeviceName"] == "/dev/xvda"
    assert body["BlockDeviceMapping.1.DeviceName"] == "/dev/xvda"
    assert body["BlockDeviceMapping.1.Ebs.VolumeType"] == "gp3"
    assert str(body["BlockDeviceMapping.1.Ebs.VolumeSize"]) == "1"
    assert body["BlockDeviceMapping.1.Ebs.DeleteOnTermination"] == "true"

    manifest = load_manifest(build["manifest"])
    [image] = moto_client(moto, "ec2").describe_images(ImageIds=[ami])["Images"]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags["lockgate:version"] == f"1.2.3-{firmware}"
    assert tags["lockgate:manifest-sha256"] == manifest.sha256
    assert image["Name"] == manifest.image_name(128)


def test_a_second_publish_finds_the_image_and_no_secret_is_printed(
        tmp_path: Path, fake: AwsFake, env: dict[str, str]) -> None:
    build = make_build(tmp_path)
    first = cli(env, "-vv", "image", "publish", "aws", "--manifest", str(build["manifest"]))
    assert first.returncode == 0, first.stderr
    ami = first.stdout.split()[-1]
    assert ami.startswith("ami-")
    assert "MiB/s" in first.stderr and "blocks all zero, skipped" in first.stderr
    before = len(fake.requests)

    second = cli(env, "-vv", "image", "publish", "aws", "--manifest", str(build["manifest"]))
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"us-east-1 {ami}"
    assert f"already published: {ami}" in second.stderr
    again = [r.operation for r in fake.requests[before:]]
    assert again == ["DescribeImages"]
    for run in (first, second):
        assert SECRET not in run.stdout + run.stderr
        assert TOKEN not in run.stdout + run.stderr


def test_dry_run_prints_every_call_and_makes_none(tmp_path: Path) -> None:
    build = make_build(tmp_path)
    with AwsFake(None) as recorder:
        done = cli(aws_env(recorder.url), "image", "publish", "aws", "--manifest",
                   str(build["manifest"]), "--dry-run", "--copy-to-regions", "eu-west-1",
                   "--share-with", "111122223333", "--public")
        via_s3 = cli(aws_env(recorder.url), "image", "publish", "aws", "--manifest",
                     str(build["manifest"]), "--dry-run", "--via-s3", "--bucket", "images")
    assert recorder.requests == []
    assert done.returncode == 0, done.stderr
    calls = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("dry-run: ") and "#" not in line.split()[1]]
    for call in ("ec2.DescribeImages", "ebs.StartSnapshot", "ebs.PutSnapshotBlock",
                 "ebs.CompleteSnapshot", "ec2.RegisterImage", "ec2.CreateTags",
                 "ec2.ModifyImageAttribute", "ec2.CopyImage"):
        assert call in calls, done.stdout
    register = next(line for line in done.stdout.splitlines() if "ec2.RegisterImage" in line)
    for arg in ("Architecture='x86_64'", "EnaSupport=True", "BootMode='uefi-preferred'",
                "ImdsSupport='v2.0'", "'VolumeType': 'gp3'", "SriovNetSupport='simple'"):
        assert arg in register
    assert "region='eu-west-1'" in next(line for line in done.stdout.splitlines() if "CopyImage" in line)
    assert "{'Group': 'all'}" in done.stdout and "111122223333" in done.stdout
    assert via_s3.returncode == 0, via_s3.stderr
    for call in ("s3.PutObject", "ec2.ImportSnapshot", "ec2.DescribeImportSnapshotTasks"):
        assert call in via_s3.stdout
    assert "ebs.StartSnapshot" not in via_s3.stdout


@pytest.mark.parametrize("operation, action", [
    ("RegisterImage", "ec2:RegisterImage"),
    ("StartSnapshot", "ebs:StartSnapshot"),
    ("PutSnapshotBlock", "ebs:PutSnapshotBlock"),
])
def test_access_denied_ends_in_one_line_naming_the_iam_action(
        tmp_path: Path, moto: str, operation: str, action: str) -> None:
    build = make_build(tmp_path, version=f"9.0-{operation.lower()}")
    with AwsFake(moto, deny={operation}) as front:
        done = cli(aws_env(front.url), "image", "publish", "aws", "--manifest", str(build["manifest"]))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: access denied: the AWS credentials lack the {action} permission")
    assert len(errors[0]) < 300  # the encoded authorization message is cut
    assert "Traceback" not in done.stderr


def test_the_strict_front_refuses_what_aws_refuses(fake: AwsFake, env: dict[str, str]) -> None:
    """The checks moto does not make are made, so the publish test above can fail."""
    ebs = boto3.client("ebs", endpoint_url=fake.url)
    snapshot = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = os.urandom(BLOCK)
    good = publish_aws.block_checksum(data)[1]
    wrong = publish_aws.block_checksum(data[:-1] + b"x")[1]
    with pytest.raises(ClientError, match="checksum does not match"):
        ebs.put_snapshot_block(SnapshotId=snapshot, BlockIndex=0, BlockData=data, DataLength=BLOCK,
                               Checksum=wrong, ChecksumAlgorithm="SHA256")
    with pytest.raises(ClientError, match="data length"):
        ebs.put_snapshot_block(SnapshotId=snapshot, BlockIndex=0, BlockData=data[:1000],
                               DataLength=1000, Checksum=publish_aws.block_checksum(data[:1000])[1],
                               ChecksumAlgorithm="SHA256")
    with pytest.raises(ClientError, match="outside the 1 GiB volume"):
        ebs.put_snapshot_block(SnapshotId=snapshot, BlockIndex=2048, BlockData=data,
                               DataLength=BLOCK, Checksum=good, ChecksumAlgorithm="SHA256")
    ebs.put_snapshot_block(SnapshotId=snapshot, BlockIndex=1, BlockData=data, DataLength=BLOCK,
                           Checksum=good, ChecksumAlgorithm="SHA256")
    with pytest.raises(ClientError, match="ChangedBlocksCount 2, but 1"):
        ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=2)
    with pytest.raises(ClientError, match="LINEAR"):
        ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=1, ChecksumAlgorithm="SHA256",
                              ChecksumAggregationMethod="LINEAR", Checksum=good)
    ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=1, ChecksumAlgorithm="SHA256",
                          ChecksumAggregationMethod="LINEAR",
                          Checksum=publish_aws.linear_checksum({1: hashlib.sha256(data).digest()}))
    assert len(fake.errors) == 5


def test_via_s3_uploads_the_vmdk_and_imports_it(
        tmp_path: Path, moto: str, fake: AwsFake, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(publish_aws, "POLL_S", 0.05)
    build = make_build(tmp_path, version="2.0.0")
    moto_client(moto, "s3").create_bucket(Bucket="lockgate-images")
    session, requests = hooked_session()
    result = publish_aws.publish(load_manifest(build["manifest"]), dry_run=False, session=session,
                                 region="us-east-1", via_s3=True, bucket="lockgate-images")
    err = capsys.readouterr().err
    assert "s3 upload: sent" in err and "import import-snap-" in err
    [task] = fake.imports.values()
    assert (task.fmt, task.bucket) == ("VMDK", "lockgate-images")
    assert "ebs" not in {r.service for r in fake.requests}
    [body] = requests
    assert body["BlockDeviceMapping.1.Ebs.SnapshotId"] == task.snapshot
    # What the import made of the uploaded VMDK is the raw disk, block for block.
    assert snapshot_blocks(moto, str(task.snapshot)) == build["blocks"]
    assert result["us-east-1"].startswith("ami-")


def test_an_import_aws_would_refuse_ends_with_its_reason(
        tmp_path: Path, moto: str, fake: AwsFake, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish_aws, "POLL_S", 0.05)
    build = make_build(tmp_path, version="2.0.1")
    manifest = json.loads(build["manifest"].read_text())
    build["vmdk"].write_bytes(build["raw"].read_bytes())  # not a VMDK at all
    for entry in manifest["artifacts"]:
        if entry["format"] == "vmdk":
            entry["size"] = build["vmdk"].stat().st_size
    build["manifest"].write_text(json.dumps(manifest))
    moto_client(moto, "s3").create_bucket(Bucket="lockgate-bad")
    with pytest.raises(Failure) as failed:
        publish_aws.publish(load_manifest(build["manifest"]), dry_run=False, region="us-east-1",
                            via_s3=True, bucket="lockgate-bad")
    message = failed.value.format_message()
    assert message.startswith("import task import-snap-") and "deleted" in message
    assert "Unsupported VMDK File Format" in message
    assert "RegisterImage" not in fake.operations("ec2")


def test_copies_and_launch_permissions(tmp_path: Path, moto: str, fake: AwsFake,
                                       env: dict[str, str]) -> None:
    build = make_build(tmp_path, version="3.0.0")
    args = ["image", "publish", "aws", "--manifest", str(build["manifest"]),
            "--copy-to-regions", "eu-west-1", "--share-with", "111122223333", "--public"]
    done = cli(env, *args)
    assert done.returncode == 0, done.stderr
    amis = dict(line.split() for line in done.stdout.splitlines())
    assert set(amis) == {"us-east-1", "eu-west-1"}
    for region, ami in amis.items():
        ec2 = moto_client(moto, "ec2", region)
        permissions = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
        assert {"UserId": "111122223333"} in permissions["LaunchPermissions"]
        assert ec2.describe_images(ImageIds=[ami])["Images"][0]["Public"] is True
    before = len(fake.requests)
    again = cli(env, *args)
    assert again.returncode == 0, again.stderr
    assert dict(line.split() for line in again.stdout.splitlines()) == amis
    assert "CopyImage" not in [r.operation for r in fake.requests[before:]]
