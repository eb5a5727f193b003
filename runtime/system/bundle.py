"""Reading and verifying upgrade bundles (``lockgate-<version>.upgrade``).

The layout is small and fixed so that every byte of the file is checked by
something: a flipped byte anywhere makes verification fail.

    offset 0    MAGIC (16 bytes)
    16          u32 LE manifest length M, u32 LE signature length S (0: unsigned)
    24          manifest: M bytes of JSON (sorted keys), the signed message
    24+M        Ed25519 signature over exactly those M bytes (S = 64)
    24+M+S      the members, back to back in the manifest's order, nothing after

The manifest names each member with its size and sha256; a compressed member
(the root filesystem, ``zstd``) also carries the size and sha256 of what it
decompresses to, which is checked while it streams into the slot. The header
and manifest are read first and the signature checked before anything else is
believed, so a refused bundle costs a few kilobytes of reading.

Writing lives on the build host (``lockgate.image.formats.upgrade``); the
appliance has only this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from lockgate.errors import Failure
from lockgate.proc import spawn
from lockgate.runtime.system.keys import PublicKey

MAGIC = b"LOCKGATE-BUNDLE\n"
HEADER = struct.Struct("<16sII")
FORMAT = "lockgate-upgrade/2"
SIGNATURE_SIZE = 64
MAX_MANIFEST = 64 * 1024
CHUNK = 1024 * 1024
ROOTFS = "rootfs.ext4.zst"
BLOCKS = "rootfs.blocks"  # sha256 (32 bytes) of each block of the uncompressed rootfs
BLOCK_SIZE = 1024 * 1024
DIGEST = 32
CMDLINE = "cmdline"
ALLOW_UNSIGNED_ENV = "LOCKGATE_ALLOW_UNSIGNED_BUNDLES"

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class BundleError(Failure):
    """A bundle refused: one line naming the file and what is wrong with it."""


def machine_architecture() -> str:
    """This machine's Debian architecture name (what the manifest records)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386"}.get(machine, machine)


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # from the start of the file
    size: int
    sha256: str
    compression: str | None = None
    uncompressed_size: int | None = None
    uncompressed_sha256: str | None = None


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, object]
    manifest_bytes: bytes
    signature: bytes
    members: tuple[Member, ...]
    end: int  # the file's expected size

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def architecture(self) -> str:
        return str(self.manifest["architecture"])

    @property
    def signed(self) -> bool:
        return bool(self.signature)

    @property
    def key_id(self) -> str | None:
        value = self.manifest.get("signing_key")
        return str(value) if value else None

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise BundleError(f"{self.path}: no member {name!r}")

    @property
    def rootfs(self) -> Member:
        return self.member(ROOTFS)

    @property
    def block_size(self) -> int:
        rootfs = self.manifest["rootfs"]
        assert isinstance(rootfs, dict)
        size = rootfs.get("block_size", BLOCK_SIZE)
        assert isinstance(size, int)  # checked by read_header
        return size

    @property
    def fs_uuid(self) -> str:
        rootfs = self.manifest["rootfs"]
        assert isinstance(rootfs, dict)
        return str(rootfs["fs_uuid"])


def _field(manifest: dict[str, object], name: str, kind: type, where: str) -> object:
    value = manifest.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise BundleError(f"{where}: manifest field {name!r} is missing or not a {kind.__name__}")
    return value


def _members(manifest: dict[str, object], start: int, where: str) -> tuple[Member, ...]:
    raw = _field(manifest, "members", list, where)
    assert isinstance(raw, list)
    offset, members = start, []
    for item in raw:
        if not isinstance(item, dict):
            raise BundleError(f"{where}: manifest member entries must be objects")
        name, size, sha = item.get("name"), item.get("size"), item.get("sha256")
        if not isinstance(name, str) or not isinstance(size, int) or not isinstance(sha, str):
            raise BundleError(f"{where}: manifest member {item!r} needs name, size and sha256")
        compression = item.get("compression")
        usize, usha = item.get("uncompressed_size"), item.get("uncompressed_sha256")
        if compression is not None and (compression != "zstd" or not isinstance(usize, int)
                                        or not isinstance(usha, str)):
            raise BundleError(f"{where}: member {name}: compression {compression!r} needs "
                              "zstd with uncompressed_size and uncompressed_sha256")
        members.append(Member(name, offset, size, sha, compression,
                              usize if isinstance(usize, int) else None,
                              usha if isinstance(usha, str) else None))
        offset += size
    return tuple(members)


