"""The licence in force: accepted or not, which edition, which limits.

Inputs (written by first boot and the wizards, see ``firstboot/apply/licence.py``):

- ``config/licence.json``: whether the licence agreement was accepted. Until it is,
  the traffic manager proxies nothing (the workers open no virtual-server listener);
  the REST API and Admin UI still answer and say why.
- ``config/licence.key``: an optional licence key. Without one, or with a key that
  is unreadable, not signed by a trusted licence key, or expired, the appliance
  runs as the Community Edition (10 Mb/s in total, at most 4 cluster members).

Licence key format (a small JSON document, signed with Ed25519 like upgrade bundles)::

    {"licence": {"serial": "L-0001", "licensee": "Example Ltd",
                 "bandwidth_mbit_s": 1000,      # 0: no bandwidth limit
                 "max_cluster_size": 64,
                 "expires": "2027-12-31"},      # last valid day (UTC), or null
     "signature": "<base64 Ed25519 signature over canonical_payload(licence)>"}

The public keys licence keys are checked against are PEM files in
``/etc/lockgate/licence-keys.d/*.pub`` (in the read-only root slot, so nobody
with only the data partition can mint a licence); ``LOCKGATE_LICENCE_KEYS_DIR``
overrides the folder for development images and tests.

``LOCKGATE_LICENCE_DEV=1`` in the environment of ``lockgate runtime serve`` (set by
the test suite's conftest and meant for runs outside an appliance: tests, benchmarks,
demos) stands for an accepted licence without limits; status says so. It grants
nothing a root user could not write into ``config/`` anyway.

:func:`licence_limits` is what other parts (the cluster join check, the workers)
call; it reads the files each time (they are tiny), so a newly accepted licence
or a new key takes effect without a restart.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from lockgate.files import file_stamp
from lockgate.paths import StatePaths

log = logging.getLogger("lockgate.runtime.licence")

LICENCE_KEYS_DIR = Path("/etc/lockgate/licence-keys.d")
COMMUNITY_BANDWIDTH_MBIT_S = 10
COMMUNITY_MAX_CLUSTER_SIZE = 4
NOT_ACCEPTED = "licence not accepted: run z-initial-config or accept it in the wizard"
DEV_ENV = "LOCKGATE_LICENCE_DEV"
MAX_KEY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Licence:
    accepted: bool
    edition: str  # "community" or "licensed"
    bandwidth_mbit_s: int  # 0: no limit
    max_cluster_size: int  # 0: no limit
    expires: str | None  # ISO date, licensed keys only
    serial: str | None
    message: str  # why this edition / why nothing is proxied; "" when all is well

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def bandwidth_bytes_s(self) -> float:
        """The cap in bytes per second; 0.0 means unlimited."""
        return self.bandwidth_mbit_s * 1_000_000 / 8


def keys_dir() -> Path:
    override = os.environ.get("LOCKGATE_LICENCE_KEYS_DIR")
    return Path(override) if override else LICENCE_KEYS_DIR


def key_file(state_dir: Path) -> Path:
    return StatePaths(Path(state_dir)).config / "licence.key"


def canonical_payload(licence: dict[str, Any]) -> bytes:
    """The exact bytes a licence key's signature covers."""
    return json.dumps(licence, sort_keys=True, separators=(",", ":")).encode()


class LicenceKeyError(Exception):
    pass


