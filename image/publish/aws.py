"""``lockgate image publish aws``: the raw disk into an EBS snapshot, then an AMI.

The default route writes the raw disk straight into a new EBS snapshot with the
EBS direct APIs (what awslabs/coldsnap does): 512 KiB blocks with SHA-256
checksums, sent in parallel, all-zero blocks left out (a new snapshot reads
them as zeros), so a 2 GiB disk that is mostly empty uploads in seconds and no
conversion or import job runs. ``--via-s3`` is the classic route for accounts
where the EBS direct APIs are not allowed: the streamOptimized VMDK goes to S3
and ``ImportSnapshot`` (VM Import, which needs the ``vmimport`` service role)
turns it into a snapshot. Either way ``RegisterImage`` then makes the AMI with
every flag an x86_64 appliance needs (the API defaults to i386, no ENA, BIOS).

Credentials and endpoints come from boto3 alone (environment, profiles, SSO,
instance roles; ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``), so the
same code talks to AWS and to moto. Re-running with the same manifest finds the
AMI by its name (derived from the manifest's sha256) and says so.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from lockgate.errors import BadInput, Failure
from lockgate.image.publish.common import (
    Block,
    BlockScan,
    DryRun,
    GiB,
    Manifest,
    Progress,
    denied,
    is_denied,
    parallel_upload,
)

BLOCK_SIZE = 512 * 1024  # the EBS direct APIs' only block size
ROOT_DEVICE = "/dev/xvda"
BOOT_MODES = {"hybrid": "uefi-preferred", "uefi": "uefi", "bios": "legacy-bios"}
TAG_VERSION = "lockgate:version"
TAG_MANIFEST = "lockgate:manifest-sha256"
# Set on a snapshot once every block is in and it is sealed: only such a snapshot is
# reused by a re-run (one left by an upload that died is not).
TAG_SEALED = "lockgate:sealed"
# A just-started snapshot can answer "does not exist" for a few seconds (coldsnap
# retries for two minutes); botocore retries only throttling and 5xx.
BLOCK_ATTEMPTS = 8
SNAPSHOT_WAIT_S = 3600.0
IMPORT_WAIT_S = 4 * 3600.0
POLL_S = 5.0

# IAM actions per API operation where the name differs from "<service>:<operation>".
IAM_ACTION = {
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "HeadBucket"): "s3:ListBucket",
}


def iam_action(service: str, operation: str) -> str:
    return IAM_ACTION.get((service, operation), f"{service}:{operation}")


def boot_mode(firmware: str) -> str:
    try:
        return BOOT_MODES[firmware]
    except KeyError:
        raise BadInput(f"manifest: firmware {firmware!r} is not one of bios, uefi, hybrid") from None


def linear_checksum(digests: dict[int, bytes]) -> str:
    """CompleteSnapshot's LINEAR aggregate: SHA-256 over the blocks' binary SHA-256
    digests in block-index order, base64 (as awslabs/coldsnap computes it)."""
    total = hashlib.sha256()
    for index in sorted(digests):
        total.update(digests[index])
    return base64.b64encode(total.digest()).decode()


def block_checksum(data: bytes) -> tuple[bytes, str]:
    digest = hashlib.sha256(data).digest()
    return digest, base64.b64encode(digest).decode()


@dataclass
class Aws:
    """boto3 clients for one region behind the dry-run recorder and one error translation."""

    plan: DryRun
    region: str
    session: Any = None
    workers: int = 16
    primary: bool = True

    def __post_init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                from botocore.config import Config

                config = Config(retries={"mode": "standard", "max_attempts": 8},
                                max_pool_connections=max(10, self.workers + 4),
                                user_agent_extra="lockgate-publish")
                self._clients[service] = self.session.client(service, region_name=self.region,
                                                             config=config)
            return self._clients[service]

    def call(self, service: str, operation: str, *, show: dict[str, Any] | None = None,
             **args: Any) -> Any:
        """``operation`` (the API's name, e.g. RegisterImage) with ``args``; in a dry run
        only printed (``show`` replaces what is printed, for calls that carry data)."""
        shown = args if show is None else show
        if not self.primary:  # copies: the region is part of what the call does
            shown = {"region": self.region, **shown}
        self.plan.call(service, operation, **shown)
        if self.plan.enabled:
            return None
        method = getattr(self.client(service), _snake(operation))
        return self.translate(service, operation, lambda: method(**args))

    def translate(self, service: str, operation: str, thunk: Callable[[], Any]) -> Any:
        """Run one SDK call; its errors become one ``error:`` line."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return thunk()
        except (ClientError, BotoCoreError) as exc:
            raise self.error(service, operation, exc) from None

    def error(self, service: str, operation: str, exc: Exception) -> Exception:
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
        )

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code, message = error.get("Code"), str(error.get("Message", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if is_denied(code, status):
                return denied("AWS", iam_action(service, operation), message)
            return Failure(f"AWS {service} {operation} failed: {code}: {message}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return Failure("no AWS credentials: boto3 found none (set AWS_PROFILE, "
                           "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO or an instance role)")
        if isinstance(exc, NoRegionError):
            return BadInput("no AWS region: pass --region or set AWS_REGION")
        if isinstance(exc, EndpointConnectionError):
            return Failure(f"AWS {service} {operation}: cannot reach {exc.kwargs.get('endpoint_url')}")
        return Failure(f"AWS {service} {operation} failed: {exc}")


def _snake(operation: str) -> str:
    out = []
    for i, ch in enumerate(operation):
        if ch.isupper() and i and not operation[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def tags_for(manifest: Manifest, name: str) -> list[dict[str, str]]:
    return [{"Key": "Name", "Value": name},
            {"Key": TAG_VERSION, "Value": manifest.version},
            {"Key": TAG_MANIFEST, "Value": manifest.sha256}]


def find_image(aws: Aws, name: str, manifest: Manifest) -> str | None:
    """The AMI of this build if it is already registered under ``name``.

    An AMI of that name from another build is an error (EC2 refuses duplicate names)."""
    found = aws.call("ec2", "DescribeImages", Owners=["self"],
                     Filters=[{"Name": "name", "Values": [name]}])
    if not found:
        return None
    for image in found.get("Images", []):
        tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        if tags.get(TAG_MANIFEST) == manifest.sha256:
            return str(image["ImageId"])
        raise BadInput(f"AMI name {name!r} is taken by {image['ImageId']} in {aws.region}, "
                       f"made from another build (manifest sha256 {tags.get(TAG_MANIFEST, 'unknown')}); "
                       "pass another --name or deregister it")
    return None


def find_snapshot(aws: Aws, manifest: Manifest) -> str | None:
    """A completed snapshot of this build left by an earlier run that stopped before the AMI."""
    found = aws.call("ec2", "DescribeSnapshots", OwnerIds=["self"],
                     Filters=[{"Name": f"tag:{TAG_MANIFEST}", "Values": [manifest.sha256]},
                              {"Name": f"tag:{TAG_SEALED}", "Values": ["true"]},
                              {"Name": "status", "Values": ["completed"]}])
    snapshots = (found or {}).get("Snapshots", [])
    return str(snapshots[0]["SnapshotId"]) if snapshots else None


# --- the EBS direct route ------------------------------------------------------------------


def upload_direct(aws: Aws, manifest: Manifest, name: str, tags: list[dict[str, str]],
                  workers: int) -> tuple[str | None, int]:
    """Write the raw disk into a new snapshot; its id and size in GiB."""
    raw = manifest.artifact("raw")
    size = raw.stat().st_size
    gib = max(1, -(-size // GiB))
    started = aws.call("ebs", "StartSnapshot", VolumeSize=gib, Tags=tags, Timeout=60,
                       Description=f"{name} ({raw.name})")
    scan = BlockScan(raw, BLOCK_SIZE, pad=True)
    if aws.plan.enabled:
        aws.plan.call("ebs", "PutSnapshotBlock", SnapshotId="<new>",
                      BlockIndex=f"<each non-zero block of {scan.blocks}>",
                      DataLength=BLOCK_SIZE, ChecksumAlgorithm="SHA256",
                      Checksum="<base64 SHA-256 of the block>")
        aws.plan.call("ebs", "CompleteSnapshot", SnapshotId="<new>",
                      ChangedBlocksCount="<blocks written>", ChecksumAlgorithm="SHA256",
                      ChecksumAggregationMethod="LINEAR", Checksum="<SHA-256 of the digests>")
        wait_snapshot(aws, "<new>")
        aws.plan.call("ec2", "CreateTags", Resources=["<new>"], Tags=[{"Key": TAG_SEALED, "Value": "true"}])
        return None, gib
    snapshot = str(started["SnapshotId"])
    # AWS answers the block size in bytes, moto in KiB (512): either way 512 KiB.
    if int(started.get("BlockSize", BLOCK_SIZE)) not in (BLOCK_SIZE, BLOCK_SIZE // 1024):
        raise Failure(f"EBS answered block size {started.get('BlockSize')}, expected {BLOCK_SIZE}")
    ebs = aws.client("ebs")
    digests: dict[int, bytes] = {}
    lock = threading.Lock()

    def put(block: Block) -> None:
        digest, checksum = block_checksum(block.data)
        put_block(aws, ebs, snapshot, block, checksum)
        with lock:
            digests[block.index] = digest

    click.echo(f"uploading {raw.name} into snapshot {snapshot} ({gib} GiB, {workers} streams)",
               err=True)
    parallel_upload(scan, put, workers=workers,
                    progress=Progress("ebs snapshot", scan.blocks * BLOCK_SIZE))
    aws.call("ebs", "CompleteSnapshot", SnapshotId=snapshot, ChangedBlocksCount=len(digests),
             ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR",
             Checksum=linear_checksum(digests))
    wait_snapshot(aws, snapshot)
    aws.call("ec2", "CreateTags", Resources=[snapshot], Tags=[{"Key": TAG_SEALED, "Value": "true"}])
    return snapshot, gib


def put_block(aws: Aws, ebs: Any, snapshot: str, block: Block, checksum: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    for attempt in range(BLOCK_ATTEMPTS):
        try:
            ebs.put_snapshot_block(SnapshotId=snapshot, BlockIndex=block.index,
                                   BlockData=block.data, DataLength=len(block.data),
                                   Checksum=checksum, ChecksumAlgorithm="SHA256")
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code != "ResourceNotFoundException" or attempt == BLOCK_ATTEMPTS - 1:
                raise aws.error("ebs", "PutSnapshotBlock", exc) from None
            time.sleep(min(2.0 * (attempt + 1), 10.0))
        except BotoCoreError as exc:
            raise aws.error("ebs", "PutSnapshotBlock", exc) from None


def wait_snapshot(aws: Aws, snapshot: str) -> None:
    """Until the snapshot is ``completed`` (EBS seals it in the background)."""
    progress = Progress(f"snapshot {snapshot} %", 100)
    deadline = time.monotonic() + SNAPSHOT_WAIT_S
    while True:
        found = aws.call("ec2", "DescribeSnapshots", SnapshotIds=[snapshot])
        if found is None:  # dry run
            return
        state = found["Snapshots"][0]
        progress.set(int(str(state.get("Progress", "0%")).rstrip("%") or 0))
        if state["State"] == "completed":
            progress.set(100)
            progress.finish()
            return
        if state["State"] == "error":
            raise Failure(f"snapshot {snapshot} failed: {state.get('StateMessage', 'no reason given')}")
        if time.monotonic() > deadline:
            raise Failure(f"snapshot {snapshot} not completed after {SNAPSHOT_WAIT_S:.0f} s")
        time.sleep(POLL_S)


# --- the S3 + ImportSnapshot route ---------------------------------------------------------


def upload_via_s3(aws: Aws, manifest: Manifest, name: str, tags: list[dict[str, str]],
                  bucket: str, workers: int) -> str | None:
    vmdk = manifest.artifact("vmdk")
    key = f"{name}.vmdk"
    size = vmdk.stat().st_size
    aws.plan.call("s3", "PutObject", Bucket=bucket, Key=key, Body=f"<{vmdk.name}, {size} bytes>",
                  multipart="8 MiB parts" if size > 8 * 1024 * 1024 else "no")
    if not aws.plan.enabled:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig

        progress = Progress("s3 upload", size)
        config = TransferConfig(max_concurrency=workers, multipart_chunksize=8 * 1024 * 1024)

        def advance(n: int) -> None:
            progress.advance(n, n)

        try:
            aws.translate("s3", "PutObject", lambda: aws.client("s3").upload_file(
                str(vmdk), bucket, key, Config=config, Callback=advance,
                ExtraArgs={"Metadata": {"lockgate-manifest-sha256": manifest.sha256}}))
        except S3UploadFailedError as exc:
            if "AccessDenied" in str(exc) or "Forbidden" in str(exc) or "403" in str(exc):
                raise denied("AWS", "s3:PutObject", str(exc)) from None
            raise Failure(f"AWS s3 upload of {key} to {bucket} failed: {exc}") from None
        progress.finish()
    task = aws.call("ec2", "ImportSnapshot", Description=f"{name} ({vmdk.name})",
                    DiskContainer={"Description": name, "Format": "VMDK",
                                   "UserBucket": {"S3Bucket": bucket, "S3Key": key}},
                    TagSpecifications=[{"ResourceType": "import-snapshot-task", "Tags": tags}])
    if task is None:  # dry run
        aws.plan.call("ec2", "DescribeImportSnapshotTasks", ImportTaskIds=["<task>"])
        aws.plan.call("ec2", "CreateTags", Resources=["<imported snapshot>"],
                      Tags=[*tags, {"Key": TAG_SEALED, "Value": "true"}])
        return None
    snapshot = wait_import(aws, str(task["ImportTaskId"]))
    aws.call("ec2", "CreateTags", Resources=[snapshot], Tags=[*tags, {"Key": TAG_SEALED, "Value": "true"}])
    return snapshot


def wait_import(aws: Aws, task_id: str) -> str:
    progress = Progress(f"import {task_id} %", 100)
    deadline = time.monotonic() + IMPORT_WAIT_S
    while True:
        found = aws.call("ec2", "DescribeImportSnapshotTasks", ImportTaskIds=[task_id])
        tasks = found.get("ImportSnapshotTasks", [])
        if not tasks:
            raise Failure(f"import task {task_id} vanished (DescribeImportSnapshotTasks has no such task)")
        detail = tasks[0].get("SnapshotTaskDetail", {})
        status = detail.get("Status", "")
        if status == "completed":
            progress.set(100)
            progress.finish()
            return str(detail["SnapshotId"])
        if status in ("deleted", "deleting", "error"):
            raise Failure(f"import task {task_id} {status}: {detail.get('StatusMessage', 'no reason given')}")
        progress.set(int(detail.get("Progress") or 0))
        if time.monotonic() > deadline:
            raise Failure(f"import task {task_id} not done after {IMPORT_WAIT_S:.0f} s")
        time.sleep(POLL_S)


# --- the AMI -------------------------------------------------------------------------------


def register_args(manifest: Manifest, name: str, snapshot: str, gib: int) -> dict[str, Any]:
    return {
        "Name": name,
        "Description": f"{manifest.name} {manifest.version} (manifest sha256 {manifest.sha256})",
        "Architecture": "x86_64",  # the API's default is i386
        "VirtualizationType": "hvm",
        "RootDeviceName": ROOT_DEVICE,
        "BlockDeviceMappings": [{"DeviceName": ROOT_DEVICE,
                                 "Ebs": {"SnapshotId": snapshot, "VolumeSize": gib,
                                         "VolumeType": "gp3", "DeleteOnTermination": True}}],
        "EnaSupport": True,
        "SriovNetSupport": "simple",
        "BootMode": boot_mode(manifest.firmware),
        "ImdsSupport": "v2.0",
    }


def wait_image(aws: Aws, image: str) -> None:
    if aws.plan.enabled:
        return
    from botocore.exceptions import WaiterError

    try:
        aws.client("ec2").get_waiter("image_available").wait(
            ImageIds=[image], WaiterConfig={"Delay": POLL_S, "MaxAttempts": 720})
    except WaiterError as exc:
        raise Failure(f"AMI {image} in {aws.region} did not become available: {exc}") from None


def share(aws: Aws, image: str, accounts: list[str], public: bool) -> None:
    add: list[dict[str, str]] = [{"UserId": a} for a in accounts]
    if public:
        add.append({"Group": "all"})
    if add:
        aws.call("ec2", "ModifyImageAttribute", ImageId=image, LaunchPermission={"Add": add})


def copy_to(aws: Aws, manifest: Manifest, image: str, name: str, region: str,
            tags: list[dict[str, str]]) -> tuple[Aws, str]:
    target = Aws(aws.plan, region, aws.session, aws.workers, primary=False)
    existing = find_image(target, name, manifest)
    if existing:
        click.echo(f"already in {region}: {existing} ({name})", err=True)
        return target, existing
    copied = target.call("ec2", "CopyImage", SourceImageId=image, SourceRegion=aws.region,
                         Name=name, Description=f"{manifest.name} {manifest.version}",
                         CopyImageTags=True)
    new = "<copy>" if copied is None else str(copied["ImageId"])
    # CopyImageTags copies them in AWS; set them anyway so a re-run finds the copy everywhere.
    target.call("ec2", "CreateTags", Resources=[new], Tags=tags)
    wait_image(target, new)
    return target, new


def aws_session(region: str | None, session: Any) -> Any:
    import boto3
    from botocore.exceptions import BotoCoreError

    # botocore's debug log prints request headers, session token included: keep it quiet
    # even under `lockgate -vv`.
    for logger in ("botocore", "boto3", "s3transfer", "urllib3"):
        log = logging.getLogger(logger)
        log.setLevel(max(log.getEffectiveLevel(), logging.INFO))
    try:
        return session or boto3.session.Session(region_name=region)
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        raise BadInput(f"AWS configuration: {exc}") from None


def publish(manifest: Manifest, *, dry_run: bool, region: str | None = None,
            name: str | None = None, via_s3: bool = False, bucket: str | None = None,
            copy_to_regions: list[str] | None = None, share_with: list[str] | None = None,
            public: bool = False, workers: int = 16, session: Any = None) -> dict[str, str]:
    """Publish and print ``<region> <ami-id>`` lines on stdout; returns them as a dict.

    ``session`` is a boto3 Session to use instead of a new one (tests hook its events).
    A dry run with the region known (``--region``, ``AWS_REGION``) loads no SDK."""
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not (dry_run and region and session is None):
        session = aws_session(region, session)
        region = region or session.region_name
    if not region:
        raise BadInput("no AWS region: pass --region or set AWS_REGION (or a profile's region)")
    plan = DryRun(dry_run)
    aws = Aws(plan, region, session, workers)
    name = name or manifest.image_name(128)
    tags = tags_for(manifest, name)
    boot_mode(manifest.firmware)  # a bad manifest fails before any upload
    results: dict[str, str] = {}

    image = find_image(aws, name, manifest)
    if image:
        click.echo(f"already published: {image} ({name}) in {region}; nothing uploaded", err=True)
    else:
        snapshot = find_snapshot(aws, manifest)
        gib = max(1, -(-manifest.disk_size // GiB))
        if snapshot:
            click.echo(f"reusing snapshot {snapshot} of this build from an earlier run", err=True)
        elif via_s3:
            assert bucket is not None
            snapshot = upload_via_s3(aws, manifest, name, tags, bucket, workers)
        else:
            snapshot, gib = upload_direct(aws, manifest, name, tags, workers)
        registered = aws.call("ec2", "RegisterImage",
                              **register_args(manifest, name, snapshot or "<snapshot>", gib))
        image = "<ami>" if registered is None else str(registered["ImageId"])
        aws.call("ec2", "CreateTags", Resources=[image], Tags=tags)
        wait_image(aws, image)
        if not dry_run:
            click.echo(f"registered {image} ({name}) in {region}", err=True)
    share(aws, image, share_with or [], public)
    results[region] = image
    for other in copy_to_regions or []:
        if other == region:
            continue
        target, copied = copy_to(aws, manifest, image, name, other, tags)
        share(target, copied, share_with or [], public)
        results[other] = copied
    if not dry_run:
        for where, ami in results.items():
            click.echo(f"{where} {ami}")
    return results
