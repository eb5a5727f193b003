"""Signed licence keys for the wizard tests: a trusted issuer in a temporary
``LOCKGATE_LICENCE_KEYS_DIR`` and key files it (or a stranger) signed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lockgate.runtime.licence import sign_licence

LICENCE = {"serial": "L-0042", "licensee": "Example Ltd", "bandwidth_mbit_s": 1000,
           "max_cluster_size": 16, "expires": None}


def trust_issuer(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Ed25519PrivateKey:
    """A new issuer whose public key is the only one the licence check trusts."""
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    (folder / "issuer.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("LOCKGATE_LICENCE_KEYS_DIR", str(folder))
    return key


def signed_key(issuer: Ed25519PrivateKey | None = None, **fields: Any) -> bytes:
    """A licence key file's bytes; ``issuer`` None signs with an untrusted stranger."""
    return sign_licence(issuer or Ed25519PrivateKey.generate(), {**LICENCE, **fields})
