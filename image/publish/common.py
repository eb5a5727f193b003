"""What every cloud's publish shares: the manifest, progress, dry runs, errors, zero blocks.

Nothing here imports a cloud SDK: ``lockgate image publish --help`` and the
dry runs stay fast and work on a machine without the ``publish`` extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from lockgate.errors import BadInput, Failure

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULT_MANIFEST = Path("build/manifest.json")

# Which artifact each way of publishing uploads (lockgate.image.formats names).
FORMAT_HINT = {"raw": "raw", "vmdk": "vmdk", "vhd": "vhd", "gce": "gce"}


# --- the manifest -------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A build's manifest.json, read once; artifact paths are relative to its folder."""

    path: Path
    data: dict[str, Any]
    sha256: str  # of the manifest file's bytes: names the build in tags and image names

    @property
    def name(self) -> str:
        return str(self.data.get("name", "lockgate"))

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def firmware(self) -> str:
        """``bios``, ``uefi`` or ``hybrid`` (one disk that boots both)."""
        return str(self.data.get("firmware", "hybrid"))

    @property
    def disk_size(self) -> int:
        return int(self.data["disk"]["size"])

    @property
    def packages(self) -> list[dict[str, str]]:
        packages: list[dict[str, str]] = self.data.get("packages", [])
        return packages

    def formats(self) -> list[str]:
        return [str(a["format"]) for a in self.data.get("artifacts", [])]

    def artifact(self, fmt: str) -> Path:
        """The built file of format ``fmt``; one ``error:`` line if it was not built or is gone."""
        for entry in self.data.get("artifacts", []):
            if entry.get("format") != fmt:
                continue
            path = (self.path.parent / str(entry["path"])).resolve()
            if not path.is_file():
                raise BadInput(f"{self.path}: {fmt} artifact {path} is missing; rebuild the image")
            if path.stat().st_size != int(entry["size"]):
                raise BadInput(f"{path}: size {path.stat().st_size} differs from the manifest's "
                               f"{entry['size']}; rebuild the image")
            return path
        raise BadInput(f"{self.path}: no {fmt} artifact (built: {', '.join(self.formats()) or 'none'}); "
                       f"rebuild with `lockgate image build --formats raw,{fmt}`")

    def artifact_sha256(self, fmt: str) -> str:
        for entry in self.data.get("artifacts", []):
            if entry.get("format") == fmt:
                return str(entry["sha256"])
        raise BadInput(f"{self.path}: no {fmt} artifact")

    def image_name(self, max_len: int = 63) -> str:
        """``<name>-<version>-<sha12>``: lower-case letters, digits and hyphens, starting
        with a letter, so the same name is valid for an AMI, a GCE image and an Azure image,
        and a second publish of the same build finds it."""
        base = re.sub(r"[^a-z0-9-]+", "-", f"{self.name}-{self.version}".lower()).strip("-")
        if not base or not base[0].isalpha():
            base = f"img-{base}"
        suffix = f"-{self.sha256[:12]}"
        return base[: max_len - len(suffix)].rstrip("-") + suffix


def load_manifest(path: Path) -> Manifest:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such manifest; build first (`lockgate image build`) "
                       "or pass --manifest") from None
    except OSError as exc:
        raise BadInput(f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadInput(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or "version" not in data or "artifacts" not in data:
        raise BadInput(f"{path}: not a lockgate build manifest (no version/artifacts)")
    return Manifest(path=path.resolve(), data=data, sha256=hashlib.sha256(raw).hexdigest())


# --- the dry run ---------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 400 else text[:397] + "..."


@dataclass
class DryRun:
    """Records (and prints) the API calls a publish would make, and makes none.

    Each cloud module calls ``plan.call("ec2", "RegisterImage", Name=..., ...)`` at the
    point where it would call the SDK; with ``enabled`` False it only records, so the real
    path and the dry run go through the same code.
    """

    enabled: bool
    out: IO[str] | None = None
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def call(self, service: str, operation: str, **args: Any) -> None:
        self.calls.append((service, operation, args))
        if self.enabled:
            shown = " ".join(f"{key}={_short(value)}" for key, value in args.items())
            click.echo(f"dry-run: {service}.{operation} {shown}".rstrip(), file=self.out)

    def note(self, text: str) -> None:
        """A line that explains the plan (e.g. a step repeated per block)."""
        if self.enabled:
            click.echo(f"dry-run: # {text}", file=self.out)


# --- access denied -------------------------------------------------------------------------

# Error codes the three clouds use when the caller lacks a permission.
DENIED_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden",
    "AuthorizationFailed", "AuthorizationPermissionMismatch", "AuthorizationFailure",
    "InsufficientAccountPermissions", "PERMISSION_DENIED", "forbidden", "accessDenied",
    "insufficientPermissions",
})


