"""vmdk: streamOptimized, the VMDK flavour AWS VM Import and VMware OVA take.

Written here, not by ``qemu-img convert``: qemu-img compresses one 64 KiB grain
after another on one core at zlib's default level (~15 CPU s and ~29 s of a
warm build for a 2 GiB disk). This writer reads only the raw disk's data
(holes and all-zero grains are left out, as qemu-img does), compresses grains
with zlib in a thread pool (zlib releases the GIL) at ``LEVEL`` and writes
them in disk order, so the bytes do not depend on the thread count.

The layout is qemu-img's (the VMDK files AWS and VMware have taken from
qemu-img for years): sector 0 the header (version 3, flags newline-check +
redundant grain directory + compressed grains + markers), the descriptor in
sectors 1-20, then the redundant grain directory and its grain tables, the
grain directory and its grain tables, and from ``grain_offset`` on each
grain as a marker (its first sector number and compressed length) followed by
its zlib stream, padded to a sector; the file ends with an end-of-stream
marker (qemu-img leaves zero sectors there, which read as the same marker).
At level 6 the file is qemu-img's, byte for byte, up to that end.

The descriptor's content id is fixed (``CID=`` with 8 hex digits, derived from
profile + version) so the same build gives the same file; :func:`fix_cid`
rewrites it in a VMDK that qemu-img made.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact

SECTOR = 512
GRAIN_SECTORS = 128  # 64 KiB grains, qemu-img's and VMware's
GRAIN = GRAIN_SECTORS * SECTOR
GTES = 512  # grain table entries per grain table
GT_SECTORS = GTES * 4 // SECTOR
DESCRIPTOR_SECTORS = 20
# zlib level. Measured on the 2 GiB appliance disk (430 MiB of data, 64 KiB grains):
# level 6 (qemu-img's) 13.9 CPU s for 141 MiB of grains, level 2 5.3 s for 150 MiB,
# level 1 4.8 s for 153 MiB. Level 2: 6 % larger, 2.6x less CPU.
LEVEL = 2
BATCH = 64  # grains per thread-pool task (4 MiB read at once)
FLAGS = 0x1 | 0x2 | 0x10000 | 0x20000  # newline check, redundant GD, compressed, markers
COMPRESS_DEFLATE = 1
_CID = re.compile(rb"^CID=[0-9a-fA-F]{1,8}$", re.M)

DESCRIPTOR = """\
# Disk DescriptorFile
version=1
CID={cid:08x}
parentCID=ffffffff
createType="streamOptimized"

# Extent description
RW {sectors} SPARSE "{name}"

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "{cylinders}"
ddb.geometry.heads = "16"
ddb.geometry.sectors = "63"
ddb.adapterType = "ide"
ddb.toolsVersion = "2147483647"
"""


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class Layout:
    """Where everything of a streamOptimized extent of ``size`` bytes goes (in sectors)."""

    def __init__(self, size: int) -> None:
        self.sectors = _ceil(size, SECTOR)
        self.grains = _ceil(self.sectors, GRAIN_SECTORS)
        self.tables = _ceil(self.grains, GTES)
        self.gd_sectors = _ceil(self.tables * 4, SECTOR)
        self.rgd_offset = 1 + DESCRIPTOR_SECTORS
        self.gd_offset = self.rgd_offset + self.gd_sectors + GT_SECTORS * self.tables
        end = self.gd_offset + self.gd_sectors + GT_SECTORS * self.tables
        self.grain_offset = _ceil(end, GRAIN_SECTORS) * GRAIN_SECTORS

    def header(self) -> bytes:
        head = struct.pack("<4sIIQQQQIQQQ", b"KDMV", 3, FLAGS, self.sectors, GRAIN_SECTORS, 1,
                           DESCRIPTOR_SECTORS, GTES, self.rgd_offset, self.gd_offset,
                           self.grain_offset)
        head += b"\0" + b"\n \r\n" + struct.pack("<H", COMPRESS_DEFLATE)
        return head.ljust(SECTOR, b"\0")

    def descriptor(self, cid: int, name: str) -> bytes:
        text = DESCRIPTOR.format(cid=cid & 0xFFFFFFFF, sectors=self.sectors, name=name,
                                 cylinders=self.sectors * SECTOR // (63 * 16 * SECTOR))
        data = text.encode()
        if len(data) > DESCRIPTOR_SECTORS * SECTOR:
            raise ValueError(f"VMDK descriptor longer than {DESCRIPTOR_SECTORS} sectors: {name}")
        return data.ljust(DESCRIPTOR_SECTORS * SECTOR, b"\0")

    def metadata(self, entries: list[int]) -> bytes:
        """Sectors ``rgd_offset`` up to ``grain_offset``: both directories, both table sets.
        ``entries``: each grain's sector in the file (0 for a grain that reads as zeros)."""
        tables = struct.pack(f"<{self.tables * GTES}I",
                             *entries, *([0] * (self.tables * GTES - len(entries))))
        out = bytearray()
        for base in (self.rgd_offset, self.gd_offset):
            first = base + self.gd_sectors
            gd = struct.pack(f"<{self.tables}I",
                             *(first + i * GT_SECTORS for i in range(self.tables)))
            out += gd.ljust(self.gd_sectors * SECTOR, b"\0") + tables
        return bytes(out).ljust((self.grain_offset - self.rgd_offset) * SECTOR, b"\0")


