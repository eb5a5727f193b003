"""The package layer: the mmdebstrap command line and its cache key."""

from __future__ import annotations

from pathlib import Path

from lockgate.image.build.context import Context
from lockgate.image.build.profile import load_profile
from lockgate.image.build.rootfs import DRIVER_HOOK, mmdebstrap_argv, rootfs_tarball

REPO = Path(__file__).resolve().parents[2]


def make_context(tmp_path: Path) -> Context:
    profile = load_profile(REPO / "image/profiles/appliance.yaml")
    return Context(profile=profile, version="1.0", source_date_epoch=1700000000,
                   formats=("raw",), out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")


def test_mmdebstrap_argv(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    argv = mmdebstrap_argv(ctx, tmp_path / "root.tar", tmp_path / "hooks")
    assert argv[:4] == ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar"]
    include = next(a for a in argv if a.startswith("--include="))
    packages = include.removeprefix("--include=").split(",")
    assert list(ctx.profile.packages) == packages
    assert "linux-image-cloud-amd64" in packages and "grub2-common" in packages
    # Downloaded .debs go back into the cache and never stay in the image.
    assert f"--setup-hook=sync-in {tmp_path}/cache/debs /var/cache/apt/archives" in argv
    assert f"--customize-hook=sync-out /var/cache/apt/archives {tmp_path}/cache/debs" in argv
    assert '--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb' in argv
    assert '--customize-hook=chroot "$1" update-initramfs -u -k all' in argv
    assert argv[-5:] == ["bookworm", str(tmp_path / "root.tar"), "http://deb.debian.org/debian",
                         "deb http://deb.debian.org/debian bookworm-updates main",
                         "deb http://deb.debian.org/debian-security bookworm-security main"]


def test_driver_hook_adds_every_module() -> None:
    hook = DRIVER_HOOK.format(modules="nvme ena gve")
    assert hook.startswith("#!/bin/sh\n")
    assert "for module in nvme ena gve; do" in hook
    assert 'manual_add_modules "$module"' in hook
    assert 'prereqs) prereqs; exit 0;;' in hook


def test_tarball_is_keyed_by_package_fields(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    path = rootfs_tarball(ctx)
    assert path.parent == tmp_path / "cache/rootfs"
    assert path.name == f"bookworm-{ctx.profile.rootfs_key()[:16]}.tar"
