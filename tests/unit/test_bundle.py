"""Signed upgrade bundles: keygen, writing, and every way a bundle is refused.

Bundles are made from a small real ext4 image (``mkfs.ext4 -d``) with the
same code the image build uses, then damaged on purpose.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lockgate.image.formats.upgrade import write_bundle
from lockgate.runtime.system import bundle as bundles
from lockgate.runtime.system.keys import generate, load_private, load_public

MiB = 1024 * 1024
ARCH = "amd64"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundle")


@pytest.fixture(scope="module")
def rootfs(work: Path) -> Path:
    """A 16 MiB ext4 holding 1 MiB of random bytes (so the compressed member is not tiny)."""
    tree = work / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/issue").write_text("lockgate test root\n")
    (tree / "random.bin").write_bytes(os.urandom(MiB))
    image = work / "rootfs.ext4"
    with image.open("wb") as f:
        f.truncate(16 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image)], check=True,
                   env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"})
    return image


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, Path]:
    generate(work / "good")
    generate(work / "other")
    return {"good": work / "good", "other": work / "other"}


def make(work: Path, rootfs: Path, name: str, key: Path | None, *, version: str = "2.0.0",
         architecture: str = ARCH) -> Path:
    target = work / f"{name}.upgrade"
    write_bundle(target, version=version, rootfs=rootfs, fs_uuid="6c3f5a2e-0000-4000-8000-000000000002",
                 kernel="6.1.0-test-cloud-amd64", kernel_cmdline="ro console=ttyS0,115200 panic=10",
                 source_date_epoch=1700000000,
                 signing_key=load_private(Path(f"{key}.key")) if key else None,
                 architecture=architecture)
    return target


@pytest.fixture(scope="module")
def good(work: Path, rootfs: Path, keys: dict[str, Path]) -> Path:
    return make(work, rootfs, "good", keys["good"])


def verify(path: Path, *trusted: Path, allow_unsigned: bool = False) -> bundles.Bundle:
    bundle, _ = bundles.verify(path, [load_public(Path(f"{k}.pub")) for k in trusted],
                               architecture=ARCH, allow_unsigned=allow_unsigned)
    return bundle


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != bundles.ALLOW_UNSIGNED_ENV}
    return subprocess.run([sys.executable, "-m", "lockgate", "system", "bundle", "verify",
                           "--keys-dir", "/nonexistent", *map(str, args)],
                          capture_output=True, text=True, env={**full, **(env or {})}, timeout=60)


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def copy_with(src: Path, dst: Path, data: bytes) -> Path:
    dst.write_bytes(data)
    return dst


# ------------------------------------------------------------------ keys

def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_public_key(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lockgate", "image", "keygen", tmp_path / "site"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    key, pub = tmp_path / "site.key", tmp_path / "site.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in key.read_bytes() and b"BEGIN PUBLIC KEY" in pub.read_bytes()
    assert load_private(key).public_key().public_bytes_raw() == load_public(pub).raw
    assert load_public(pub).key_id in proc.stdout
    again = subprocess.run([sys.executable, "-m", "lockgate", "image", "keygen", tmp_path / "site"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in one_error(again)


def test_a_world_readable_signing_key_is_refused(tmp_path: Path) -> None:
    generate(tmp_path / "k")
    os.chmod(tmp_path / "k.key", 0o644)
    from lockgate.errors import BadInput

    with pytest.raises(BadInput, match="readable by others"):
        load_private(tmp_path / "k.key")


# ------------------------------------------------------------------ good bundles

def test_a_good_bundle_verifies_and_streams_back_the_exact_root_filesystem(
        good: Path, rootfs: Path, keys: dict[str, Path]) -> None:
    bundle = verify(good, keys["other"], keys["good"])  # one of several trusted keys
    assert bundle.version == "2.0.0" and bundle.architecture == ARCH and bundle.signed
    assert bundle.manifest["rootfs"] == {
        "fs_uuid": "6c3f5a2e-0000-4000-8000-000000000002", "size": 16 * MiB,
        "sha256": bundle.rootfs.uncompressed_sha256, "block_size": MiB}
    names = [m.name for m in bundle.members]
    assert names == [bundles.CMDLINE, bundles.BLOCKS, bundles.ROOTFS]
    assert bundles.read_member(bundle, bundles.CMDLINE) == b"ro console=ttyS0,115200 panic=10\n"
    out = bytearray()
    bundles.stream_rootfs(bundle, lambda offset, data, zero: out.extend(data))
    assert bytes(out) == rootfs.read_bytes()
    # Unused blocks are zeros: the bundle costs about what the used blocks do.
    assert good.stat().st_size < 2 * MiB


def test_verify_prints_a_summary_and_exits_0(good: Path, keys: dict[str, Path]) -> None:
    proc = cli(good, "--trusted-key", f"{keys['good']}.pub")
    assert proc.returncode == 0, proc.stderr
    assert "version:      2.0.0" in proc.stdout
    assert load_public(Path(f"{keys['good']}.pub")).key_id in proc.stdout
    assert "good" in proc.stdout.splitlines()[-1]


def test_the_same_inputs_give_the_same_bundle(work: Path, rootfs: Path, good: Path,
                                              keys: dict[str, Path]) -> None:
    again = make(work, rootfs, "again", keys["good"])
    assert again.read_bytes() == good.read_bytes()


def test_keys_in_the_baked_in_folder_are_trusted(good: Path, keys: dict[str, Path],
                                                 tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_bytes(Path(f"{keys['good']}.pub").read_bytes())
    proc = subprocess.run([sys.executable, "-m", "lockgate", "system", "bundle", "verify",
                           "--keys-dir", tmp_path, good], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ refusals

def test_unsigned_is_refused_unless_both_parts_of_the_developer_switch_are_on(
        work: Path, rootfs: Path) -> None:
    unsigned = make(work, rootfs, "unsigned", None)
    assert "unsigned" in one_error(cli(unsigned))
    assert "unsigned" in one_error(cli(unsigned, "--allow-unsigned"))
    assert "unsigned" in one_error(cli(unsigned, env={bundles.ALLOW_UNSIGNED_ENV: "1"}))
    proc = cli(unsigned, "--allow-unsigned", env={bundles.ALLOW_UNSIGNED_ENV: "1"})
    assert proc.returncode == 0, proc.stderr
    assert "unsigned (allowed by the developer switch)" in proc.stdout


def test_a_bundle_signed_by_an_unknown_key_is_refused(good: Path, keys: dict[str, Path]) -> None:
    line = one_error(cli(good, "--trusted-key", f"{keys['other']}.pub"))
    assert "not a trusted key" in line
    assert load_public(Path(f"{keys['good']}.pub")).key_id in line
    assert "no key is trusted" in one_error(cli(good))


def test_a_bundle_for_another_architecture_is_refused(work: Path, rootfs: Path,
                                                      keys: dict[str, Path]) -> None:
    arm = make(work, rootfs, "arm", keys["good"], architecture="arm64")
    line = one_error(cli(arm, "--trusted-key", f"{keys['good']}.pub", "--architecture", ARCH))
    assert "built for arm64, this machine is amd64" in line


@pytest.mark.parametrize("content", [b"", b"hello", b"\x7fELF" + bytes(4000),
                                     b"LOCKGATE-BUNDLE\n" + bytes(3)])
def test_not_a_bundle_is_refused(tmp_path: Path, content: bytes, keys: dict[str, Path]) -> None:
    path = copy_with(tmp_path / "x", tmp_path / "x.upgrade", content)
    line = one_error(cli(path, "--trusted-key", f"{keys['good']}.pub"))
    assert "not a lockgate upgrade bundle" in line or "truncated" in line


def regions(bundle: bundles.Bundle) -> dict[str, int]:
    """One byte offset in each part of the file."""
    rootfs = bundle.rootfs
    return {"magic": 3, "lengths": 17, "manifest": 24 + len(bundle.manifest_bytes) // 2,
            "signature": 24 + len(bundle.manifest_bytes) + 10,
            "cmdline": bundle.member(bundles.CMDLINE).offset + 2,
            "blocks": bundle.member(bundles.BLOCKS).offset + 7,
            "rootfs-start": rootfs.offset + 5, "rootfs-middle": rootfs.offset + rootfs.size // 2,
            "last-byte": bundle.end - 1}


def test_one_flipped_byte_anywhere_is_refused(good: Path, keys: dict[str, Path],
                                              tmp_path: Path) -> None:
    data = good.read_bytes()
    bundle = bundles.read_header(good)
    # Every named part, plus a sweep of evenly spaced offsets across the whole file.
    offsets = {**regions(bundle), **{f"sweep-{i}": i * len(data) // 40 for i in range(40)}}
    for where, offset in offsets.items():
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        path = copy_with(good, tmp_path / f"{where}.upgrade", bytes(damaged))
        with pytest.raises(bundles.BundleError) as caught:
            verify(path, keys["good"])
        assert "\n" not in str(caught.value.message), where


def test_a_flipped_byte_in_the_compressed_rootfs_is_found_by_the_cli_too(
        good: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(good.read_bytes())
    rootfs = bundles.read_header(good).rootfs
    data[rootfs.offset + rootfs.size // 3] ^= 0x80
    line = one_error(cli(copy_with(good, tmp_path / "t.upgrade", bytes(data)),
                         "--trusted-key", f"{keys['good']}.pub"))
    assert "rootfs.ext4.zst" in line and "changed after" in line


def test_a_truncated_bundle_is_refused(good: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    data = good.read_bytes()
    bundle = bundles.read_header(good)
    for cut in (10, 30, 24 + len(bundle.manifest_bytes) + 5, bundle.rootfs.offset + 100,
                len(data) - 1):
        path = copy_with(good, tmp_path / f"cut{cut}.upgrade", data[:cut])
        with pytest.raises(bundles.BundleError, match=r"truncated|not a lockgate"):
            verify(path, keys["good"])
    line = one_error(cli(copy_with(good, tmp_path / "c.upgrade", data[: len(data) // 2]),
                         "--trusted-key", f"{keys['good']}.pub"))
    assert "truncated" in line


def test_bytes_appended_after_the_last_member_are_refused(good: Path, keys: dict[str, Path],
                                                          tmp_path: Path) -> None:
    path = copy_with(good, tmp_path / "long.upgrade", good.read_bytes() + b"\0")
    with pytest.raises(bundles.BundleError, match="after the last member"):
        verify(path, keys["good"])
