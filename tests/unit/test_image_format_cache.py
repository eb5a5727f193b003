"""The format cache and the side-by-side format step, on a small synthetic disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lockgate.image.build import pipeline
from lockgate.image.build.context import FORMATS, Context
from lockgate.image.build.profile import load_profile
from lockgate.image.formats import cache, sha256_file
from lockgate.image.manifest import TIMES_FILE

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@pytest.fixture
def context(tmp_path: Path) -> Context:
    profile = load_profile(REPO / "image/profiles/appliance.yaml")
    ctx = Context(profile=profile, version="9.8.7", source_date_epoch=1700000000,
                  formats=FORMATS, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    ctx.work_dir.mkdir(parents=True)
    with ctx.disk_image.open("wb") as f:
        f.truncate(4 * MiB)
        f.seek(MiB)
        f.write(b"lockgate" * 1000)
    ctx.root_image.write_bytes(b"ext4" * 4096)
    ctx.kernel_version = "6.1.0-test-cloud-amd64"
    ctx.signing_key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    return ctx


def build_formats(context: Context) -> dict[str, object]:
    context.artifacts.clear()
    pipeline.run_pipeline(context, [("write_formats", pipeline.write_formats)])
    times: dict[str, object] = json.loads((context.out_dir / TIMES_FILE).read_text())
    return times


def format_times(times: dict[str, object]) -> dict[str, dict[str, object]]:
    steps = times["steps"]
    assert isinstance(steps, list) and steps[0]["name"] == "write_formats"
    return {f["name"]: f for f in steps[0]["formats"]}


def test_cache_key_follows_the_raw_disk_and_the_format_parameters(context: Context) -> None:
    params = cache.params(context, "qcow2")
    key = cache.cache_key("a" * 64, params)
    assert key == cache.cache_key("a" * 64, cache.params(context, "qcow2"))  # stable
    assert key != cache.cache_key("b" * 64, params)  # another raw disk
    assert key != cache.cache_key("a" * 64, cache.params(context, "vmdk"))  # another format
    assert str(cache.params(context, "vhd")["tools"][0]).startswith("qemu-img")
    # qcow2 is written in Python: zlib's version and the packing code (vmdk.py) count.
    assert params["zlib"] and params["packer"]
    for change in ({"source_date_epoch": 1}, {"name": "lockgate-1.qcow2"},
                   {"writer": "0" * 64}, {"zlib": "0.0"}, {"packer": "0" * 64}):
        assert cache.cache_key("a" * 64, {**params, **change}) != key, change
    # The bundle's own inputs beyond the raw disk: kernel, its command line, signing key.
    bundle = cache.params(context, "upgrade")
    context.kernel_version = "6.1.0-other"
    assert cache.params(context, "upgrade") != bundle
    context.kernel_version = bundle["kernel"]
    context.signing_key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    assert cache.params(context, "upgrade")["signing_key"] != bundle["signing_key"]
    context.signing_key = None
    assert cache.params(context, "upgrade")["signing_key"] is None


def test_second_build_of_the_same_raw_reuses_every_format(context: Context) -> None:
    first = build_formats(context)
    made = format_times(first)
    # Whatever order they finished in, the manifest lists them in --formats order.
    assert [a.format for a in context.artifacts] == list(FORMATS)
    assert made["raw"]["cached"] is None
    assert all(made[f]["cached"] is False for f in FORMATS[1:])
    assert first["steps"][0]["cached"] is False  # type: ignore[index]
    shas = {a.format: a.sha256 for a in context.artifacts}
    for a in context.artifacts:
        assert sha256_file(a.path) == a.sha256, a.format

    again = build_formats(context)
    reused = format_times(again)
    assert all(reused[f]["cached"] is True for f in FORMATS[1:]), reused
    assert again["steps"][0]["cached"] is True  # type: ignore[index]
    assert {a.format: a.sha256 for a in context.artifacts} == shas
    for a in context.artifacts:
        assert a.path.stat().st_size == a.size and sha256_file(a.path) == a.sha256, a.format

    # A changed raw disk is converted anew, and gives other bytes.
    with context.disk_image.open("r+b") as f:
        f.seek(2 * MiB)
        f.write(b"changed")
    third = format_times(build_formats(context))
    assert all(third[f]["cached"] is False for f in ("qcow2", "vhd", "vmdk", "gce")), third
    changed = {a.format: a.sha256 for a in context.artifacts}
    assert all(changed[f] != shas[f] for f in ("raw", "qcow2", "vhd", "vmdk", "gce"))
    # The two raw disks' entries are both kept (KEEP = 2) for every format.
    for fmt in FORMATS[1:]:
        assert len(list((context.cache_dir / "formats" / fmt).iterdir())) == cache.KEEP


def test_a_stored_file_changed_in_place_is_not_served(context: Context) -> None:
    context.formats = ("raw", "vmdk")
    build_formats(context)
    art = context.artifacts[1]
    with art.path.open("r+b") as f:  # the output and the cache share the file
        f.seek(100)
        f.write(b"tampered")
    again = format_times(build_formats(context))
    assert again["vmdk"]["cached"] is False
    assert sha256_file(context.artifacts[1].path) == context.artifacts[1].sha256
