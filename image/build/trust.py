"""What the appliance trusts for upgrades, baked into the root slot.

* ``/etc/lockgate/trusted-keys.d/<key id>.pub``: every ``--trusted-key`` and the
  public half of ``--signing-key`` (more than one, so keys can be rotated: a
  version that trusts old and new keys can install bundles signed by either);
* ``/etc/lockgate/release.json``: this slot's version and architecture, so the
  running system knows which version it is (its configuration follows it).
"""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lockgate.image.build.context import Context
from lockgate.paths import RELEASE_FILE, TRUSTED_KEYS_DIR
from lockgate.runtime.system.bundle import machine_architecture
from lockgate.runtime.system.keys import key_id, public_pem


def trusted_pems(context: Context) -> list[bytes]:
    pems = list(context.trusted_keys)
    if context.signing_key is not None:
        pems.append(public_pem(context.signing_key.public_key()))
    return list(dict.fromkeys(pems))


def bake_upgrade_trust(context: Context) -> list[str]:
    """Write the trusted keys and the release record into the rootfs; returns the key ids."""
    root = context.rootfs
    folder = root / TRUSTED_KEYS_DIR.relative_to("/")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.pub"):
        old.unlink()
    ids = []
    for pem in trusted_pems(context):
        key = serialization.load_pem_public_key(pem)
        assert isinstance(key, Ed25519PublicKey)
        kid = key_id(key.public_bytes_raw())
        target = folder / f"{kid.replace(':', '-')}.pub"
        target.write_bytes(pem)
        target.chmod(0o644)
        ids.append(kid)
    release = root / RELEASE_FILE.relative_to("/")
    release.write_text(json.dumps({"version": context.version,
                                   "architecture": machine_architecture()}, sort_keys=True) + "\n")
    release.chmod(0o644)
    return ids