def check_key(data: bytes, today: date | None = None,
              folder: Path | None = None) -> dict[str, Any]:
    """The key's licence fields if it is well formed, signed by a trusted key and not
    expired; otherwise :class:`LicenceKeyError` with the reason (one line)."""
    from lockgate.errors import BadInput
    from lockgate.runtime.system.keys import load_public

    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise LicenceKeyError("the licence key is not a lockgate licence key (not JSON)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("licence"), dict) \
            or not isinstance(doc.get("signature"), str):
        raise LicenceKeyError("the licence key is not a lockgate licence key (no licence/signature)")
    licence: dict[str, Any] = doc["licence"]
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise LicenceKeyError("the licence key's signature is not base64") from None
    folder = folder or keys_dir()
    trusted = []
    for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
        try:
            trusted.append(load_public(path))
        except BadInput as exc:
            log.warning("%s", exc)
    message = canonical_payload(licence)
    if not any(key.verifies(signature, message) for key in trusted):
        raise LicenceKeyError("the licence key's signature is invalid (not issued for lockgate)")
    bandwidth = licence.get("bandwidth_mbit_s")
    size = licence.get("max_cluster_size")
    if not isinstance(bandwidth, int) or isinstance(bandwidth, bool) or bandwidth < 0:
        raise LicenceKeyError("the licence key has no valid bandwidth_mbit_s")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise LicenceKeyError("the licence key has no valid max_cluster_size")
    expires = licence.get("expires")
    if expires is not None:
        try:
            last_day = date.fromisoformat(str(expires))
        except ValueError:
            raise LicenceKeyError(f"the licence key's expiry {expires!r} is not a date") from None
        if (today or datetime.now(UTC).date()) > last_day:
            raise LicenceKeyError(f"the licence key expired on {last_day.isoformat()}")
    return licence


def _accepted(state_dir: Path) -> bool:
    try:
        record = json.loads(StatePaths(Path(state_dir)).licence.read_text())
    except (OSError, ValueError):
        return False  # missing or damaged: not accepted (the wizard writes it again)
    return isinstance(record, dict) and record.get("accepted") is True


def licence_state(state_dir: Path, today: date | None = None) -> Licence:
    """The licence in force for this state dir, read now."""
    if os.environ.get(DEV_ENV) == "1":
        return Licence(True, "development", 0, 0, None, None,
                       f"development licence ({DEV_ENV}=1): no limits; not for production")
    accepted = _accepted(state_dir)
    reason = ""
    path = key_file(state_dir)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        data = None
    except OSError as exc:
        data = None
        reason = f"cannot read the licence key {path}: {exc.strerror or exc}"
    if data is not None:
        try:
            if len(data) > MAX_KEY_BYTES:
                raise LicenceKeyError("the licence key is too big to be a lockgate licence key")
            fields = check_key(data, today)
        except LicenceKeyError as exc:
            reason = str(exc)
        else:
            expires = fields.get("expires")
            return Licence(accepted, "licensed", fields["bandwidth_mbit_s"],
                           fields["max_cluster_size"], str(expires) if expires else None,
                           str(fields.get("serial") or "") or None,
                           "" if accepted else NOT_ACCEPTED)
    community = "Community Edition (10 Mb/s, up to 4 cluster members)"
    if reason:
        message = f"{reason}; running as the {community}"
    else:
        message = f"no licence key: running as the {community}"
    if not accepted:
        message = f"{NOT_ACCEPTED}; {message}"
    return Licence(accepted, "community", COMMUNITY_BANDWIDTH_MBIT_S, COMMUNITY_MAX_CLUSTER_SIZE,
                   None, None, message)


def licence_limits(state_dir: Path) -> dict[str, Any]:
    """For the cluster join check and others: {"accepted", "edition",
    "bandwidth_mbit_s" (0: no limit), "max_cluster_size" (0: no limit), "message"}."""
    lic = licence_state(state_dir)
    return {"accepted": lic.accepted, "edition": lic.edition,
            "bandwidth_mbit_s": lic.bandwidth_mbit_s, "max_cluster_size": lic.max_cluster_size,
            "message": lic.message}


def licence_stamp(state_dir: Path) -> tuple[Any, ...]:
    """Changes when the acceptance record or the key file changes (for pollers)."""
    return (file_stamp(StatePaths(Path(state_dir)).licence), file_stamp(key_file(state_dir)),
            datetime.now(UTC).date())  # the date: a key expires at midnight without a write


def sign_licence(private_key: Any, licence: dict[str, Any]) -> bytes:
    """A licence key file's bytes (for the issuer's tooling and tests)."""
    signature = private_key.sign(canonical_payload(licence))
    doc = {"licence": licence, "signature": base64.b64encode(signature).decode()}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
