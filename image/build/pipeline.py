"""``lockgate image build``: a flat list of steps over one Context.

    build_rootfs      mmdebstrap (cached by package fields) -> work/rootfs
    install_lockgate  venv in /opt/lockgate from this checkout's wheel
    configure_system  read-only root, units, network, first-boot identity
    bake_upgrade_keys trusted upgrade keys and the release record (/etc/lockgate)
    check_initramfs   lsinitramfs: every cloud driver is there
    check_secrets     no private keys, host keys, machine id or password hashes
    make_bootloader   GRUB for BIOS and UEFI, grub.cfg, slot-a.cfg, grubenv
    make_filesystems  root-a.ext4, data.ext4, esp.vfat (reproducible)
    make_disk         GPT + partitions + GRUB boot sector -> lockgate-<v>.raw
    write_formats     qcow2, vhd, vmdk, gce, upgrade (as asked)
    write_manifest    build/manifest.json (artifacts, partitions, packages)

Each step's time (and, for the two cached steps, whether the cache served it)
goes to ``<out>/build-times.json``, apart from the manifest so the manifest
stays the same from build to build.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click

from lockgate.image import gpt
from lockgate.image.build import (
    bootloader,
    checks,
    configure,
    disk,
    filesystems,
    install,
    rootfs,
    trust,
)
from lockgate.image.build.context import Context
from lockgate.image.formats import write_format
from lockgate.image.manifest import (
    TIMES_FILE,
    TIMES_FORMAT,
    build_manifest,
    installed_packages,
    write_manifest,
)


@dataclass
class State:
    """What steps hand to later steps beyond the Context itself."""

    esp_files: dict[str, Path] = field(default_factory=dict)
    layout: gpt.Layout | None = None


def build_rootfs(context: Context, state: State) -> None:
    rootfs.build_rootfs(context)


def install_lockgate(context: Context, state: State) -> None:
    install.install_lockgate(context)


def configure_system(context: Context, state: State) -> None:
    configure.configure_system(context)


def bake_upgrade_keys(context: Context, state: State) -> None:
    ids = trust.bake_upgrade_trust(context)
    click.echo(f"    trusted upgrade keys: {', '.join(ids) or 'none (bundles must be unsigned)'}")


def check_initramfs(context: Context, state: State) -> None:
    checks.verify_initramfs(context.rootfs, context.kernel_version,
                            context.profile.initramfs_drivers)


def check_secrets(context: Context, state: State) -> None:
    checks.refuse_secrets(context.rootfs)
    checks.refuse_secrets(context.data_tree)


def make_bootloader(context: Context, state: State) -> None:
    state.esp_files = bootloader.make_bootloader(context)


def make_filesystems(context: Context, state: State) -> None:
    sizes = context.profile.disk
    filesystems.make_ext4(context, context.rootfs, context.root_image, sizes.root,
                          context.derived_uuid("fs-root-a"), "lockgate-root")
    filesystems.make_ext4(context, context.data_tree, context.data_image,
                          sizes.data, context.derived_uuid("fs-data"), "lockgate-data")
    filesystems.make_esp(context, context.esp_image, sizes.esp, context.fat_serial(),
                         state.esp_files)


def make_disk(context: Context, state: State) -> None:
    state.layout = disk.plan(context)
    disk.assemble_disk(context, state.layout)
    bootloader.install_bios_boot(context, state.layout)


def write_formats(context: Context, state: State) -> None:
    for name in context.formats:
        started = time.monotonic()
        result = write_format(context, name)
        context.artifacts.append(result)
        click.echo(f"    {name:8s} {result.path}  {result.size / 2**20:,.0f} MiB  "
                   f"({time.monotonic() - started:.1f} s)")


def write_manifest_step(context: Context, state: State) -> None:
    assert state.layout is not None
    manifest = build_manifest(context, state.layout, installed_packages(context.rootfs))
    write_manifest(context.manifest_path, manifest)


Step = Callable[[Context, State], None]

STEPS: list[tuple[str, Step]] = [
    ("build_rootfs", build_rootfs),
    ("install_lockgate", install_lockgate),
    ("configure_system", configure_system),
    ("bake_upgrade_keys", bake_upgrade_keys),
    ("check_initramfs", check_initramfs),
    ("check_secrets", check_secrets),
    ("make_bootloader", make_bootloader),
    ("make_filesystems", make_filesystems),
    ("make_disk", make_disk),
    ("write_formats", write_formats),
    ("write_manifest", write_manifest_step),
]


# Steps that a cache can serve: "is it there?" asked just before the step runs.
CACHE_PROBES: dict[str, Callable[[Context], bool]] = {
    "build_rootfs": lambda c: rootfs.rootfs_tarball(c).exists(),
    "install_lockgate": lambda c: ((install.wheels_dir(c) / ".complete").exists()
                                   and any(install.lockgate_wheel_dir(c).glob("lockgate-*.whl"))),
}


def times_record(context: Context, started_at: str, steps: list[dict[str, object]],
                 total_s: float, complete: bool) -> dict[str, object]:
    """What ``build-times.json`` holds (``cached``: null for steps no cache serves)."""
    probed = [s["cached"] for s in steps if s["cached"] is not None]
    return {"format": TIMES_FORMAT, "version": context.version, "started": started_at,
            "cache_dir": str(context.cache_dir), "complete": complete,
            # A cold build: every cacheable step ran without its cache.
            "cold": bool(probed) and not any(probed),
            "total_s": round(total_s, 2), "steps": steps}


def run_pipeline(context: Context, steps: list[tuple[str, Step]] | None = None) -> State:
    state = State()
    context.out_dir.mkdir(parents=True, exist_ok=True)
    context.work_dir.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    done: list[dict[str, object]] = []
    complete = False
    times = context.out_dir / TIMES_FILE
    times.unlink(missing_ok=True)  # never leave an older build's times beside this build
    try:
        for name, step in steps or STEPS:
            click.echo(f"==> {name}")
            probe = CACHE_PROBES.get(name)
            cached = probe(context) if probe else None
            t0 = time.monotonic()
            step(context, state)
            seconds = time.monotonic() - t0
            done.append({"name": name, "seconds": round(seconds, 2), "cached": cached})
            click.echo(f"    {name} done in {seconds:.1f} s")
        complete = True
    finally:
        # Written also when a step fails (complete: false): the times up to it still tell.
        record = times_record(context, started_at, done, time.monotonic() - started, complete)
        times.write_text(json.dumps(record, indent=2) + "\n")
    click.echo(f"==> built {context.disk_image} in {time.monotonic() - started:.1f} s")
    return state