def is_denied(code: str | None, status: int | None = None) -> bool:
    return status == 403 or (code is not None and code in DENIED_CODES)


def denied(cloud: str, permission: str, detail: str = "") -> Failure:
    """One ``error:`` line naming the permission the credentials lack.

    ``detail`` is the cloud's own message, cut to its first line (AWS's encoded
    authorization messages run to kilobytes)."""
    first = detail.strip().splitlines()[0] if detail.strip() else ""
    if len(first) > 160:
        first = first[:157] + "..."
    return Failure(f"access denied: the {cloud} credentials lack the {permission} permission"
                   + (f" ({first})" if first else ""))


# --- progress ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    label: str
    total: int
    done: int
    sent: int
    seconds: float
    blocks: int
    zero_blocks: int

    @property
    def mib_s(self) -> float:
        return self.sent / MiB / self.seconds if self.seconds > 0 else 0.0

    @property
    def zero_share(self) -> float:
        return self.zero_blocks / self.blocks if self.blocks else 0.0

    def line(self) -> str:
        if not self.sent and not self.blocks:  # a step the cloud did (an import, an operation)
            return f"{self.label}: done in {self.seconds:.1f} s"
        text = (f"{self.label}: sent {self.sent / MiB:.1f} MiB of {self.total / MiB:.1f} MiB "
                f"in {self.seconds:.1f} s ({self.mib_s:.1f} MiB/s)")
        if self.blocks:
            text += (f"; {self.zero_blocks} of {self.blocks} blocks all zero, skipped "
                     f"({100 * self.zero_share:.1f} %)")
        return text


