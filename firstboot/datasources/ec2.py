"""Amazon EC2: the instance metadata service, IMDSv2 sessions first.

A session token comes from ``PUT /latest/api/token`` and goes in a header on
every read. A 401 means the token expired: get a new one, once. A 403 on the
token PUT means IMDS is disabled or the reply cannot reach us (hop limit);
waiting will not fix either, so that fails at once. When the token endpoint
is missing (404/405, very old or proxied services) reads go without a token
(IMDSv1).

SSH: the key pair the instance was launched with, ``meta-data/public-keys/0/
openssh-key`` (the listing ``public-keys/`` names the pairs as ``0=name``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from lockgate.firstboot.datasources.base import (
    SYSFS,
    DatasourceError,
    Deadline,
    InstanceData,
    NothingToReport,
    key_lines,
    read_dmi,
    user_data_from,
)
from lockgate.http import Response, UrlError, read_url

log = logging.getLogger("lockgate.firstboot.ec2")

DEFAULT_URL = "http://169.254.169.254"
TOKEN_TTL = "21600"  # six hours, the maximum; first boot is done long before
TOKEN_PATH = "/latest/api/token"
OPTIONAL_META = ("placement/region", "placement/availability-zone", "local-ipv4",
                 "local-hostname", "public-ipv4", "public-hostname")


class Ec2Source(NothingToReport):
    name: ClassVar[str] = "ec2"

    def __init__(self, base_url: str = DEFAULT_URL, *, sysfs_root: Path = SYSFS,
                 per_try_timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.sysfs_root = sysfs_root
        self.per_try_timeout = per_try_timeout
        self._token: str | None = None
        self._use_token = True

    def detect(self) -> bool:
        if "amazon ec2" in read_dmi(self.sysfs_root, "sys_vendor").lower():
            return True
        if "amazon ec2" in read_dmi(self.sysfs_root, "bios_vendor").lower():
            return True
        if read_dmi(self.sysfs_root, "product_uuid").lower().startswith("ec2"):
            return True
        try:  # Xen-based instance types (no Amazon DMI strings)
            uuid = (self.sysfs_root / "hypervisor/uuid").read_text().strip().lower()
        except OSError:
            return False
        return uuid.startswith("ec2")

    # --- requests ----------------------------------------------------------------

    def _request(self, method: str, path: str, budget: Deadline,
                 headers: dict[str, str] | None = None) -> Response:
        try:
            return read_url(self.base_url + path, method=method, headers=headers,
                            timeout=self.per_try_timeout, deadline=budget.remaining())
        except UrlError as exc:
            raise DatasourceError(f"EC2 metadata service unreachable: {exc}") from None

    def _new_token(self, budget: Deadline) -> None:
        resp = self._request("PUT", TOKEN_PATH, budget,
                             {"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL})
        if resp.status == 200 and resp.body.strip():
            self._token = resp.body.decode("ascii", errors="replace").strip()
            self._use_token = True
            return
        if resp.status == 403:
            raise DatasourceError(
                "IMDS refused a session token (403): the metadata service is disabled for "
                "this instance or the hop limit is too low"
            )
        if resp.status in (404, 405):
            log.info("IMDS has no token endpoint (%d); reading without a token", resp.status)
            self._token, self._use_token = None, False
            return
        raise DatasourceError(f"IMDS token request answered {resp.status} {resp.reason}")

    def _get(self, path: str, budget: Deadline) -> Response:
        """GET with the session token; on 401 take a new token and try once more."""
        if self._use_token and self._token is None:
            self._new_token(budget)
        for attempt in (1, 2):
            headers = {"X-aws-ec2-metadata-token": self._token} if self._token else {}
            resp = self._request("GET", path, budget, headers)
            if resp.status != 401:
                return resp
            if attempt == 1:
                log.info("IMDS token rejected (401); taking a new one")
                self._new_token(budget)
        raise DatasourceError(f"IMDS answered 401 for {path} even with a fresh session token")

    # --- the datasource ------------------------------------------------------------

    def fetch(self, timeout: float = 60.0) -> InstanceData:
        budget = Deadline(timeout)
        resp = self._get("/latest/meta-data/instance-id", budget)
        instance_id = resp.text().strip()
        if resp.status != 200 or not instance_id:
            raise DatasourceError(f"IMDS has no instance-id (HTTP {resp.status})")
        metadata: dict[str, str] = {}
        for key in OPTIONAL_META:
            item = self._get(f"/latest/meta-data/{key}", budget)
            if item.status == 200 and item.body.strip():
                metadata[key.rsplit("/", 1)[-1]] = item.text().strip()
        keys = self._public_keys(budget)
        user = self._get("/latest/user-data", budget)
        user_data = user_data_from(user.status, user.reason, user.body, "IMDS")
        return InstanceData("ec2", instance_id, user_data, metadata, keys)

    def _public_keys(self, budget: Deadline) -> tuple[str, ...]:
        """The launch key pair: ``public-keys/`` lists ``0=name``; ``0/openssh-key`` is it."""
        listing = self._get("/latest/meta-data/public-keys/", budget)
        if listing.status != 200:  # 404: launched without a key pair
            return ()
        keys: list[str] = []
        for line in listing.text().splitlines():
            index = line.partition("=")[0].strip()
            if not index.isdigit():
                continue
            item = self._get(f"/latest/meta-data/public-keys/{index}/openssh-key", budget)
            if item.status == 200:
                keys += key_lines(item.text())
        return tuple(keys)
