"""Each output format against its cloud's documented rules, on a small synthetic disk."""

from __future__ import annotations

import json
import random
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from lockgate.image.build.context import Context, parse_formats
from lockgate.image.build.profile import load_profile
from lockgate.image.formats import gce, qcow2, raw, sha256_file, upgrade, vhd, vmdk

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@pytest.fixture
def context(tmp_path: Path) -> Context:
    profile = load_profile(REPO / "image/profiles/appliance.yaml")
    ctx = Context(profile=profile, version="9.8.7", source_date_epoch=1700000000,
                  formats=("raw",), out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    ctx.work_dir.mkdir(parents=True)
    # 5 MiB + 3 sectors: not a whole MiB, so the VHD must round it up.
    disk = ctx.disk_image
    with disk.open("wb") as f:
        f.truncate(5 * MiB + 3 * 512)
        f.seek(MiB)
        f.write(b"lockgate" * 1000)
    return ctx


def qemu_info(path: Path, fmt: str) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "-f", fmt, "--output=json", str(path)],
                         capture_output=True, check=True, text=True).stdout
    info: dict[str, object] = json.loads(out)
    return info


def test_formats_option() -> None:
    assert parse_formats("vhd") == ("raw", "vhd")
    assert parse_formats("all") == ("raw", "qcow2", "vhd", "vmdk", "gce", "upgrade")
    from lockgate.errors import BadInput

    with pytest.raises(BadInput, match="'ova' is not one of"):
        parse_formats("raw,ova")


def test_raw_artifact_hashes_the_disk(context: Context) -> None:
    art = raw.write(context)
    assert art.sha256 == sha256_file(context.disk_image)
    assert art.size == 5 * MiB + 1536


def test_vhd_is_fixed_whole_mib_with_a_valid_footer(context: Context) -> None:
    art = vhd.write(context)
    data = art.path.read_bytes()
    footer = vhd.parse_footer(data[-512:])
    assert footer["cookie"] == "conectix"
    assert footer["disk_type"] == vhd.DISK_TYPE_FIXED
    assert footer["current_size"] == footer["original_size"] == 6 * MiB  # rounded up
    assert len(data) == 6 * MiB + 512  # fixed VHD: the data, then the footer
    assert footer["checksum"] == vhd.checksum(data[-512:])
    assert data[MiB:MiB + 8] == b"lockgate"
    info = qemu_info(art.path, "vpc")
    assert info["virtual-size"] == 6 * MiB
    # Same build, same bytes: the footer's time and unique id are fixed.
    first = sha256_file(art.path)
    assert vhd.write(context).sha256 == first


def test_vhd_copy_is_byte_equal_to_qemu_img_convert(context: Context, tmp_path: Path) -> None:
    """make_vhd copies the raw disk and adds qemu-img create's footer: the same bytes as
    converting with qemu-img (footer fixed the same way), and the sha256 it carries on
    from the raw disk's is the file's."""
    art = vhd.write(context)
    assert art.sha256 == sha256_file(art.path)
    padded = tmp_path / "padded.raw"
    padded.write_bytes(context.disk_image.read_bytes())
    with padded.open("r+b") as f:
        f.truncate(vhd.round_up(padded.stat().st_size))
    converted = tmp_path / "converted.vhd"
    subprocess.run(vhd.convert_argv(str(padded), str(converted)), check=True)
    data = bytearray(converted.read_bytes())
    data[-512:] = vhd.fix_footer(bytes(data[-512:]), context.source_date_epoch,
                                 context.derived_uuid("vhd-unique-id"))
    assert art.path.read_bytes() == bytes(data)


def test_sparse_hash_matches_a_plain_read(tmp_path: Path) -> None:
    """Holes hashed from a zero buffer, data read: the same digest as reading it all."""
    import hashlib

    from lockgate.image import formats

    path = tmp_path / "sparse.img"
    with path.open("wb") as f:
        f.truncate(9 * MiB + 5)
        f.seek(3 * MiB + 7)
        f.write(b"data" * 70000)
        f.seek(9 * MiB)
        f.write(b"end")  # data up to the end: no trailing hole
    plain = hashlib.sha256(path.read_bytes()).hexdigest()
    assert formats.sha256_file(path) == plain
    assert formats.sha256_state(path).hexdigest() == plain
    empty = tmp_path / "hole.img"
    empty.write_bytes(b"")
    with empty.open("r+b") as f:
        f.truncate(5 * MiB + 1)  # only a hole
    assert formats.sha256_file(empty) == hashlib.sha256(bytes(5 * MiB + 1)).hexdigest()


def test_vhd_footer_fix_rejects_other_files() -> None:
    with pytest.raises(ValueError, match="conectix"):
        vhd.fix_footer(bytes(512), 0, uuid.uuid4())


