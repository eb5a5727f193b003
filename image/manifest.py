"""build/manifest.json: what was built, from what: artifacts, partitions, packages (SBOM)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lockgate.image.build.context import Context
from lockgate.image.gpt import Layout
from lockgate.proc import output

# Each build's step times, beside the manifest (kept out of it so the manifest stays the
# same from build to build): written by lockgate.image.build.pipeline, read by the bench.
TIMES_FILE = "build-times.json"
TIMES_FORMAT = "lockgate-build-times/1"

MANIFEST_FORMAT = 1


def installed_packages(root: Path) -> list[dict[str, str]]:
    """Debian packages in the rootfs (dpkg-query on its database) plus lockgate's venv."""
    text = output(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                   "-f=${Package}\t${Version}\t${Architecture}\n"])
    packages = []
    for line in text.splitlines():
        name, version, arch = line.split("\t")
        packages.append({"name": name, "version": version, "arch": arch, "type": "deb"})
    for dist in sorted((root / "opt/lockgate/lib").glob("python3*/site-packages/*.dist-info")):
        name, _, version = dist.name.removesuffix(".dist-info").rpartition("-")
        packages.append({"name": name, "version": version, "arch": "", "type": "python"})
    return packages


def build_manifest(context: Context, layout: Layout, packages: list[dict[str, str]]) -> dict[str, Any]:
    out = context.out_dir
    return {
        "manifest_format": MANIFEST_FORMAT,
        "name": context.profile.name,
        "version": context.version,
        "source_date_epoch": context.source_date_epoch,
        "profile_sha256": context.profile.digest(),
        "release": context.profile.release,
        "kernel": context.kernel_version,
        "firmware": str(context.profile.firmware),
        # check_initramfs proved each is in the image: publishing turns gve into GVNIC.
        "initramfs_drivers": sorted(context.profile.initramfs_drivers),
        "grub_entry": context.entry_id,
        "disk": {"size": layout.disk_size, "label_id": str(layout.label_id)},
        "artifacts": [{"format": a.format, "path": os.path.relpath(a.path, out),
                       "sha256": a.sha256, "size": a.size} for a in context.artifacts],
        "partitions": [{"number": p.number, "name": p.name, "type_guid": p.type_guid,
                        "partuuid": str(p.partuuid), "start": p.start, "size": p.size}
                       for p in layout.partitions],
        "packages": packages,
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