def data_ranges(fd: int, size: int, unit: int = GRAIN) -> Iterator[tuple[int, int]]:
    """(first unit, end unit) of each run of ``unit``-sized pieces holding data (holes
    skipped)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole from here to the end
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        first, last = start // unit, _ceil(end, unit)
        yield first, last
        pos = last * unit


Packer = Callable[[memoryview], bytes]


def _pack_batch(fd: int, size: int, unit: int, first: int, count: int,
                pack: Packer) -> list[tuple[int, bytes]]:
    """``pack`` of each non-zero ``unit``-sized piece of ``count`` from ``first`` on."""
    data = os.pread(fd, count * unit, first * unit)
    if len(data) < min(count * unit, size - first * unit):
        raise OSError("the raw disk got shorter while being converted")
    view = memoryview(data)
    zeros = bytes(unit)
    out = []
    for i in range(count):
        piece = view[i * unit:(i + 1) * unit]
        if not len(piece):
            break
        if piece == zeros[:len(piece)]:
            continue
        # The last piece of a disk that is not a whole number of them holds only the
        # disk's bytes (as qemu-img writes it; readers fill the rest with zeros).
        out.append((first + i, pack(piece)))
    return out


def packed_pieces(source_fd: int, size: int, unit: int, pack: Packer,
                  threads: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(index, ``pack(piece)``) of each ``unit``-sized piece of the file holding a non-zero
    byte, in file order; the pieces are read and packed in a thread pool (zlib releases
    the GIL), so the order, and the bytes, do not depend on the thread count. The qcow2
    writer uses it too."""
    threads = threads or os.cpu_count() or 1
    batch = max(1, BATCH * GRAIN // unit)

    def batches() -> Iterator[tuple[int, int]]:
        for first, end in data_ranges(source_fd, size, unit):
            for start in range(first, end, batch):
                yield start, min(batch, end - start)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pack") as pool:
        pending: deque[Future[list[tuple[int, bytes]]]] = deque()
        todo = batches()
        window = threads * 4  # tasks in flight: bounded memory, cores kept busy
        try:
            while True:
                while len(pending) < window:
                    task = next(todo, None)
                    if task is None:
                        break
                    pending.append(pool.submit(_pack_batch, source_fd, size, unit, *task, pack))
                if not pending:
                    return
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def write_stream_optimized(source: Path, target: Path, cid: int, level: int = LEVEL,
                           threads: int | None = None, name: str | None = None) -> None:
    """``target`` becomes a streamOptimized VMDK of ``source`` (a raw disk); ``name`` is
    the file name the descriptor gives (``target``'s by default)."""
    with source.open("rb") as src, target.open("wb") as out:
        fd = src.fileno()
        size = os.fstat(fd).st_size
        layout = Layout(size)
        entries = [0] * layout.grains
        out.seek(layout.grain_offset * SECTOR)
        sector = layout.grain_offset
        for index, packed in packed_pieces(fd, size, GRAIN, lambda g: zlib.compress(g, level),
                                           threads):
            record = struct.pack("<QI", index * GRAIN_SECTORS, len(packed)) + packed
            padded = _ceil(len(record), SECTOR) * SECTOR
            out.write(record.ljust(padded, b"\0"))
            entries[index] = sector
            sector += padded // SECTOR
        out.write(bytes(SECTOR))  # end-of-stream marker
        out.seek(0)
        out.write(layout.header())
        out.write(layout.descriptor(cid, name or target.name))
        out.write(layout.metadata(entries))


def fix_cid(path: Path, cid: int) -> None:
    """Set the descriptor's content id to ``cid`` (32 bits)."""
    with path.open("r+b") as f:
        header = f.read(SECTOR)
        if header[:4] != b"KDMV":
            raise ValueError(f"{path}: not a VMDK sparse extent (no 'KDMV' magic)")
        offset, size = struct.unpack_from("<QQ", header, 28)  # descriptor, in sectors
        f.seek(offset * SECTOR)
        descriptor = f.read(size * SECTOR)
        text = descriptor.split(b"\0", 1)[0]
        fixed, count = _CID.subn(b"CID=%08x" % (cid & 0xFFFFFFFF), text, count=1)
        if count != 1:
            raise ValueError(f"{path}: no CID= line in the VMDK descriptor")
        if len(fixed) > len(descriptor):
            raise ValueError(f"{path}: the VMDK descriptor has no room for an 8-digit CID")
        f.seek(offset * SECTOR)
        f.write(fixed.ljust(len(descriptor), b"\0"))


def write(context: Context) -> Artifact:
    target = context.artifact_path("vmdk")
    target.unlink(missing_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    write_stream_optimized(context.disk_image, partial, context.derived_uuid("vmdk-cid").int,
                           name=target.name)
    partial.replace(target)
    return artifact("vmdk", target)