def test_vmdk_is_stream_optimized(context: Context) -> None:
    art = vmdk.write(context)
    head = art.path.read_bytes()[:4096]
    assert head[:4] == b"KDMV"
    assert b'createType="streamOptimized"' in art.path.read_bytes()[:64 * 1024]
    info = qemu_info(art.path, "vmdk")
    assert int(str(info["virtual-size"])) >= 5 * MiB
    # qemu-img's random content id is replaced with a fixed one: same build, same bytes.
    cid = context.derived_uuid("vmdk-cid").int & 0xFFFFFFFF
    assert f"\nCID={cid:08x}\n".encode() in art.path.read_bytes()[:64 * 1024]
    assert vmdk.write(context).sha256 == art.sha256
    subprocess.run(["qemu-img", "check", "-f", "vmdk", str(art.path)], check=True,
                   capture_output=True)


def _vmdk_disk(context: Context) -> Path:
    """The fixture's disk plus an allocated all-zero grain and data in its last, partial grain."""
    disk = context.disk_image
    with disk.open("r+b") as f:
        f.seek(2 * MiB)
        f.write(bytes(vmdk.GRAIN))  # allocated, but zeros: no grain is stored for it
        f.seek(5 * MiB + 512)
        f.write(b"tail" * 128)
    return disk


def test_vmdk_converts_back_to_the_raw_disk(context: Context, tmp_path: Path) -> None:
    disk = _vmdk_disk(context)
    art = vmdk.write(context)
    subprocess.run(["qemu-img", "check", "-f", "vmdk", str(art.path)], check=True,
                   capture_output=True)
    info = qemu_info(art.path, "vmdk")
    assert info["virtual-size"] == disk.stat().st_size
    specific = info["format-specific"]
    assert isinstance(specific, dict)
    assert specific["data"]["create-type"] == "streamOptimized"
    assert specific["data"]["extents"][0]["compressed"] is True
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(art.path), str(back)],
                   check=True)
    assert back.read_bytes() == disk.read_bytes()
    # Two data grains (the fixture's text, the tail) and nothing for the zeros.
    with art.path.open("rb") as f:
        layout = vmdk.Layout(disk.stat().st_size)
        f.seek(layout.grain_offset * vmdk.SECTOR)
        markers = f.read()
    assert len(markers) == 3 * vmdk.SECTOR  # two short grains and the end-of-stream marker


def test_vmdk_at_level_6_is_qemu_imgs_file(context: Context, tmp_path: Path) -> None:
    """The layout is qemu-img's: at its zlib level the bytes are the same up to the end of
    the stream, where qemu-img leaves zero sectors (read as the end-of-stream marker)."""
    disk = _vmdk_disk(context)
    (tmp_path / "q").mkdir()
    theirs = tmp_path / "q" / "same.vmdk"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
                    "subformat=streamOptimized", str(disk), str(theirs)], check=True)
    vmdk.fix_cid(theirs, 0xC0FFEE)
    ours = tmp_path / "same.vmdk"
    vmdk.write_stream_optimized(disk, ours, 0xC0FFEE, level=6)
    a, b = theirs.read_bytes(), ours.read_bytes()
    end = len(b) - vmdk.SECTOR
    assert a[:end] == b[:end]
    assert a[end:] == bytes(len(a) - end)
    assert b[end:] == bytes(vmdk.SECTOR)


def test_vmdk_bytes_do_not_depend_on_the_thread_count(context: Context, tmp_path: Path) -> None:
    disk = _vmdk_disk(context)
    one, four = tmp_path / "one.vmdk", tmp_path / "four.vmdk"
    vmdk.write_stream_optimized(disk, one, 7, threads=1, name="x.vmdk")
    vmdk.write_stream_optimized(disk, four, 7, threads=4, name="x.vmdk")
    assert one.read_bytes() == four.read_bytes()


def test_vmdk_cid_fix_widens_a_short_cid(tmp_path: Path) -> None:
    """qemu-img writes the CID without leading zeros: a short one becomes 8 digits,
    the rest of the descriptor and of the file stays as it was."""
    import struct

    path = tmp_path / "short.vmdk"
    header = bytearray(512)
    header[:4] = b"KDMV"
    struct.pack_into("<QQ", header, 28, 1, 1)  # descriptor: sector 1, 1 sector
    text = b"# Disk DescriptorFile\nversion=1\nCID=abc\nparentCID=ffffffff\n"
    tail = b"grains" * 100
    path.write_bytes(bytes(header) + text.ljust(512, b"\0") + tail)
    vmdk.fix_cid(path, 0x1234)
    data = path.read_bytes()
    want = b"# Disk DescriptorFile\nversion=1\nCID=00001234\nparentCID=ffffffff\n"
    assert data == bytes(header) + want.ljust(512, b"\0") + tail


