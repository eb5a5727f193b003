"""NoCloud seed media: a small FAT image labelled ``CIDATA``.

:func:`make_cidata_image` writes ``user-data`` and ``meta-data`` (and
optionally ``network-config`` / ``vendor-data``) into a fresh FAT image with
``mkfs.vfat`` and ``mcopy`` (no mounting, no root). Attach it to a VM as a
second disk (``-drive file=seed.img,format=raw,if=virtio,readonly=on``); the
guest finds it at ``/dev/disk/by-label/CIDATA``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lockgate.proc import run

LABEL = "CIDATA"
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}  # our images have no real disk geometry


def default_meta_data(instance_id: str = "iid-lockgate-local", hostname: str = "lockgate",
                      public_keys: Sequence[str] = ()) -> bytes:
    """``meta-data`` as cloud-init's NoCloud reads it; keys as a ``public-keys`` list."""
    text = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    if public_keys:  # JSON strings are YAML double-quoted scalars
        text += "public-keys:\n" + "".join(f"  - {json.dumps(k)}\n" for k in public_keys)
    return text.encode()


def make_cidata_image(
    path: Path,
    user_data: bytes | str,
    meta_data: bytes | str | None = None,
    *,
    network_config: bytes | str | None = None,
    vendor_data: bytes | str | None = None,
    size_kib: int | None = None,
) -> Path:
    """Build ``path`` (replaced if it exists) and return it."""
    files = {"user-data": user_data, "meta-data": meta_data or default_meta_data()}
    if network_config is not None:
        files["network-config"] = network_config
    if vendor_data is not None:
        files["vendor-data"] = vendor_data
    blobs = {name: v.encode() if isinstance(v, str) else v for name, v in files.items()}
    payload_kib = sum(len(b) for b in blobs.values()) // 1024
    size = size_kib or max(1024, 2 * payload_kib + 512)  # FAT12 overhead plus slack
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    run(["mkfs.vfat", "-n", LABEL, "-C", path, str(size)], capture=True, quiet=True)
    with tempfile.TemporaryDirectory(prefix="cidata-") as tmp:
        for name, blob in blobs.items():
            src = Path(tmp) / name
            src.write_bytes(blob)
            run(["mcopy", "-o", "-i", path, src, f"::{name}"], env=MTOOLS_ENV, capture=True,
                quiet=True)
    return path
