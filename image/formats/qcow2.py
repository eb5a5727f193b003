"""qcow2: compressed, for local QEMU/KVM and OpenStack-style clouds.

Written here, not by ``qemu-img convert -c``: qemu-img compresses one 64 KiB
cluster after another at zlib's default level (~14 CPU s for the 2 GiB disk,
the longest of the formats). This writer packs the raw disk's non-zero
clusters with the same deflate settings qemu uses (raw deflate, 4 KiB window,
which its reader requires) at ``LEVEL`` in a thread pool
(:func:`lockgate.image.formats.vmdk.packed_pieces`, disk order whatever the
thread count), one after another from cluster 1 on, and then writes the
tables: the L2 tables, the L1 table, the refcount blocks and the refcount
table, at the end of the file.

The file is a version 3 (compat 1.1) image like qemu-img's: 64 KiB clusters,
16-bit refcounts, zlib compression type, no backing file. A compressed
cluster's L2 entry holds its byte offset and its length in 512-byte sectors
past the first; its refcount counts every compressed cluster whose sectors
touch it (what ``qemu-img check`` expects). A cluster that does not compress
below 64 KiB is stored as it is, cluster-aligned, as qemu-img does.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact
from lockgate.image.formats.vmdk import packed_pieces

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
L2_ENTRIES = CLUSTER // 8
REFCOUNTS_PER_BLOCK = CLUSTER // 2  # 16-bit refcounts
HEADER_LENGTH = 112  # version 3 with the compression type byte (zlib: 0)
COPIED = 1 << 63  # refcount is exactly one
COMPRESSED = 1 << 62
CSIZE_SHIFT = 62 - (CLUSTER_BITS - 8)
# zlib level: measured on the 2 GiB appliance disk, as for the VMDK (vmdk.LEVEL): level 2
# costs ~40 % of qemu-img's level 6 in CPU for a file a few % larger.
LEVEL = 2


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def deflate(cluster: memoryview, level: int = LEVEL) -> bytes:
    """qemu's compressed-cluster encoding: raw deflate with a 4 KiB window, memLevel 9. A
    short last cluster is zero-padded: qemu reads a compressed cluster as a whole one."""
    data = cluster if len(cluster) == CLUSTER else bytes(cluster).ljust(CLUSTER, b"\0")
    z = zlib.compressobj(level, zlib.DEFLATED, -12, 9)
    return z.compress(data) + z.flush()


def header(size: int, l1_size: int, l1_offset: int, rc_offset: int, rc_clusters: int) -> bytes:
    head = struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 0, 0, CLUSTER_BITS, size, 0,
                       l1_size, l1_offset, rc_offset, rc_clusters, 0, 0, 0, 0, 0, 4,
                       HEADER_LENGTH)
    head += bytes(HEADER_LENGTH - len(head))  # compression type 0 (zlib) and padding
    return head + bytes(8)  # header extensions: only the end marker


def write_qcow2(source: Path, target: Path, level: int = LEVEL,
                threads: int | None = None) -> None:
    """``target`` becomes a compressed qcow2 image of ``source`` (a raw disk)."""
    with source.open("rb") as src, target.open("wb") as out:
        fd = src.fileno()
        size = os.fstat(fd).st_size
        clusters = _ceil(size, CLUSTER)
        l1_size = max(1, _ceil(clusters, L2_ENTRIES))
        l2: dict[int, list[int]] = {}  # L1 index -> its L2 table
        # Host clusters and how many references each has (cluster 0: the header).
        refs: list[int] = [1]
        pos = CLUSTER
        out.seek(pos)

        def reference(start: int, end: int) -> None:
            for host in range(start // CLUSTER, _ceil(end, CLUSTER)):
                while len(refs) <= host:
                    refs.append(0)
                refs[host] += 1

        for index, packed in packed_pieces(fd, size, CLUSTER, lambda c: deflate(c, level),
                                           threads):
            table = l2.setdefault(index // L2_ENTRIES, [0] * L2_ENTRIES)
            if len(packed) < CLUSTER:
                extra = (pos + len(packed) - 1) // 512 - pos // 512  # sectors past the first
                table[index % L2_ENTRIES] = COMPRESSED | extra << CSIZE_SHIFT | pos
                out.write(packed)
                # qemu-img check counts the sectors the entry spans, to the last one's end.
                reference(pos, (pos // 512 + extra + 1) * 512)
                pos += len(packed)
                continue
            # Does not compress: stored as it is, in a cluster of its own.
            aligned = _ceil(pos, CLUSTER) * CLUSTER
            raw = os.pread(fd, CLUSTER, index * CLUSTER).ljust(CLUSTER, b"\0")
            out.seek(aligned)
            out.write(raw)
            table[index % L2_ENTRIES] = COPIED | aligned
            reference(aligned, aligned + CLUSTER)
            pos = aligned + CLUSTER
        # The tables, cluster-aligned after the data: L2 tables, L1, refcount blocks, table.
        pos = _ceil(pos, CLUSTER) * CLUSTER
        l1 = [0] * l1_size
        tables = bytearray()
        for i in sorted(l2):
            l1[i] = COPIED | (pos + len(tables))
            tables += struct.pack(f">{L2_ENTRIES}Q", *l2[i])
        l1_offset = pos + len(tables)
        l1_bytes = struct.pack(f">{l1_size}Q", *l1)
        l1_clusters = _ceil(len(l1_bytes), CLUSTER)
        rc_start = l1_offset + l1_clusters * CLUSTER
        first_rc_cluster = rc_start // CLUSTER
        # Refcount blocks and table cover every cluster, themselves included: grow to fit.
        blocks, table_clusters = 1, 1
        while True:
            total = first_rc_cluster + blocks + table_clusters
            need_blocks = _ceil(total, REFCOUNTS_PER_BLOCK)
            need_table = _ceil(need_blocks * 8, CLUSTER)
            if (need_blocks, need_table) == (blocks, table_clusters):
                break
            blocks, table_clusters = need_blocks, need_table
        counts = refs + [0] * (first_rc_cluster - len(refs))
        for host in range(pos // CLUSTER, first_rc_cluster + blocks + table_clusters):
            if host >= len(counts):
                counts.append(0)
            counts[host] += 1  # each table cluster: one reference
        counts += [0] * (blocks * REFCOUNTS_PER_BLOCK - len(counts))
        out.seek(pos)
        out.write(tables)
        out.write(l1_bytes.ljust(l1_clusters * CLUSTER, b"\0"))
        out.write(struct.pack(f">{len(counts)}H", *counts))
        rc_table_offset = rc_start + blocks * CLUSTER
        rc_table = struct.pack(f">{blocks}Q", *(rc_start + i * CLUSTER for i in range(blocks)))
        out.write(rc_table.ljust(table_clusters * CLUSTER, b"\0"))
        out.seek(0)
        out.write(header(size, l1_size, l1_offset, rc_table_offset, table_clusters))


def write(context: Context) -> Artifact:
    target = context.artifact_path("qcow2")
    target.unlink(missing_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    write_qcow2(context.disk_image, partial)
    partial.replace(target)
    return artifact("qcow2", target)