def read_header(path: Path) -> Bundle:
    """The bundle's header, manifest and signature, parsed but not yet trusted."""
    where = str(path)
    try:
        with path.open("rb") as f:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size or not head.startswith(MAGIC):
                if MAGIC.startswith(head) and head:
                    raise BundleError(f"{where}: truncated: the header is cut off")
                raise BundleError(f"{where}: not a lockgate upgrade bundle "
                                  "(no LOCKGATE-BUNDLE header)")
            _, manifest_len, sig_len = HEADER.unpack(head)
            if manifest_len > MAX_MANIFEST or sig_len not in (0, SIGNATURE_SIZE):
                raise BundleError(f"{where}: damaged header (manifest {manifest_len} bytes, "
                                  f"signature {sig_len} bytes)")
            manifest_bytes = f.read(manifest_len)
            signature = f.read(sig_len)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise BundleError(f"{where}: {exc.strerror}") from exc
    if len(manifest_bytes) < manifest_len or len(signature) < sig_len:
        raise BundleError(f"{where}: truncated: {size} bytes, cut off inside the manifest")
    try:
        manifest = json.loads(manifest_bytes)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{where}: damaged manifest (not JSON); the bundle was changed "
                          "after it was made") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{where}: manifest format {got!r}, expected {FORMAT!r}")
    for name in ("version", "architecture", "kernel_cmdline"):
        _field(manifest, name, str, where)
    rootfs = _field(manifest, "rootfs", dict, where)
    assert isinstance(rootfs, dict)
    if not isinstance(rootfs.get("fs_uuid"), str):
        raise BundleError(f"{where}: manifest rootfs.fs_uuid is missing")
    start = HEADER.size + manifest_len + sig_len
    members = _members(manifest, start, where)
    end = members[-1].offset + members[-1].size if members else start
    bundle = Bundle(path, manifest, manifest_bytes, signature, members, end)
    for name in (ROOTFS, CMDLINE, BLOCKS):
        bundle.member(name)
    if bundle.rootfs.uncompressed_size is None:
        raise BundleError(f"{where}: {ROOTFS} names no uncompressed size")
    block = rootfs.get("block_size", BLOCK_SIZE)
    if not isinstance(block, int) or not 4096 <= block <= 16 * CHUNK or block % 4096:
        raise BundleError(f"{where}: manifest rootfs.block_size {block!r} is not a multiple "
                          "of 4096 up to 16 MiB")
    return bundle


def unsigned_allowed(flag: bool) -> bool:
    """The developer switch: both the flag and LOCKGATE_ALLOW_UNSIGNED_BUNDLES=1."""
    return flag and os.environ.get(ALLOW_UNSIGNED_ENV) == "1"


def check_signature(bundle: Bundle, trusted: list[PublicKey], allow_unsigned: bool) -> str:
    """Who signed it (a key id, or ``unsigned``); refuses anything else."""
    where = str(bundle.path)
    if not bundle.signed:
        if allow_unsigned:
            return "unsigned (allowed by the developer switch)"
        raise BundleError(f"{where}: unsigned bundle refused (developer switch: "
                          f"{ALLOW_UNSIGNED_ENV}=1 and --allow-unsigned)")
    for key in trusted:
        if key.verifies(bundle.signature, bundle.manifest_bytes):
            return f"{key.key_id} ({key.source})"
    named = bundle.key_id or "an unnamed key"
    if any(key.key_id == named for key in trusted):
        raise BundleError(f"{where}: bad signature: the manifest was changed after signing")
    if not trusted:
        raise BundleError(f"{where}: signed by {named}, but no key is trusted here "
                          "(give --trusted-key PUB)")
    raise BundleError(f"{where}: signed by {named}, which is not a trusted key "
                      f"(trusted: {', '.join(k.key_id for k in trusted)})")


