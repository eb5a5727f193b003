"""One ``Context`` carries the configuration and every path a build step needs.

Steps read the profile and paths from it and record what they produced
(kernel version, layout, artifacts) on it, so the pipeline stays a flat list
of ``verb_object(context)`` calls.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lockgate.errors import BadInput
from lockgate.image.build.profile import Profile

_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~_-]{0,63}$")
FORMATS = ("raw", "qcow2", "vhd", "vmdk", "gce", "upgrade")


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise BadInput(f"--version {version!r}: use letters, digits and . + ~ _ - "
                       "(it becomes the GRUB entry id lockgate-<version>)")
    return version


def parse_formats(text: str) -> tuple[str, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return FORMATS
    for name in names:
        if name not in FORMATS:
            raise BadInput(f"--formats: {name!r} is not one of {', '.join(FORMATS)} (or all)")
    if not names:
        raise BadInput("--formats: name at least one format")
    # raw is the source of every other format, so it is always made.
    return tuple(dict.fromkeys(["raw", *names]))


@dataclass(frozen=True)
class Artifact:
    format: str
    path: Path
    sha256: str
    size: int


@dataclass
class Context:
    profile: Profile
    version: str
    source_date_epoch: int
    formats: tuple[str, ...]
    out_dir: Path
    cache_dir: Path
    # Filled in by the steps, in pipeline order.
    kernel_version: str = ""
    artifacts: list[Artifact] = field(default_factory=list)
    # Upgrade bundles: the key that signs them (None: unsigned) and the PEM public
    # keys baked into the image as trusted (the signing key's own half among them).
    signing_key: Ed25519PrivateKey | None = None
    trusted_keys: tuple[bytes, ...] = ()

    @property
    def work_dir(self) -> Path:
        return self.out_dir / "work"

    @property
    def rootfs(self) -> Path:
        return self.work_dir / "rootfs"

    @property
    def data_tree(self) -> Path:
        """What the data partition starts with (its /var/log, /var/lib/systemd)."""
        return self.work_dir / "data-tree"

    @property
    def root_image(self) -> Path:
        return self.work_dir / "root-a.ext4"

    @property
    def data_image(self) -> Path:
        return self.work_dir / "data.ext4"

    @property
    def esp_image(self) -> Path:
        return self.work_dir / "esp.vfat"

    @property
    def disk_image(self) -> Path:
        return self.out_dir / f"lockgate-{self.version}.raw"

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"

    @property
    def entry_id(self) -> str:
        return f"lockgate-{self.version}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for every build program: reproducible timestamps, no locale noise."""
        return {"SOURCE_DATE_EPOCH": str(self.source_date_epoch), "LC_ALL": "C.UTF-8",
                "TZ": "UTC", "E2FSPROGS_FAKE_TIME": str(self.source_date_epoch)}

    def derived_uuid(self, purpose: str) -> uuid.UUID:
        """A fixed UUID for ``purpose``: same profile + version, same UUID."""
        seed = f"{self.profile.digest()}:{self.version}:{purpose}"
        return uuid.uuid5(uuid.NAMESPACE_URL, "lockgate:" + seed)

    def fat_serial(self) -> str:
        """The ESP's FAT volume id (8 hex digits), fixed like the UUIDs."""
        digest = hashlib.sha256(self.derived_uuid("esp-serial").bytes).hexdigest()
        return digest[:8].upper()

    def artifact_path(self, suffix: str) -> Path:
        return self.out_dir / f"lockgate-{self.version}.{suffix}"
