"""A strict local front for moto: what moto accepts but AWS refuses, and what moto lacks.

``AwsFake`` listens on a kernel-chosen loopback port and forwards every request to
moto (in server mode), except:

* EBS direct (what moto does not check, /work/shared/CLOUD-EMULATORS.md §1, §5):
  ``PutSnapshotBlock`` must carry exactly 512 KiB, ``x-amz-Data-Length`` equal to
  it, ``x-amz-Checksum-Algorithm: SHA256`` and ``x-amz-Checksum`` equal to the
  base64 SHA-256 of the data, a block index inside the volume, and a snapshot
  that is started and not yet completed; ``CompleteSnapshot``'s
  ``ChangedBlocksCount`` must equal the blocks written and its LINEAR checksum
  (SHA-256 of the blocks' digests in index order) must match. A violation is
  answered as AWS does (400 ``ValidationException``) and recorded in ``errors``.
* EC2 ``ImportSnapshot`` / ``DescribeImportSnapshotTasks`` (moto: 500
  NotImplementedError): the disk is read from moto's S3, must exist and be a
  streamOptimized VMDK (else the task ends ``deleted`` with AWS's ClientError
  message), is converted back with qemu-img and written into a real moto snapshot,
  so the test can read the imported bytes back; the task reports ``active`` with a
  progress first, then ``completed``.
* ``deny``: operations answered 403 in each service's own error shape
  (EC2 ``UnauthorizedOperation`` XML, EBS ``AccessDeniedException`` JSON, S3
  ``AccessDenied`` XML), as a caller without the IAM permission sees them.

Every request is recorded (service, operation, form/headers) in ``requests``.
With no upstream every request is recorded and answered 500: a dry run must make none.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import subprocess
import tempfile
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from loopback import LoopbackServer, read_body

BLOCK = 512 * 1024
EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
              "date", "server"}


@dataclass
class Request:
    service: str
    operation: str
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    body_size: int


@dataclass
class Snapshot:
    gib: int
    digests: dict[int, bytes] = field(default_factory=dict)
    completed: bool = False


@dataclass
class ImportTask:
    task_id: str
    bucket: str
    key: str
    fmt: str
    snapshot: str | None
    status_message: str
    polls: int = 0


def _service(headers: Any) -> str:
    match = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
    return match.group(1) if match else "unknown"


def _ebs_operation(method: str, path: str) -> str:
    if method == "POST" and path == "/snapshots":
        return "StartSnapshot"
    if method == "PUT" and re.fullmatch(r"/snapshots/[^/]+/blocks/\d+", path):
        return "PutSnapshotBlock"
    if method == "POST" and path.startswith("/snapshots/completion/"):
        return "CompleteSnapshot"
    if method == "GET" and re.fullmatch(r"/snapshots/[^/]+/blocks", path):
        return "ListSnapshotBlocks"
    if method == "GET" and re.fullmatch(r"/snapshots/[^/]+/blocks/\d+", path):
        return "GetSnapshotBlock"
    return f"{method} {path}"


def _s3_operation(method: str, path: str, query: dict[str, list[str]]) -> str:
    has_key = path.strip("/").count("/") >= 1
    if method == "PUT":
        return "UploadPart" if "partNumber" in query else ("PutObject" if has_key else "CreateBucket")
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    return "GetObject" if has_key else "ListObjects"


class AwsFake(LoopbackServer):
    def __init__(self, upstream: str | None, *, deny: set[str] | None = None) -> None:
        self.upstream = urllib.parse.urlsplit(upstream) if upstream else None
        self.deny = set(deny or ())
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.snapshots: dict[str, Snapshot] = {}
        self.imports: dict[str, ImportTask] = {}
        self.lock = threading.Lock()
        super().__init__()

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        self.handle(handler, read_body(handler))

    def operations(self, service: str | None = None) -> list[str]:
        with self.lock:
            return [r.operation for r in self.requests if service in (None, r.service)]

    # --- dispatch ------------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        split = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        service = _service(h.headers)
        form: dict[str, str] = {}
        if service == "ec2":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
            operation = form.get("Action", "?")
        elif service == "ebs":
            operation = _ebs_operation(h.command, split.path)
        elif service == "s3":
            operation = _s3_operation(h.command, split.path, query)
        else:
            operation = f"{h.command} {split.path}"
        with self.lock:
            self.requests.append(Request(service, operation, h.command, split.path,
                                         dict(h.headers.items()), form, len(body)))
        if operation in self.deny:
            return self.denied(h, service, operation)
        if self.upstream is None:
            return self.reply(h, 500, b"no upstream: this fake only records", "text/plain")
        if service == "ebs" and operation in ("PutSnapshotBlock", "CompleteSnapshot"):
            problem = self.check_ebs(operation, split.path, h.headers, body)
            if problem:
                with self.lock:
                    self.errors.append(f"{operation}: {problem}")
                return self.reply(h, 400, json.dumps({"Message": problem, "Reason": "INVALID_PARAMETER"}).encode(),
                                  "application/json", {"x-amzn-ErrorType": "ValidationException"})
        if service == "ec2" and operation == "ImportSnapshot":
            return self.import_snapshot(h, form)
        if service == "ec2" and operation == "DescribeImportSnapshotTasks":
            return self.describe_import_tasks(h, form)
        status, headers, answer = self.forward(h, split, body)
        if service == "ebs" and operation == "StartSnapshot" and status < 300:
            started = json.loads(answer)
            with self.lock:
                self.snapshots[started["SnapshotId"]] = Snapshot(int(json.loads(body)["VolumeSize"]))
        if service == "ebs" and operation == "PutSnapshotBlock" and status < 300:
            snapshot, index = self._block(split.path)
            with self.lock:
                self.snapshots[snapshot].digests[index] = hashlib.sha256(body).digest()
        if service == "ebs" and operation == "CompleteSnapshot" and status < 300:
            with self.lock:
                self.snapshots[split.path.rsplit("/", 1)[1]].completed = True
        self.reply(h, status, answer, headers.pop("content-type", "application/xml"), headers)

    def forward(self, h: BaseHTTPRequestHandler, split: urllib.parse.SplitResult,
                body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.upstream is not None and self.upstream.hostname and self.upstream.port
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = self.upstream.netloc
            headers["Content-Length"] = str(len(body))
            path = split.path + (f"?{split.query}" if split.query else "")
            conn.request(h.command, path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            out = {k.lower(): v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
            return response.status, out, answer
        finally:
            conn.close()

    def reply(self, h: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    # --- 403 in each service's shape -----------------------------------------------------

    def denied(self, h: BaseHTTPRequestHandler, service: str, operation: str) -> None:
        who = "User: arn:aws:iam::123456789012:user/ci is not authorized to perform"
        if service == "ec2":
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                    f"<Code>UnauthorizedOperation</Code><Message>You are not authorized to perform "
                    f"this operation. {who}: ec2:{operation} because no identity-based policy allows "
                    f"the ec2:{operation} action. Encoded authorization failure message: "
                    f"{'x' * 400}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID>"
                    f"</Response>").encode()
            return self.reply(h, 403, body, "text/xml;charset=UTF-8")
        if service == "ebs":
            body = json.dumps({"Message": f"{who}: ebs:{operation}",
                               "Reason": "UNAUTHORIZED_ACCOUNT"}).encode()
            return self.reply(h, 403, body, "application/json",
                              {"x-amzn-ErrorType": "AccessDeniedException"})
        body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message><RequestId>1</RequestId></Error>")
        return self.reply(h, 403, body, "application/xml")

    # --- EBS direct: what AWS validates and moto does not --------------------------------

    @staticmethod
    def _block(path: str) -> tuple[str, int]:
        parts = path.split("/")
        return parts[2], int(parts[4])

    def check_ebs(self, operation: str, path: str, headers: Any, body: bytes) -> str | None:
        if operation == "PutSnapshotBlock":
            snapshot_id, index = self._block(path)
            with self.lock:
                snapshot = self.snapshots.get(snapshot_id)
            if snapshot is None:
                return f"snapshot {snapshot_id} was not started here"
            if snapshot.completed:
                return f"snapshot {snapshot_id} is already completed"
            if len(body) != BLOCK or headers.get("x-amz-Data-Length") != str(BLOCK):
                return f"block {index}: data length {len(body)} (header {headers.get('x-amz-Data-Length')}), must be {BLOCK}"
            if not 0 <= index < snapshot.gib * (1 << 30) // BLOCK:
                return f"block index {index} is outside the {snapshot.gib} GiB volume"
            if headers.get("x-amz-Checksum-Algorithm") != "SHA256":
                return "x-amz-Checksum-Algorithm must be SHA256"
            if headers.get("x-amz-Checksum") != base64.b64encode(hashlib.sha256(body).digest()).decode():
                return f"block {index}: the checksum does not match the data"
            return None
        snapshot_id = path.rsplit("/", 1)[1]
        with self.lock:
            snapshot = self.snapshots.get(snapshot_id)
            if snapshot is None:
                return f"snapshot {snapshot_id} was not started here"
            count = headers.get("x-amz-ChangedBlocksCount")
            if count != str(len(snapshot.digests)):
                return f"ChangedBlocksCount {count}, but {len(snapshot.digests)} blocks were written"
            checksum = headers.get("x-amz-Checksum")
            if checksum is not None:
                if (headers.get("x-amz-Checksum-Algorithm") != "SHA256"
                        or headers.get("x-amz-Checksum-Aggregation-Method") != "LINEAR"):
                    return "aggregate checksum needs SHA256 and LINEAR"
                total = hashlib.sha256(b"".join(snapshot.digests[i] for i in sorted(snapshot.digests)))
                if checksum != base64.b64encode(total.digest()).decode():
                    return "the aggregate (LINEAR) checksum does not match the blocks written"
        return None

    # --- ImportSnapshot: moto lacks it ---------------------------------------------------

    def _moto(self, service: str) -> Any:
        import boto3

        assert self.upstream is not None
        return boto3.client(service, endpoint_url=self.upstream.geturl(), region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def import_snapshot(self, h: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        bucket = form.get("DiskContainer.UserBucket.S3Bucket", "")
        key = form.get("DiskContainer.UserBucket.S3Key", "")
        fmt = form.get("DiskContainer.Format", "")
        if fmt not in ("VMDK", "VHD", "RAW") or not bucket or not key:
            body = (f"<Response><Errors><Error><Code>InvalidParameter</Code><Message>DiskContainer: "
                    f"Format {fmt!r}, S3Bucket {bucket!r}, S3Key {key!r}</Message></Error></Errors>"
                    f"<RequestID>1</RequestID></Response>").encode()
            return self.reply(h, 400, body, "text/xml")
        snapshot, message = self._import(bucket, key, fmt)
        task = ImportTask(f"import-snap-{uuid.uuid4().hex[:17]}", bucket, key, fmt, snapshot, message)
        with self.lock:
            self.imports[task.task_id] = task
        body = (f'<ImportSnapshotResponse xmlns="{EC2_NS}"><requestId>{uuid.uuid4()}</requestId>'
                f"<description>{form.get('Description', '')}</description>"
                f"<importTaskId>{task.task_id}</importTaskId>{self._detail(task, 'active', 0)}"
                f"</ImportSnapshotResponse>").encode()
        self.reply(h, 200, body, "text/xml")

    def _import(self, bucket: str, key: str, fmt: str) -> tuple[str | None, str]:
        """Do the import at once (the task only reports it later): a snapshot id or why not."""
        try:
            data = self._moto("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # the task reports it, as AWS does
            return None, f"ClientError: Disk validation failed [We do not have access to the given resource. Reason 403 Forbidden] ({exc})"
        if fmt == "VMDK" and (data[:4] != b"KDMV" or b'createType="streamOptimized"' not in data[:65536]):
            return None, "ClientError: Disk validation failed [Unsupported VMDK File Format]"
        with tempfile.TemporaryDirectory() as tmp:
            source, raw = Path(tmp) / "disk", Path(tmp) / "disk.raw"
            source.write_bytes(data)
            done = subprocess.run(["qemu-img", "convert", "-f", fmt.lower().replace("vhd", "vpc"),
                                   "-O", "raw", str(source), str(raw)], capture_output=True, timeout=120)
            if done.returncode:
                return None, f"ClientError: Disk validation failed [{done.stderr.decode().strip()}]"
            ebs = self._moto("ebs")
            size = raw.stat().st_size
            snapshot = ebs.start_snapshot(VolumeSize=max(1, -(-size // (1 << 30))))["SnapshotId"]
            written = 0
            with raw.open("rb") as f:
                for index in range(-(-size // BLOCK)):
                    block = f.read(BLOCK).ljust(BLOCK, b"\0")
                    if block.count(0) == BLOCK:
                        continue
                    ebs.put_snapshot_block(SnapshotId=snapshot, BlockIndex=index, BlockData=block,
                                           DataLength=BLOCK, ChecksumAlgorithm="SHA256",
                                           Checksum=base64.b64encode(hashlib.sha256(block).digest()).decode())
                    written += 1
            ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=written)
        return snapshot, "completed"

    def _detail(self, task: ImportTask, status: str, progress: int) -> str:
        snapshot = f"<snapshotId>{task.snapshot}</snapshotId>" if status == "completed" else ""
        message = task.status_message if status != "active" else "pending"
        return (f"<snapshotTaskDetail><format>{task.fmt}</format><progress>{progress}</progress>"
                f"<status>{status}</status><statusMessage>{message}</statusMessage>{snapshot}"
                f"<userBucket><s3Bucket>{task.bucket}</s3Bucket><s3Key>{task.key}</s3Key></userBucket>"
                f"</snapshotTaskDetail>")

    def describe_import_tasks(self, h: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        ids = [v for k, v in form.items() if k.startswith("ImportTaskId.")]
        items = []
        with self.lock:
            for task_id in ids:
                task = self.imports.get(task_id)
                if task is None:
                    continue
                task.polls += 1
                if task.polls < 2:  # one poll in progress, like a real import (for minutes)
                    detail = self._detail(task, "active", 42)
                elif task.snapshot is None:
                    detail = self._detail(task, "deleted", 0)
                else:
                    detail = self._detail(task, "completed", 100)
                items.append(f"<item><importTaskId>{task_id}</importTaskId>{detail}</item>")
        body = (f'<DescribeImportSnapshotTasksResponse xmlns="{EC2_NS}"><requestId>1</requestId>'
                f"<importSnapshotTaskSet>{''.join(items)}</importSnapshotTaskSet>"
                f"</DescribeImportSnapshotTasksResponse>").encode()
        self.reply(h, 200, body, "text/xml")