def check_architecture(bundle: Bundle, architecture: str) -> None:
    if bundle.architecture != architecture:
        raise BundleError(f"{bundle.path}: built for {bundle.architecture}, "
                          f"this machine is {architecture}")


def check_size(bundle: Bundle) -> None:
    size = bundle.path.stat().st_size
    if size < bundle.end:
        raise BundleError(f"{bundle.path}: truncated: {size} bytes, the manifest says "
                          f"{bundle.end}")
    if size > bundle.end:
        raise BundleError(f"{bundle.path}: {size - bundle.end} bytes after the last member; "
                          "the bundle was changed after it was made")


def _read_region(f: IO[bytes], member: Member, where: str) -> Iterator[bytes]:
    f.seek(member.offset)
    left = member.size
    while left:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            raise BundleError(f"{where}: truncated inside {member.name}")
        left -= len(chunk)
        yield chunk


def _hashed(chunks: Iterator[bytes], digest: hashlib._Hash) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _tampered(bundle: Bundle, member: Member, what: str = "sha256") -> BundleError:
    return BundleError(f"{bundle.path}: {member.name}: {what} does not match the manifest; "
                       "the bundle was changed after it was made")


def check_members(bundle: Bundle, progress: Progress | None = None) -> None:
    """The sha256 of every member as stored (the compressed bytes for the rootfs)."""
    check_size(bundle)
    total, done = sum(m.size for m in bundle.members), 0
    with bundle.path.open("rb") as f:
        for member in bundle.members:
            digest = hashlib.sha256()
            for chunk in _hashed(_read_region(f, member, str(bundle.path)), digest):
                done += len(chunk)
                if progress:
                    progress(done, total)
            if digest.hexdigest() != member.sha256:
                raise _tampered(bundle, member)


def read_member(bundle: Bundle, name: str, limit: int = MAX_MANIFEST) -> bytes:
    """A small member's bytes (command line, block hashes), checked against its hash."""
    member = bundle.member(name)
    if member.size > limit:
        raise BundleError(f"{bundle.path}: member {name} is too large to read whole")
    with bundle.path.open("rb") as f:
        data = b"".join(_read_region(f, member, str(bundle.path)))
    if hashlib.sha256(data).hexdigest() != member.sha256:
        raise _tampered(bundle, member)
    return data


def _set_pipe_size(fd: int, size: int) -> None:
    # Fewer, larger reads from zstd; the default 64 KiB pipe costs 16 wake-ups per block.
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)


