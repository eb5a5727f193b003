"""Ed25519 keys for upgrade bundles: make a pair, load them, name them.

A key's id is ``ed25519:`` and the first 16 hex digits of the sha256 of its
raw 32-byte public key, so a refusal can say which key signed a bundle
without printing the key. Public keys are PEM (``SubjectPublicKeyInfo``);
private keys PEM PKCS#8, unencrypted, mode 0600 (the build runs unattended).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lockgate.errors import BadInput
from lockgate.files import atomic_write


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey
    source: str  # where it came from, for messages

    @property
    def raw(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    def verifies(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def key_id(raw_public: bytes) -> str:
    return "ed25519:" + hashlib.sha256(raw_public).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def generate(prefix: Path) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (0600) and ``PREFIX.pub``; refuses to overwrite either."""
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private_path, public_path):
        if path.exists():
            raise BadInput(f"{path} exists; move it away or choose another PREFIX")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    atomic_write(private_path, pem, mode=0o600, dir_mode=0o755)
    atomic_write(public_path, public_pem(private.public_key()), mode=0o644, dir_mode=0o755)
    return private_path, public_path


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"signing key {path}: {exc.strerror}") from exc
    if os.stat(path).st_mode & 0o077:
        raise BadInput(f"signing key {path}: readable by others (mode "
                       f"{os.stat(path).st_mode & 0o777:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"signing key {path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"signing key {path}: not an Ed25519 key (make one with "
                       "'lockgate image keygen PREFIX')")
    return key


def load_public(path: Path) -> PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"trusted key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"trusted key {path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"trusted key {path}: not an Ed25519 public key")
    return PublicKey(key, str(path))


def load_dir(folder: Path) -> list[PublicKey]:
    """Every ``*.pub`` in ``folder`` (the keys baked into the image); none if it is absent."""
    if not folder.is_dir():
        return []
    return [load_public(p) for p in sorted(folder.glob("*.pub"))]
