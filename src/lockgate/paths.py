"""Where the appliance keeps things. One place, so every part agrees.

The root slots are read-only; everything that changes lives on the data
partition, mounted at ``/var/lib/lockgate`` (``/var/log`` is bound into it).
Every path hangs off a base directory so tests and ``--root DIR`` runs work
on a temporary tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("/var/lib/lockgate")  # the data partition's mount point
RUN_DIR = Path("/run/lockgate")  # volatile status, recreated every boot
PRODUCT_HOME = Path("/opt/lockgate")
# In the root slot, baked by the build: the public keys upgrade bundles must be
# signed with (*.pub, more than one for key rotation) and the slot's own version.
TRUSTED_KEYS_DIR = Path("/etc/lockgate/trusted-keys.d")
RELEASE_FILE = Path("/etc/lockgate/release.json")


@dataclass(frozen=True)
class StatePaths:
    base: Path  # the state directory (data partition)

    @classmethod
    def under_root(cls, root: Path) -> StatePaths:
        return cls(root / STATE_DIR.relative_to("/"))

    @property
    def config(self) -> Path:
        return self.base / "config"

    @property
    def users(self) -> Path:
        """Admin users and password hashes (JSON, mode 0600)."""
        return self.config / "users.json"

    @property
    def licence(self) -> Path:
        return self.config / "licence.json"

    @property
    def cluster_join(self) -> Path:
        """A cluster join the runtime has not carried out yet (JSON, 0600)."""
        return self.config / "cluster-join.json"

    @property
    def runtime(self) -> Path:
        """The traffic manager's own configuration store."""
        return self.base / "runtime"

    @property
    def tls(self) -> Path:
        """Admin/REST certificate and key (key mode 0600)."""
        return self.base / "tls"

    @property
    def firstboot(self) -> Path:
        """Once-per-instance records."""
        return self.base / "firstboot"

    @property
    def versions(self) -> Path:
        """Each installed version's own configuration: ``versions/<version>/{config,runtime}``;
        ``config`` and ``runtime`` above are symlinks into the running version's."""
        return self.base / "versions"

    @property
    def slots(self) -> Path:
        """One record per root slot written by ``upgrade`` (``<slot>.json``)."""
        return self.base / "slots"


def run_dir(root: Path = Path("/")) -> Path:
    return root / RUN_DIR.relative_to("/")
