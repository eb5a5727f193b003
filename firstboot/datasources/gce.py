"""Google Compute Engine: the metadata server.

Every request carries ``Metadata-Flavor: Google`` and every genuine reply
carries it back; a reply without it came from something else and is not
trusted. The server answers on ``metadata.google.internal`` and on
169.254.169.254; early in boot the name may not resolve yet, so each base URL
is tried in turn with a short budget, round after round, until the deadline.

SSH keys: the ``ssh-keys`` (and legacy ``sshKeys``) attributes of the instance
and, unless the instance sets ``block-project-ssh-keys``, of the project; only
lines for the user ``admin`` (``admin:ssh-ed25519 AAAA…``) count.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
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

log = logging.getLogger("lockgate.firstboot.gce")

DEFAULT_URLS = ("http://metadata.google.internal", "http://169.254.169.254")
PREFIX = "/computeMetadata/v1/"
FLAVOR = {"Metadata-Flavor": "Google"}
ADMIN = "admin"  # the appliance's one login: keys for other users are not for it
PROBE_TRIES = 2  # per base URL and round, so a dead first address costs little


class GceSource(NothingToReport):
    name: ClassVar[str] = "gce"

    def __init__(self, base_urls: Sequence[str] | str = DEFAULT_URLS, *,
                 sysfs_root: Path = SYSFS, per_try_timeout: float = 3.0) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("GCE datasource needs at least one metadata server URL")
        self.base_urls = [u.rstrip("/") for u in urls]
        self.sysfs_root = sysfs_root
        self.per_try_timeout = per_try_timeout
        self.base_url: str | None = None  # the one that answered

    def detect(self) -> bool:
        return (read_dmi(self.sysfs_root, "product_name") == "Google Compute Engine"
                or read_dmi(self.sysfs_root, "sys_vendor") == "Google"
                or read_dmi(self.sysfs_root, "bios_vendor") == "Google")

    def _read(self, base: str, key: str, deadline: float, tries: int | None = None) -> Response:
        resp = read_url(base + PREFIX + key, headers=FLAVOR, timeout=self.per_try_timeout,
                        deadline=deadline, retries=tries)
        if resp.headers.get("Metadata-Flavor") != "Google":
            raise DatasourceError(f"{base}: reply without Metadata-Flavor: Google "
                                  f"(HTTP {resp.status}); not a GCE metadata server")
        return resp

    def _find_server(self, budget: Deadline) -> tuple[str, str]:
        """The first base URL that returns the instance id, and that id."""
        problems: dict[str, str] = {}
        pause = 0.5
        first_round = True
        while not budget.expired():
            if not first_round:  # every address failed: back off before the next round
                time.sleep(min(pause, budget.remaining()))
                pause = min(pause * 2, 4.0)
            first_round = False
            for base in self.base_urls:
                if budget.expired():
                    break
                try:
                    resp = self._read(base, "instance/id", budget.remaining(), PROBE_TRIES)
                except (UrlError, DatasourceError) as exc:
                    problems[base] = str(exc)
                    log.info("GCE metadata at %s not usable yet: %s", base, exc)
                    continue
                if resp.status == 200 and resp.body.strip():
                    return base, resp.text().strip()
                problems[base] = f"instance/id answered HTTP {resp.status}"
        detail = "; ".join(problems.values()) or "no time left"
        raise DatasourceError(f"GCE metadata server not reachable within "
                              f"{budget.seconds:g} s: {detail}")

    def fetch(self, timeout: float = 60.0) -> InstanceData:
        budget = Deadline(timeout)
        base, instance_id = self._find_server(budget)
        self.base_url = base
        metadata: dict[str, str] = {}
        try:
            for key, name in (("instance/hostname", "local-hostname"),
                              ("instance/zone", "zone"),
                              ("instance/network-interfaces/0/ip", "local-ipv4")):
                item = self._read(base, key, budget.remaining())
                if item.status == 200 and item.body.strip():
                    metadata[name] = item.text().strip().rsplit("/", 1)[-1]
            user = self._read(base, "instance/attributes/user-data", budget.remaining())
            keys = self._ssh_keys(base, budget)
        except UrlError as exc:
            raise DatasourceError(f"GCE metadata server stopped answering: {exc}") from None
        user_data = user_data_from(user.status, user.reason, user.body, "GCE")
        return InstanceData("gce", instance_id, user_data, metadata, keys)

    def _attributes(self, base: str, scope: str, budget: Deadline) -> dict[str, str]:
        """All of ``instance`` or ``project`` attributes in one request (``recursive``)."""
        resp = self._read(base, f"{scope}/attributes/?recursive=true", budget.remaining())
        if resp.status != 200:
            return {}
        try:
            doc = json.loads(resp.body)
        except ValueError:
            raise DatasourceError(f"GCE {scope} attributes are not JSON") from None
        if not isinstance(doc, dict):
            return {}
        return {str(k): v for k, v in doc.items() if isinstance(v, str)}

    def _ssh_keys(self, base: str, budget: Deadline) -> tuple[str, ...]:
        instance = self._attributes(base, "instance", budget)
        texts = [instance.get("ssh-keys", ""), instance.get("sshKeys", "")]
        if instance.get("block-project-ssh-keys", "").strip().lower() != "true":
            project = self._attributes(base, "project", budget)
            texts += [project.get("ssh-keys", ""), project.get("sshKeys", "")]
        keys: list[str] = []
        for text in texts:
            keys += [k for k in gce_ssh_keys(text) if k not in keys]
        return tuple(keys)


def gce_ssh_keys(text: str, user: str = ADMIN, now: datetime | None = None) -> list[str]:
    """The keys for ``user`` in an ``ssh-keys`` attribute (``user:ssh-ed25519 AAAA… comment``
    lines). Keys the Cloud Console adds carry ``google-ssh {"expireOn": …}``; expired
    ones are left out, as Google's guest agent does."""
    now = now or datetime.now(UTC)
    keys = []
    for line in key_lines(text):
        name, sep, key = line.partition(":")
        if not sep or name.strip() != user or not key.strip():
            continue
        key = key.strip()
        _, marker, extra = key.partition(" google-ssh ")
        if marker:
            try:
                expires = datetime.fromisoformat(json.loads(extra)["expireOn"])
            except (ValueError, KeyError, TypeError):
                expires = None
            if expires is not None:
                if expires.tzinfo is None:
                    expires = expires.replace(tzinfo=UTC)
                if expires <= now:
                    continue
        keys.append(key)
    return keys