def test_vmdk_cid_fix_rejects_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.img"
    other.write_bytes(bytes(1024))
    with pytest.raises(ValueError, match="KDMV"):
        vmdk.fix_cid(other, 1)


def test_qcow2_round_trips(context: Context, tmp_path: Path) -> None:
    art = qcow2.write(context)
    assert art.path.read_bytes()[:4] == b"QFI\xfb"
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(art.path), str(back)],
                   check=True)
    assert back.read_bytes() == context.disk_image.read_bytes()


def test_qcow2_is_checked_clean_and_converts_back(context: Context, tmp_path: Path) -> None:
    """Compressed clusters, a cluster that does not compress (stored as it is), an allocated
    zero cluster (left out) and a short last cluster: qemu-img checks the refcounts clean
    and reads back the raw disk."""
    disk = _vmdk_disk(context)
    with disk.open("r+b") as f:
        f.seek(3 * MiB)
        f.write(random.Random(7).randbytes(2 * qcow2.CLUSTER))
    art = qcow2.write(context)
    check = subprocess.run(["qemu-img", "check", "--output=json", "-f", "qcow2", str(art.path)],
                           capture_output=True, check=True, text=True).stdout
    result = json.loads(check)
    assert result.get("corruptions", 0) == 0 and result.get("leaks", 0) == 0, result
    assert result["allocated-clusters"] == 4  # text, 2 random, the short last; not the zeros
    assert result["compressed-clusters"] == 2  # text and the (zero-padded) short last one
    info = qemu_info(art.path, "qcow2")
    assert info["virtual-size"] == disk.stat().st_size
    specific = info["format-specific"]
    assert isinstance(specific, dict)
    assert specific["data"]["compat"] == "1.1"
    assert specific["data"]["compression-type"] == "zlib"
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(art.path), str(back)],
                   check=True)
    assert back.read_bytes() == disk.read_bytes()
    one, four = tmp_path / "one.qcow2", tmp_path / "four.qcow2"
    qcow2.write_qcow2(disk, one, threads=1)
    qcow2.write_qcow2(disk, four, threads=4)
    assert one.read_bytes() == four.read_bytes() == art.path.read_bytes()


def test_gce_tarball_rules(context: Context) -> None:
    art = gce.write(context)
    assert art.path.name.endswith(".tar.gz")
    with tarfile.open(art.path, "r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["disk.raw"]
        member = members[0]
        assert member.isfile()  # a real file, not a symlink
        assert member.size % gce.GiB == 0 and member.size == gce.GiB
        extracted = tar.extractfile(member)
        assert extracted is not None
        extracted.seek(MiB)
        assert extracted.read(8) == b"lockgate"
    # GNU "oldgnu" header: magic "ustar  \0" at offset 257 of the first block.
    import gzip

    with gzip.open(art.path, "rb") as f:
        header = f.read(512)
    assert header[257:265] == b"ustar  \x00"
    # Reproducible: pigz -n, fixed mtime, owner and mode.
    assert gce.write(context).sha256 == art.sha256


def test_gce_padding() -> None:
    assert gce.padded_size(1) == gce.GiB
    assert gce.padded_size(gce.GiB) == gce.GiB
    assert gce.padded_size(2 * gce.GiB + 1) == 3 * gce.GiB


def test_upgrade_bundle_carries_the_root_image_and_its_hash(context: Context) -> None:
    """The bundle's own rules (signature, refusals) are in tests/unit/test_bundle.py."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lockgate.runtime.system import bundle as bundles
    from lockgate.runtime.system.keys import PublicKey

    body = b"ext4" * 4096
    context.root_image.write_bytes(body)
    context.kernel_version = "6.1.0-test-cloud-amd64"
    context.signing_key = Ed25519PrivateKey.generate()
    art = upgrade.write(context)
    assert art.path.name == "lockgate-9.8.7.upgrade" and art.format == "upgrade"
    trusted = [PublicKey(context.signing_key.public_key(), "test")]
    bundle, _ = bundles.verify(art.path, trusted, architecture=bundles.machine_architecture())
    manifest = bundle.manifest
    assert manifest["version"] == "9.8.7"
    assert manifest["format"] == upgrade.BUNDLE_FORMAT
    import hashlib

    assert manifest["rootfs"] == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                  "fs_uuid": str(context.derived_uuid("fs-root-a")),
                                  "block_size": bundles.BLOCK_SIZE}
    assert manifest["kernel"] == "6.1.0-test-cloud-amd64"
    assert manifest["kernel_cmdline"] == context.profile.kernel_cmdline
    out = bytearray()
    bundles.stream_rootfs(bundle, lambda offset, data, zero: out.extend(data))
    assert bytes(out) == body
    assert upgrade.write(context).sha256 == art.sha256  # reproducible
