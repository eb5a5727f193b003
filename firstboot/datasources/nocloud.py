"""NoCloud: user-data and meta-data from a seed directory or a volume labelled CIDATA.

A seed directory (``/var/lib/cloud/seed/nocloud`` by default) holds the files
``user-data`` and ``meta-data``. A FAT volume labelled ``CIDATA`` (or
``cidata``) is read without mounting it, with mtools (``mcopy -i DEVICE
::user-data -``), so first boot needs no mount point and leaves nothing
mounted. ISO 9660 seeds are not read (mount them and use the seed directory).

``meta-data`` is YAML, read with PyYAML's C loader (``CSafeLoader``, the pure
Python ``SafeLoader`` when PyYAML was built without libyaml).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from lockgate.firstboot.datasources.base import (
    DEV,
    DatasourceError,
    InstanceData,
    NothingToReport,
    key_lines,
)

log = logging.getLogger("lockgate.firstboot.nocloud")

DEFAULT_SEED_DIRS = (Path("/var/lib/cloud/seed/nocloud"), Path("/var/lib/cloud/seed/nocloud-net"))
LABELS = ("CIDATA", "cidata")
DEFAULT_INSTANCE_ID = "iid-dsnocloud"  # what cloud-init assumes when meta-data names none
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


def load_meta_data(text: str) -> dict[str, Any]:
    """A NoCloud ``meta-data`` document as a mapping (YAML, PyYAML's C loader when built)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(text, Loader=loader)  # a safe loader: plain data only
    except yaml.YAMLError as exc:
        raise DatasourceError(f"meta-data is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise DatasourceError("meta-data is not a YAML mapping")
    return {str(k): v for k, v in doc.items()}


def parse_meta_data(text: str) -> dict[str, str]:
    """Top-level scalar keys of a NoCloud ``meta-data`` document, as text."""
    return {k: str(v) for k, v in load_meta_data(text).items()
            if v is not None and v != "" and not isinstance(v, dict | list)}


def meta_data_keys(value: Any) -> tuple[str, ...]:
    """``public-keys`` as cloud-init takes it: a string (one key a line), a list, or a
    mapping whose values are either."""
    if isinstance(value, dict):
        values = list(value.values())
    elif isinstance(value, list):
        values = value
    else:
        values = [value]
    keys: list[str] = []
    for item in values:
        if isinstance(item, list):
            keys += [str(i).strip() for i in item if str(i).strip()]
        elif isinstance(item, str):
            keys += key_lines(item)
    return tuple(dict.fromkeys(keys))


class NoCloudSource(NothingToReport):
    name: ClassVar[str] = "nocloud"

    def __init__(self, seed_dirs: Sequence[Path] = DEFAULT_SEED_DIRS, *, dev_root: Path = DEV,
                 device: Path | None = None) -> None:
        self.seed_dirs = list(seed_dirs)
        self.dev_root = dev_root
        self.device = device

    def _seed_dir(self) -> Path | None:
        for directory in self.seed_dirs:
            if (directory / "meta-data").is_file() or (directory / "user-data").is_file():
                return directory
        return None

    def _find_device(self) -> Path | None:
        if self.device is not None:
            return self.device if self.device.exists() else None
        for label in LABELS:
            candidate = self.dev_root / "disk/by-label" / label
            if candidate.exists():
                return candidate
        return None

    def detect(self) -> bool:
        return self._seed_dir() is not None or self._find_device() is not None

    def _read_volume(self, device: Path, timeout: float) -> dict[str, bytes]:
        from lockgate.proc import RunError, run

        try:
            listing = run(["mdir", "-b", "-i", device, "::"], capture=True, env=MTOOLS_ENV,
                          quiet=True, timeout=timeout)
        except RunError as exc:
            raise DatasourceError(f"{device}: cannot read the CIDATA volume (FAT expected): "
                                  f"{exc}") from None
        present = {line.strip().removeprefix("::/").lower()
                   for line in listing.stdout.decode(errors="replace").splitlines()}
        files: dict[str, bytes] = {}
        for name in ("user-data", "meta-data"):
            if name not in present:
                continue
            try:
                proc = run(["mcopy", "-n", "-i", device, f"::{name}", "-"], capture=True,
                           env=MTOOLS_ENV, quiet=True, timeout=timeout)
            except RunError as exc:
                raise DatasourceError(f"{device}: cannot read {name}: {exc}") from None
            files[name] = proc.stdout
        return files

    def fetch(self, timeout: float = 60.0) -> InstanceData:
        seed = self._seed_dir()
        origin: str
        if seed is not None:
            origin = str(seed)
            files = {name: (seed / name).read_bytes() for name in ("user-data", "meta-data")
                     if (seed / name).is_file()}
        else:
            device = self._find_device()
            if device is None:
                raise DatasourceError("no NoCloud seed: no seed directory and no volume "
                                      "labelled CIDATA")
            origin = str(device)
            files = self._read_volume(device, timeout)
        document = load_meta_data(files.get("meta-data", b"").decode("utf-8", errors="replace"))
        meta = {k: str(v) for k, v in document.items()
                if v is not None and v != "" and not isinstance(v, dict | list)}
        instance_id = meta.get("instance-id") or meta.get("instance_id") or DEFAULT_INSTANCE_ID
        metadata = {"seed": origin}
        for key in ("local-hostname", "hostname"):
            if meta.get(key):
                metadata["local-hostname"] = meta[key]
                break
        log.info("NoCloud seed %s: instance %s", origin, instance_id)
        keys = meta_data_keys(document.get("public-keys", document.get("public_keys")))
        return InstanceData("nocloud", instance_id, files.get("user-data") or None, metadata,
                            keys)