def _zstd_blocks(chunks: Iterator[bytes], where: str, block: int) -> Iterator[bytes | bytearray]:
    """Stream through ``zstd -dc``, yielding ``block``-sized pieces (the last may be short).

    A thread feeds zstd while this generator reads it. A whole block is one reused
    bytearray (comparing a memoryview is ~100x slower than a bytearray's memcmp): the
    consumer must be done with it before asking for the next.
    """
    proc = spawn(["zstd", "-dc", "-q"], quiet=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin = proc.stdin
    _set_pipe_size(proc.stdout.fileno(), CHUNK)
    failed: list[BaseException] = []

    def feed() -> None:
        try:
            for chunk in chunks:
                stdin.write(chunk)
        except BrokenPipeError:
            pass  # zstd stopped early; its exit status says why
        except BaseException as exc:  # handed to the reader below
            failed.append(exc)
        finally:
            with contextlib.suppress(BrokenPipeError):  # zstd gone: its status tells
                stdin.close()

    feeder = threading.Thread(target=feed, name="zstd-feed", daemon=True)
    feeder.start()
    buffer = bytearray(block)
    view = memoryview(buffer)
    raw = cast(io.BufferedReader, proc.stdout).raw  # unbuffered: reads land in our buffer
    try:
        while True:
            filled = 0
            while filled < block:
                got = raw.readinto(view[filled:])
                if not got:
                    break
                filled += got
            if filled == block:
                yield buffer
                continue
            if filled:
                yield bytes(view[:filled])
            break
        feeder.join()
        code = proc.wait()
        if failed:
            raise failed[0]
        if code != 0:
            err = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise BundleError(f"{where}: the root filesystem does not decompress (zstd: "
                              f"{err[-1] if err else f'exit {code}'})")
    finally:
        view.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        feeder.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()


#: sink(offset, data, zero): ``data`` is only valid during the call; ``zero`` says it is
#: all zero bytes (a writer may zero the range on the device instead of writing it).
Sink = Callable[[int, bytes | bytearray, bool], None]


def stream_rootfs(bundle: Bundle, sink: Sink, progress: Progress | None = None) -> None:
    """Decompress the root filesystem into ``sink`` block by block, each checked first.

    Every block is checked against the signed list of block hashes
    (``rootfs.blocks``) *before* ``sink`` sees it, so nothing unverified is
    ever written; an all-zero block whose listed hash is the zero block's needs
    no hashing (the unused part of the filesystem). Call after
    :func:`open_verified`. Raises :class:`BundleError` at the first bad block
    or a wrong size; what ``sink`` got until then is good but incomplete.
    """
    member = bundle.rootfs
    where = str(bundle.path)
    size, block = member.uncompressed_size, bundle.block_size
    assert size is not None
    hashes = read_member(bundle, BLOCKS, limit=64 * CHUNK)
    count = -(-size // block)
    if len(hashes) != count * DIGEST:
        raise _tampered(bundle, bundle.member(BLOCKS), "the number of block hashes")
    zero_digest = hashlib.sha256(bytes(block)).digest()
    zero_block = bytes(block)
    offset = index = 0
    with bundle.path.open("rb") as f:
        for piece in _zstd_blocks(_read_region(f, member, where), where, block):
            if index >= count:
                raise _tampered(bundle, member, "uncompressed size")
            wanted = hashes[index * DIGEST:(index + 1) * DIGEST]
            zero = wanted == zero_digest and len(piece) == block and piece == zero_block
            if not zero and hashlib.sha256(piece).digest() != wanted:
                raise BundleError(f"{where}: {member.name}: block {index} (at "
                                  f"{offset / CHUNK:.0f} MiB) does not match its signed "
                                  "hash; the bundle was changed after it was made")
            sink(offset, piece, zero)
            offset += len(piece)
            index += 1
            if progress:
                progress(offset, size)
    if offset != size:
        raise _tampered(bundle, member, "uncompressed size")


def open_verified(path: Path, trusted: list[PublicKey], *, architecture: str,
                  allow_unsigned: bool = False, progress: Progress | None = None) -> tuple[Bundle, str]:
    """Header, signature, architecture, file size and every stored member's hash.

    What upgrade runs before it writes anything. Returns the bundle and who
    signed it.
    """
    bundle = read_header(path)
    signer = check_signature(bundle, trusted, allow_unsigned)
    check_architecture(bundle, architecture)
    check_members(bundle, progress)
    return bundle, signer


def verify(path: Path, trusted: list[PublicKey], *, architecture: str,
           allow_unsigned: bool = False) -> tuple[Bundle, str]:
    """Everything :func:`open_verified` checks, and the root filesystem decompressed and
    hashed too (``lockgate system bundle verify``)."""
    bundle, signer = open_verified(path, trusted, architecture=architecture,
                                   allow_unsigned=allow_unsigned)
    stream_rootfs(bundle, lambda offset, data, zero: None)
    return bundle, signer
