"""GCE: a private traffic IP is an alias IP range (``IP/32``) on this instance's nic0, a
public one the external IP of nic0's access config. google-cloud-compute is imported
here only.

GCE does not move an alias or an external IP by itself: the instance that has it
(the failed member, found by listing the zone) must give it up first, so a takeover
is two ``updateNetworkInterface`` (or ``deleteAccessConfig`` + ``addAccessConfig``)
calls, each waited for. Permissions the service account needs (docs/cluster.md):
``compute.instances.get``, ``compute.instances.list``,
``compute.instances.updateNetworkInterface``, ``compute.instances.addAccessConfig``,
``compute.instances.deleteAccessConfig``, ``compute.zoneOperations.get``,
``compute.subnetworks.use``, ``compute.subnetworks.useExternalIp``,
``compute.addresses.use``.

Rate limits (429, or 403 ``rateLimitExceeded``) are retried with backoff; a denial is
one line naming the permission GCE says is missing.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from typing import Any

from lockgate.runtime.cluster.movers import MoverError

log = logging.getLogger("lockgate.runtime.cluster.movers.gce")

ATTEMPTS = 5
BACKOFF = 0.2
NIC = "nic0"
ACCESS_CONFIG = "External NAT"
_PERMISSION = re.compile(r"[Rr]equired '([a-zA-Z.]+)' permission")
PERMISSIONS = {"get": "compute.instances.get", "list": "compute.instances.list",
               "update_network_interface": "compute.instances.updateNetworkInterface",
               "add_access_config": "compute.instances.addAccessConfig",
               "delete_access_config": "compute.instances.deleteAccessConfig",
               "wait": "compute.zoneOperations.get"}


def is_external(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_global


class GceMover:
    name = "gce"

    def __init__(self, project: str, zone: str, instance: str, *,
                 endpoint: str | None = None, credentials: Any = None,
                 backoff: float = BACKOFF) -> None:
        from google.cloud import compute_v1

        options = {"api_endpoint": endpoint} if endpoint else None
        self.project, self.zone, self.instance = project, zone, instance
        self.endpoint = (endpoint or "https://compute.googleapis.com").rstrip("/")
        self.credentials = credentials
        self.backoff = backoff
        self.instances = compute_v1.InstancesClient(transport="rest", client_options=options,
                                                    credentials=credentials)
        self.operations = compute_v1.ZoneOperationsClient(transport="rest",
                                                          client_options=options,
                                                          credentials=credentials)

    @classmethod
    def from_instance(cls) -> GceMover:
        """This instance's project, zone and name, from the metadata server."""
        from lockgate import http

        base = "http://metadata.google.internal/computeMetadata/v1"

        def meta(path: str) -> str:
            return http.read_url(f"{base}/{path}", headers={"Metadata-Flavor": "Google"}
                                 ).body.decode().strip()

        zone = meta("instance/zone").rsplit("/", 1)[-1]  # projects/<number>/zones/<zone>
        return cls(meta("project/project-id"), zone, meta("instance/name"))

    def _call(self, client: Any, method: str, **kwargs: Any) -> Any:
        from google.api_core import exceptions as gexc

        delay = self.backoff
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return getattr(client, method)(project=self.project, zone=self.zone, **kwargs)
            except (gexc.TooManyRequests, gexc.Forbidden) as exc:
                limited = isinstance(exc, gexc.TooManyRequests) or "rateLimitExceeded" in str(exc)
                if limited and attempt < ATTEMPTS:
                    log.info("GCE %s rate limited; retry %d in %.1f s", method, attempt, delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                if limited:
                    raise MoverError(f"GCE {method}: still rate limited after {ATTEMPTS} "
                                     "tries") from None
                found = _PERMISSION.search(str(exc))
                permission = found.group(1) if found else PERMISSIONS.get(method, method)
                raise MoverError(f"GCE refused {method}: the service account lacks "
                                 f"permission {permission}") from None
            except gexc.GoogleAPICallError as exc:
                raise MoverError(f"GCE {method} failed: {exc.message}") from None
        raise AssertionError("unreachable")

    def _wait(self, operation: Any) -> None:
        name = operation if isinstance(operation, str) else operation.name
        done = self._call(self.operations, "wait", operation=name)
        if getattr(done, "error", None) and done.error.errors:
            raise MoverError(f"GCE operation {name} failed: {done.error.errors[0].message}")

    def _nic(self, instance: Any) -> Any:
        return next(n for n in instance.network_interfaces if n.name == NIC)

    def _update_aliases(self, instance: Any, ranges: list[str]) -> None:
        from google.cloud import compute_v1

        nic = self._nic(instance)
        if not ranges:
            # The SDK leaves an empty list out of the JSON, and a PATCH without the
            # field changes nothing: the last alias would stay. Sent by hand instead.
            self._clear_aliases(instance.name, nic.fingerprint)
            return
        body = compute_v1.NetworkInterface(
            fingerprint=nic.fingerprint,
            alias_ip_ranges=[compute_v1.AliasIpRange(ip_cidr_range=r) for r in ranges])
        op = self._call(self.instances, "update_network_interface", instance=instance.name,
                        network_interface=NIC, network_interface_resource=body)
        self._wait(op)

    def _clear_aliases(self, instance: str, fingerprint: str) -> None:
        import json

        from lockgate import http

        url = (f"{self.endpoint}/compute/v1/projects/{self.project}/zones/{self.zone}"
               f"/instances/{instance}/updateNetworkInterface?networkInterface={NIC}")
        body = json.dumps({"fingerprint": fingerprint, "aliasIpRanges": []})
        try:
            reply = http.read_url(url, method="PATCH", data=body, deadline=30,
                                  backoff=self.backoff, headers={
                                      "Content-Type": "application/json", **self._auth()})
        except http.UrlError as exc:  # still rate limited (429) or 5xx at the deadline
            raise MoverError(f"GCE update_network_interface failed: {exc}") from None
        if reply.status == 403:
            found = _PERMISSION.search(reply.text())
            permission = found.group(1) if found else PERMISSIONS["update_network_interface"]
            raise MoverError("GCE refused update_network_interface: the service account "
                             f"lacks permission {permission}")
        if not reply.ok:
            raise MoverError(f"GCE update_network_interface failed: HTTP {reply.status} "
                             f"{reply.text()[:200]}")
        self._wait(dict(reply.json())["name"])  # type: ignore[call-overload]

    def _auth(self) -> dict[str, str]:
        from google.auth.credentials import AnonymousCredentials

        if self.credentials is None:
            import google.auth

            self.credentials, _ = google.auth.default(
                scopes=["https://www.googleapis.com/auth/compute"])
        if isinstance(self.credentials, AnonymousCredentials):
            return {}
        if not self.credentials.valid:
            from google.auth.transport.requests import Request

            self.credentials.refresh(Request())
        return {"Authorization": f"Bearer {self.credentials.token}"}

    def _holders(self, ip: str) -> list[Any]:
        """Instances in the zone that have ``ip`` now (alias or external)."""
        out = []
        for instance in self._call(self.instances, "list"):
            for nic in instance.network_interfaces:
                if (any(r.ip_cidr_range in (ip, f"{ip}/32") for r in nic.alias_ip_ranges)
                        or any(a.nat_i_p == ip for a in nic.access_configs)):
                    out.append(instance)
                    break
        return out

    def raise_ip(self, ip: str) -> None:
        for other in self._holders(ip):
            if other.name != self.instance:
                self._release(other, ip)
        me = self._call(self.instances, "get", instance=self.instance)
        nic = self._nic(me)
        if is_external(ip):
            if any(a.nat_i_p == ip for a in nic.access_configs):
                return
            from google.cloud import compute_v1

            for config in nic.access_configs:  # one access config per interface
                self._wait(self._call(self.instances, "delete_access_config",
                                      instance=self.instance, access_config=config.name,
                                      network_interface=NIC))
            body = compute_v1.AccessConfig(name=ACCESS_CONFIG, nat_i_p=ip, type_="ONE_TO_ONE_NAT")
            self._wait(self._call(self.instances, "add_access_config", instance=self.instance,
                                  network_interface=NIC, access_config_resource=body))
        else:
            ranges = [r.ip_cidr_range for r in nic.alias_ip_ranges]
            if f"{ip}/32" in ranges or ip in ranges:
                return
            self._update_aliases(me, [*ranges, f"{ip}/32"])

    def _release(self, instance: Any, ip: str) -> None:
        nic = self._nic(instance)
        if is_external(ip):
            for config in nic.access_configs:
                if config.nat_i_p == ip:
                    self._wait(self._call(self.instances, "delete_access_config",
                                          instance=instance.name, access_config=config.name,
                                          network_interface=NIC))
        else:
            ranges = [r.ip_cidr_range for r in nic.alias_ip_ranges]
            keep = [r for r in ranges if r not in (ip, f"{ip}/32")]
            if keep != ranges:
                self._update_aliases(instance, keep)

    def drop_ip(self, ip: str) -> None:
        self._release(self._call(self.instances, "get", instance=self.instance), ip)

    def announce(self, ip: str) -> None:
        """Nothing to do: the VPC routes by its own mapping, not by ARP."""

    def prepare(self, ips: list[str]) -> None:
        """Nothing to look up in advance."""
