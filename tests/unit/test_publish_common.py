"""lockgate.image.publish.common: manifest lookup, zero blocks, progress, dry runs, 403s."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from pathlib import Path

import pytest

from lockgate.errors import BadInput, Failure
from lockgate.image.publish import aws
from lockgate.image.publish.common import (
    Block,
    BlockScan,
    DryRun,
    Progress,
    data_extents,
    denied,
    is_denied,
    load_manifest,
    parallel_upload,
)

KiB = 1024
BLOCK = 512 * KiB


def write_manifest(folder: Path, **extra: object) -> Path:
    disk = folder / "lockgate-1.0.raw"
    disk.write_bytes(b"x" * 4096)
    data = {"manifest_format": 1, "name": "lockgate", "version": "1.0", "firmware": "uefi",
            "disk": {"size": 4096},
            "artifacts": [{"format": "raw", "path": disk.name, "size": 4096, "sha256": "0" * 64}]}
    data.update(extra)
    path = folder / "manifest.json"
    path.write_text(json.dumps(data))
    return path


def test_manifest_gives_the_artifact_and_names_the_build(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    manifest = load_manifest(path)
    assert manifest.artifact("raw") == (tmp_path / "lockgate-1.0.raw").resolve()
    assert manifest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest.firmware == "uefi"
    assert manifest.image_name() == f"lockgate-1-0-{manifest.sha256[:12]}"


@pytest.mark.parametrize("name, version", [("Lock Gate", "2.0.0~rc1+b2"), ("9lives", "1"),
                                           ("x" * 80, "1.0")])
def test_image_names_are_valid_for_every_cloud(tmp_path: Path, name: str, version: str) -> None:
    manifest = load_manifest(write_manifest(tmp_path, name=name, version=version))
    image = manifest.image_name()
    # GCE's rule is the strictest: [a-z]([-a-z0-9]*[a-z0-9])?, at most 63 characters.
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", image), image
    assert len(image) <= 63
    assert image.endswith(manifest.sha256[:12])


def test_manifest_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such manifest"):
        load_manifest(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(BadInput, match="not JSON"):
        load_manifest(bad)
    bad.write_text("[]")
    with pytest.raises(BadInput, match="not a lockgate build manifest"):
        load_manifest(bad)
    manifest = load_manifest(write_manifest(tmp_path))
    with pytest.raises(BadInput, match=r"no vmdk artifact \(built: raw\).*--formats raw,vmdk"):
        manifest.artifact("vmdk")
    (tmp_path / "lockgate-1.0.raw").write_bytes(b"short")
    with pytest.raises(BadInput, match="differs from the manifest"):
        manifest.artifact("raw")
    (tmp_path / "lockgate-1.0.raw").unlink()
    with pytest.raises(BadInput, match="is missing"):
        manifest.artifact("raw")


def sparse_disk(path: Path) -> dict[int, bytes]:
    """10 blocks of 64 KiB: data in 0 and 4, written zeros in 6, a short tail in 9, holes."""
    size = 9 * 64 * KiB + 1536
    blocks = {0: os.urandom(64 * KiB), 4: b"\0" * 100 + b"\1" + b"\0" * (64 * KiB - 101)}
    with path.open("wb") as f:
        f.truncate(size)
        for index, data in blocks.items():
            f.seek(index * 64 * KiB)
            f.write(data)
        f.seek(6 * 64 * KiB)
        f.write(bytes(64 * KiB))
        f.seek(9 * 64 * KiB)
        f.write(b"end" * 512)
    blocks[9] = b"end" * 512
    return blocks


def test_block_scan_skips_holes_and_zero_blocks(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    blocks = sparse_disk(disk)
    scan = BlockScan(disk, 64 * KiB)
    found = {b.index: b.data for b in scan}
    assert found == blocks
    assert (scan.blocks, scan.zero_blocks) == (10, 7)
    padded = BlockScan(disk, 64 * KiB, pad=True)
    tail = next(b for b in padded if b.index == 9)
    assert tail.data == blocks[9].ljust(64 * KiB, b"\0")


def test_holes_are_not_read(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    sparse_disk(disk)
    with disk.open("rb") as f:
        extents = data_extents(f.fileno(), disk.stat().st_size)
    # tmpfs and ext4 both report holes; the extents cover the written data and no more
    # than the file system's allocation unit around it.
    covered = sum(end - start for start, end in extents)
    assert covered < disk.stat().st_size / 2, extents
    assert any(start <= 4 * 64 * KiB + 100 < end for start, end in extents)


def test_parallel_upload_puts_every_non_zero_block_once_and_counts(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    blocks = sparse_disk(disk)
    put: dict[int, bytes] = {}

    def record(block: Block) -> None:
        assert block.index not in put
        put[block.index] = block.data

    stream = io.StringIO()
    summary = parallel_upload(BlockScan(disk, 64 * KiB), record, workers=3,
                              progress=Progress("upload", 10 * 64 * KiB, stream=stream, tty=False))
    assert put == blocks
    assert (summary.blocks, summary.zero_blocks) == (10, 7)
    assert summary.sent == sum(len(d) for d in blocks.values())
    assert "7 of 10 blocks all zero, skipped (70.0 %)" in stream.getvalue()


def test_parallel_upload_stops_at_the_first_failure(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(os.urandom(64 * 64 * KiB))
    calls = []

    def fail(block: Block) -> None:
        calls.append(block.index)
        raise Failure(f"block {block.index} refused")

    with pytest.raises(Failure, match="refused"):
        parallel_upload(BlockScan(disk, 64 * KiB), fail, workers=2,
                        progress=Progress("upload", 64 * 64 * KiB, stream=io.StringIO(), tty=False))
    assert len(calls) < 64  # not every block was tried after the first failed


def test_progress_draws_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    bar = io.StringIO()
    progress = Progress("upload", 100 * 1024 * 1024, stream=bar, tty=True)
    progress.interval = 0
    progress.advance(50 * 1024 * 1024, 50 * 1024 * 1024)
    assert re.search(r"\r\[#{12} {12}\] upload  50\.0 % 50/100 MiB, [\d.]+ MiB/s", bar.getvalue())
    lines = io.StringIO()
    progress = Progress("upload", 100, stream=lines, tty=False, interval=0)
    progress.advance(25, 25)
    progress.finish()
    text = lines.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines()[0].startswith("upload  25.0 %")
    assert text.splitlines()[-1].startswith("upload: sent 0.0 MiB")


def test_dry_run_prints_calls_only_when_enabled() -> None:
    out = io.StringIO()
    plan = DryRun(True, out=out)
    plan.call("ec2", "RegisterImage", Name="x", EnaSupport=True)
    assert out.getvalue() == "dry-run: ec2.RegisterImage Name='x' EnaSupport=True\n"
    quiet = DryRun(False, out=out)
    quiet.call("ec2", "DescribeImages")
    assert quiet.calls == [("ec2", "DescribeImages", {})]
    assert out.getvalue().count("\n") == 1


def test_access_denied_is_one_line_naming_the_permission() -> None:
    assert is_denied("UnauthorizedOperation") and is_denied("AccessDeniedException")
    assert is_denied(None, 403) and is_denied("AuthorizationFailed") and is_denied("Forbidden")
    assert not is_denied("ValidationException", 400)
    message = denied("AWS", "ec2:RegisterImage", "You are not authorized.\nEncoded: " + "x" * 500)
    text = message.format_message()
    assert "\n" not in text
    assert text == "access denied: the AWS credentials lack the ec2:RegisterImage permission (You are not authorized.)"
    assert len(denied("AWS", "s3:PutObject", "y" * 1000).format_message()) < 250


def test_aws_boot_modes_and_checksums() -> None:
    assert [aws.boot_mode(f) for f in ("hybrid", "uefi", "bios")] == ["uefi-preferred", "uefi", "legacy-bios"]
    with pytest.raises(BadInput, match="firmware 'efi'"):
        aws.boot_mode("efi")
    digest, checksum = aws.block_checksum(b"abc")
    assert base64.b64decode(checksum) == digest == hashlib.sha256(b"abc").digest()
    # LINEAR: SHA-256 over the binary digests in block order, whatever order they came in.
    d1, d2 = hashlib.sha256(b"1").digest(), hashlib.sha256(b"2").digest()
    expected = base64.b64encode(hashlib.sha256(d1 + d2).digest()).decode()
    assert aws.linear_checksum({7: d2, 3: d1}) == expected
    assert aws.iam_action("s3", "UploadPart") == "s3:PutObject"
    assert aws.iam_action("ec2", "CopyImage") == "ec2:CopyImage"
