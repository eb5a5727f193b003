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
    write_formats     raw first, then qcow2, vhd, vmdk, gce, upgrade (as asked) side by
                      side, each served from the format cache when its input is unchanged
    write_manifest    build/manifest.json (artifacts, partitions, packages)

Each step's time, its CPU time (user + sys, this process and its programs)
and, for the cached steps, whether the cache served it go to
``<out>/build-times.json``, apart from the manifest so the manifest stays the
same from build to build. ``write_formats`` also lists each format's seconds
and whether the format cache served it.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
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
from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import cache as format_cache
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
    # Extra fields for a step's build-times.json record, by step name.
    details: dict[str, dict[str, object]] = field(default_factory=dict)


def build_rootfs(context: Context, state: State) -> None:
    rootfs.build_rootfs(context)


def install_lockgate(context: Context, state: State) -> None:
    if context.profile.stock:
        click.echo("    stock profile: Debian alone, no lockgate")
        return
    install.install_lockgate(context)


def configure_system(context: Context, state: State) -> None:
    configure.configure_system(context)


def bake_upgrade_keys(context: Context, state: State) -> None:
    if context.profile.stock:
        return
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


def _say_format(name: str, art: Artifact, seconds: float, cached: bool) -> None:
    click.echo(f"    {name:8s} {art.path}  {art.size / 2**20:,.0f} MiB  ({seconds:.1f} s"
               f"{', cached' if cached else ''})")


def _timed_write(context: Context, name: str) -> tuple[Artifact, float]:
    started = time.monotonic()
    result = write_format(context, name)
    return result, time.monotonic() - started


def write_formats(context: Context, state: State) -> None:
    """raw first (every other format reads it), then the others at the same time: they
    only read the raw disk (the page cache serves it once). qcow2 and VMDK compress in
    thread pools of their own, gce (pigz) and upgrade (zstd -T0) on every core, at
    levels chosen for CPU time (a warm rebuild on 2 shared cores is bound by it)."""
    done: dict[str, Artifact] = {}
    times: list[dict[str, object]] = []
    raw, seconds = _timed_write(context, "raw")
    _say_format("raw", raw, seconds, False)
    times.append({"name": "raw", "seconds": round(seconds, 2), "cached": None})
    done["raw"] = raw
    misses = []
    for name in context.formats:
        if name == "raw":
            continue
        started = time.monotonic()
        key = format_cache.cache_key(raw.sha256, format_cache.params(context, name))
        hit = format_cache.lookup(context, name, key)
        if hit is None:
            misses.append((name, key))
            continue
        seconds = time.monotonic() - started
        done[name] = hit
        _say_format(name, hit, seconds, True)
        times.append({"name": name, "seconds": round(seconds, 2), "cached": True})
    with ThreadPoolExecutor(max_workers=max(1, len(misses)),
                            thread_name_prefix="format") as pool:
        futures = {pool.submit(_timed_write, context, name): (name, key) for name, key in misses}
        for future in as_completed(futures):
            name, key = futures[future]
            result, seconds = future.result()
            format_cache.store(context, name, key, result)
            done[name] = result
            _say_format(name, result, seconds, False)
            times.append({"name": name, "seconds": round(seconds, 2), "cached": False})
    # The manifest lists the artifacts in --formats order, whatever finished first.
    context.artifacts.extend(done[name] for name in context.formats if name in done)
    probed = [t["cached"] for t in times if t["cached"] is not None]
    state.details["write_formats"] = {"cached": all(probed) if probed else None,
                                      "formats": times}


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


def cpu_seconds() -> float:
    """User + system CPU time of this process and the programs it ran (and waited for)."""
    own, children = (resource.getrusage(resource.RUSAGE_SELF),
                     resource.getrusage(resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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
            t0, cpu0 = time.monotonic(), cpu_seconds()
            step(context, state)
            seconds = time.monotonic() - t0
            record: dict[str, object] = {"name": name, "seconds": round(seconds, 2),
                                         "cpu_s": round(cpu_seconds() - cpu0, 2),
                                         "cached": cached}
            record.update(state.details.pop(name, {}))
            done.append(record)
            click.echo(f"    {name} done in {seconds:.1f} s")
        complete = True
    finally:
        # Written also when a step fails (complete: false): the times up to it still tell.
        record = times_record(context, started_at, done, time.monotonic() - started, complete)
        times.write_text(json.dumps(record, indent=2) + "\n")
    click.echo(f"==> built {context.disk_image} in {time.monotonic() - started:.1f} s")
    return state