class Progress:
    """Bytes done of a total and upload MiB/s on stderr, safe to call from worker threads.

    On a terminal a bar redrawn in place (at most 10 times a second); otherwise (CI logs,
    Packer's output) one line every ``interval`` seconds. ``done`` counts every byte dealt
    with, ``sent`` only the bytes that went over the wire (zero blocks are done, not sent).
    """

    def __init__(self, label: str, total: int, *, stream: IO[str] | None = None,
                 interval: float = 5.0, tty: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 0.1 if self.tty else interval
        self.done = self.sent = self.blocks = self.zero_blocks = 0
        self.start = time.monotonic()
        self._last = self.start
        self._lock = threading.Lock()

    def advance(self, done: int, sent: int = 0, *, zero: bool | None = None) -> None:
        with self._lock:
            self.done += done
            self.sent += sent
            if zero is not None:
                self.blocks += 1
                self.zero_blocks += zero
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._show(now)

    def set(self, done: int) -> None:
        """For steps the cloud does (an import, an operation): ``done`` of ``total``."""
        with self._lock:
            self.done = done
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._show(now)

    def _status(self, now: float) -> str:
        seconds = max(now - self.start, 1e-9)
        pct = 100 * self.done / self.total if self.total else 100.0
        if self.label.endswith("%"):
            return f"{self.label[:-1].rstrip()} {pct:5.1f} %"
        return (f"{self.label} {pct:5.1f} % {self.done / MiB:.0f}/{self.total / MiB:.0f} MiB, "
                f"{self.sent / MiB / seconds:.1f} MiB/s")

    def _show(self, now: float) -> None:
        status = self._status(now)
        if self.tty:
            width = 24
            filled = int(width * self.done / self.total) if self.total else width
            self.stream.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {status}\x1b[K")
        else:
            self.stream.write(status + "\n")
        self.stream.flush()

    def finish(self) -> Summary:
        now = time.monotonic()
        with self._lock:
            # A padded last block counts a little past the end.
            self.done = min(self.done, self.total)
            summary = Summary(self.label.rstrip(" %"), self.total, self.done, self.sent,
                              now - self.start, self.blocks, self.zero_blocks)
            if self.tty:
                self.stream.write("\r\x1b[K")
            self.stream.write(summary.line() + "\n")
            self.stream.flush()
        return summary


# --- zero blocks and sparse files ----------------------------------------------------------


@dataclass(frozen=True)
class Block:
    index: int
    offset: int
    data: bytes


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of the parts of the file that hold data; holes are left out.

    SEEK_DATA/SEEK_HOLE let a 2 GiB sparse disk be scanned without reading its holes;
    a file system without them reports the whole file as data, which is only slower."""
    extents: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append((start, end))
            pos = end
    except (AttributeError, OSError):
        return [(0, size)]
    return extents


def _touched_blocks(extents: Iterable[tuple[int, int]], block_size: int) -> Iterator[int]:
    last = -1
    for start, end in extents:
        for index in range(max(start // block_size, last + 1), (end - 1) // block_size + 1):
            last = index
            yield index


class BlockScan:
    """The blocks of a file that are not all zero, with counts of those that are.

    A block inside a hole is counted as zero without being read; a block that holds
    data is read and compared with zeros (a converted disk has written zeros too).
    ``pad`` fills a short last block with zeros (EBS takes only whole blocks); without
    it the last block is as long as the file leaves it (Azure pages: 512-byte multiples).
    """

    def __init__(self, path: Path, block_size: int, *, pad: bool = False,
                 size: int | None = None) -> None:
        self.path = path
        self.block_size = block_size
        self.pad = pad
        self.size = path.stat().st_size if size is None else size
        self.blocks = -(-self.size // block_size)
        self.zero_blocks = 0
        self._zero = bytes(block_size)

    def is_zero(self, data: bytes) -> bool:
        return data == self._zero[: len(data)]

    def __iter__(self) -> Iterator[Block]:
        self.zero_blocks = 0
        with self.path.open("rb") as f:
            fd = f.fileno()
            read = 0
            for index in _touched_blocks(data_extents(fd, self.size), self.block_size):
                offset = index * self.block_size
                data = os.pread(fd, min(self.block_size, self.size - offset), offset)
                read += 1
                if self.is_zero(data):
                    self.zero_blocks += 1
                    continue
                if self.pad and len(data) < self.block_size:
                    data += bytes(self.block_size - len(data))
                yield Block(index, offset, data)
            self.zero_blocks += self.blocks - read


def parallel_upload(scan: BlockScan, put: Callable[[Block], int | None], *, workers: int,
                    progress: Progress) -> Summary:
    """``put`` every non-zero block from ``workers`` threads, at most 2×workers blocks in
    memory; the first failure stops the rest (blocks not yet started are cancelled) and
    is raised. ``put`` may return the bytes it really sent (Azure trims a block's zero
    pages); None means the whole block."""
    inflight: set[Future[None]] = set()
    reported = 0

    def one(block: Block) -> None:
        sent = put(block)
        progress.advance(len(block.data), len(block.data) if sent is None else sent, zero=False)

    def count_zero_blocks() -> None:
        nonlocal reported
        for _ in range(scan.zero_blocks - reported):
            progress.advance(scan.block_size, zero=True)
        reported = scan.zero_blocks

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload") as pool:
        try:
            for block in scan:
                count_zero_blocks()
                inflight.add(pool.submit(one, block))
                if len(inflight) >= 2 * workers:
                    inflight = _settle(inflight, FIRST_COMPLETED)
            inflight = _settle(inflight, ALL_COMPLETED)
        except BaseException:
            for future in inflight:
                future.cancel()
            raise
    count_zero_blocks()
    return progress.finish()


def _settle(futures: set[Future[None]], until: str) -> set[Future[None]]:
    """Wait, raise the first failure among the finished, return the still running."""
    done, pending = wait(futures, return_when=until)
    for future in done:
        error = future.exception()
        if error is not None:
            raise error
    return set(pending)
