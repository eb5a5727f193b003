"""Microsoft Azure: IMDS for identity and userData, provisioning media for CustomData,
and the wire server to report the VM ready.

Where user-data comes from, in order:

1. IMDS ``compute.userData`` (base64; the "User data" field of a VM).
2. ``CustomData`` (base64) in ``ovf-env.xml`` on the provisioning media. On a
   real VM that is a small UDF/ISO CD-ROM (``/dev/sr0``) attached only while
   the VM is being provisioned; it is mounted read-only in a temporary
   directory just long enough to read the file. ``ovf_path`` may instead name
   an already mounted directory or the ``ovf-env.xml`` file itself.

SSH keys: IMDS ``compute.publicKeys[].keyData``; when IMDS lists none, the
``SSH/PublicKeys/PublicKey/Value`` entries of ``ovf-env.xml``.

Azure waits for the VM to say it is ready and fails the deployment after a
while if it never does. :meth:`AzureSource.finish` reads the goal state from
the wire server (ContainerId, InstanceId, Incarnation) and posts a health
report: state Ready after a good first boot, like the Linux agent does, or
NotReady / ProvisioningFailed with a description when the user-data was
invalid or first boot failed, so the deployment fails at once and says why. A failure to report is
logged and returned, never raised: the appliance works either way.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lockgate.firstboot.datasources.base import (
    DEV,
    SYSFS,
    DatasourceError,
    Deadline,
    InstanceData,
    key_lines,
    read_dmi,
)
from lockgate.http import UrlError, read_url

log = logging.getLogger("lockgate.firstboot.azure")

DEFAULT_IMDS_URL = "http://169.254.169.254"
DEFAULT_WIRESERVER_URL = "http://168.63.129.16"
IMDS_API_VERSION = "2021-08-01"
WIRE_VERSION = "2012-11-30"
AGENT_NAME = "lockgate"
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
MAX_DESCRIPTION = 1000  # the portal shows a line, not a log; the console has the rest

HEALTH_TEMPLATE = """\
<?xml version="1.0" encoding="utf-8"?>
<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <GoalStateIncarnation>{incarnation}</GoalStateIncarnation>
  <Container>
    <ContainerId>{container_id}</ContainerId>
    <RoleInstanceList>
      <Role>
        <InstanceId>{instance_id}</InstanceId>
        <Health>
          <State>{state}</State>{details}
        </Health>
      </Role>
    </RoleInstanceList>
  </Container>
</Health>
"""
DETAILS_TEMPLATE = """
          <Details>
            <SubStatus>{substatus}</SubStatus>
            <Description>{description}</Description>
          </Details>"""


@dataclass(frozen=True)
class GoalState:
    incarnation: str
    container_id: str
    instance_id: str


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_goal_state(xml: bytes) -> GoalState:
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise DatasourceError(f"wire server goal state is not XML: {exc}") from None
    incarnation = root.findtext("Incarnation")
    container_id = root.findtext("Container/ContainerId")
    instance_id = root.findtext("Container/RoleInstanceList/RoleInstance/InstanceId")
    if not (incarnation and container_id and instance_id):
        raise DatasourceError("wire server goal state lacks Incarnation, ContainerId or InstanceId")
    return GoalState(incarnation.strip(), container_id.strip(), instance_id.strip())


def health_report_xml(goal: GoalState, state: str = "Ready", substatus: str | None = None,
                      description: str | None = None) -> bytes:
    from xml.sax.saxutils import escape

    details = ""
    if substatus is not None:
        details = DETAILS_TEMPLATE.format(substatus=escape(substatus),
                                          description=escape(description or ""))
    return HEALTH_TEMPLATE.format(
        incarnation=escape(goal.incarnation), container_id=escape(goal.container_id),
        instance_id=escape(goal.instance_id), state=escape(state), details=details,
    ).encode()


def custom_data_from_ovf(xml: bytes) -> bytes | None:
    """The decoded CustomData of an ``ovf-env.xml``; None when it has none."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise DatasourceError(f"ovf-env.xml is not XML: {exc}") from None
    for element in root.iter():
        if _local(element.tag) == "CustomData":
            text = "".join((element.text or "").split())
            if not text:
                return None
            try:
                return base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise DatasourceError("ovf-env.xml: CustomData is not valid base64") from None
    return None


def imds_public_keys(compute: dict[str, object]) -> tuple[str, ...]:
    """``compute.publicKeys[].keyData``: the SSH keys the VM was created with."""
    found = compute.get("publicKeys")
    keys: list[str] = []
    for entry in found if isinstance(found, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("keyData"), str):
            keys += [k for k in key_lines(entry["keyData"]) if k not in keys]
    return tuple(keys)


def ssh_keys_from_ovf(xml: bytes) -> tuple[str, ...]:
    """The ``SSH/PublicKeys/PublicKey/Value`` keys of an ``ovf-env.xml`` (keys given only
    by fingerprint, with no Value, are the agent's business and not read here)."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise DatasourceError(f"ovf-env.xml is not XML: {exc}") from None
    keys: list[str] = []
    for element in root.iter():
        if _local(element.tag) != "PublicKey":
            continue
        for child in element:
            if _local(child.tag) == "Value" and child.text:
                keys += [k for k in key_lines(child.text) if k not in keys]
    return tuple(keys)


class AzureSource:
    name: ClassVar[str] = "azure"

    def __init__(
        self,
        imds_url: str = DEFAULT_IMDS_URL,
        wireserver_url: str = DEFAULT_WIRESERVER_URL,
        *,
        ovf_path: Path | None = None,
        sysfs_root: Path = SYSFS,
        dev_root: Path = DEV,
        per_try_timeout: float = 5.0,
    ) -> None:
        self.imds_url = imds_url.rstrip("/")
        self.wireserver_url = wireserver_url.rstrip("/")
        self.ovf_path = ovf_path if ovf_path is not None else dev_root / "sr0"
        self.sysfs_root = sysfs_root
        self.per_try_timeout = per_try_timeout
        self.last_report_error: str | None = None

    def detect(self) -> bool:
        return (read_dmi(self.sysfs_root, "chassis_asset_tag") == AZURE_ASSET_TAG
                or read_dmi(self.sysfs_root, "board_asset_tag") == AZURE_ASSET_TAG)

    # --- user-data ------------------------------------------------------------------

    def _instance_metadata(self, budget: Deadline) -> dict[str, object]:
        url = f"{self.imds_url}/metadata/instance?api-version={IMDS_API_VERSION}"
        try:
            resp = read_url(url, headers={"Metadata": "true"}, timeout=self.per_try_timeout,
                            deadline=budget.remaining())
        except UrlError as exc:
            raise DatasourceError(f"Azure IMDS unreachable: {exc}") from None
        if resp.status != 200:
            raise DatasourceError(f"Azure IMDS answered {resp.status} {resp.reason}: "
                                  f"{resp.text()[:200].strip()}")
        try:
            doc = json.loads(resp.body)
        except ValueError as exc:
            raise DatasourceError(f"Azure IMDS reply is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("compute"), dict):
            raise DatasourceError("Azure IMDS reply has no compute section")
        return doc

    def _read_ovf_env(self) -> bytes | None:
        """ovf-env.xml from a directory, the file itself, or a block device (mounted ro)."""
        path = self.ovf_path
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            log.info("no provisioning media at %s", path)
            return None
        except OSError as exc:
            raise DatasourceError(f"{path}: cannot read the provisioning media: {exc}") from None
        if stat.S_ISDIR(mode):
            path = path / "ovf-env.xml"
            return path.read_bytes() if path.is_file() else None
        if stat.S_ISBLK(mode):
            return self._read_from_device(path)
        return path.read_bytes()

    @staticmethod
    def _read_from_device(device: Path) -> bytes | None:
        from lockgate.proc import RunError, run

        with tempfile.TemporaryDirectory(prefix="lockgate-ovf-") as mnt:
            try:
                run(["mount", "-o", "ro", "-t", "udf,iso9660", device, mnt],
                    capture=True, quiet=True, timeout=30)
            except RunError as exc:
                # An empty CD drive (no medium) is normal once provisioning is over and
                # on local VMs: no custom data, not a broken platform.
                log.warning("azure: no custom data: cannot mount %s: %s", device,
                            str(exc).splitlines()[-1])
                return None
            try:
                ovf = Path(mnt) / "ovf-env.xml"
                return ovf.read_bytes() if ovf.is_file() else None
            finally:
                run(["umount", mnt], capture=True, quiet=True, timeout=30, check=False)

    def fetch(self, timeout: float = 60.0) -> InstanceData:
        budget = Deadline(timeout)
        doc = self._instance_metadata(budget)
        compute = doc["compute"]
        assert isinstance(compute, dict)
        vm_id = str(compute.get("vmId") or "").strip()
        if not vm_id:
            raise DatasourceError("Azure IMDS reply has no compute.vmId")
        metadata = {k: str(compute[src]) for k, src in
                    (("local-hostname", "name"), ("region", "location")) if compute.get(src)}
        ip = _private_ip(doc)
        if ip:
            metadata["local-ipv4"] = ip
        user_data: bytes | None = None
        encoded = "".join(str(compute.get("userData") or "").split())
        if encoded:
            try:
                user_data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise DatasourceError("Azure IMDS compute.userData is not valid base64") from None
        keys = imds_public_keys(compute)
        if not user_data or not keys:
            ovf = self._read_ovf_env()
            if ovf:
                user_data = user_data or custom_data_from_ovf(ovf)
                keys = keys or ssh_keys_from_ovf(ovf)
        return InstanceData("azure", vm_id, user_data or None, metadata, keys)

    # --- reporting ready --------------------------------------------------------------

    def _wire_headers(self) -> dict[str, str]:
        return {"x-ms-version": WIRE_VERSION, "x-ms-agent-name": AGENT_NAME}

    def goal_state(self, budget: Deadline) -> GoalState:
        resp = read_url(f"{self.wireserver_url}/machine/?comp=goalstate",
                        headers=self._wire_headers(), timeout=self.per_try_timeout,
                        deadline=budget.remaining())
        if resp.status != 200:
            raise DatasourceError(f"wire server goal state answered {resp.status} {resp.reason}")
        return parse_goal_state(resp.body)

    def _report(self, state: str, substatus: str | None, description: str | None,
                timeout: float) -> bool:
        budget = Deadline(timeout)
        try:
            goal = self.goal_state(budget)
            resp = read_url(
                f"{self.wireserver_url}/machine/?comp=health", method="POST",
                headers={**self._wire_headers(), "Content-Type": "text/xml; charset=utf-8"},
                data=health_report_xml(goal, state, substatus, description),
                timeout=self.per_try_timeout, deadline=budget.remaining(),
            )
            if resp.status not in (200, 201, 202):
                raise DatasourceError(f"health report answered {resp.status} {resp.reason}: "
                                      f"{resp.text()[:200].strip()}")
        except (UrlError, DatasourceError) as exc:
            self.last_report_error = str(exc)
            log.warning("azure: reporting %s to the wire server failed: %s", state, exc)
            return False
        self.last_report_error = None
        log.info("azure: reported %s (container %s, incarnation %s)", state,
                 goal.container_id, goal.incarnation)
        return True

    def report_ready(self, timeout: float = 60.0) -> bool:
        """Tell the platform provisioning finished; False (and logged) when that failed."""
        return self._report("Ready", None, None, timeout)

    def report_failure(self, description: str, timeout: float = 60.0) -> bool:
        """Tell the platform provisioning failed, so the deployment fails fast and says why."""
        return self._report("NotReady", "ProvisioningFailed", description, timeout)

    def finish(self, ok: bool, reason: str | None = None, timeout: float = 60.0) -> str | None:
        """Ready only when first boot succeeded; otherwise NotReady/ProvisioningFailed with
        the reason, as cloud-init's ``report_failure_to_fabric`` does."""
        if ok:
            if self.report_ready(timeout):
                return None
            what = "ready"
        else:
            description = f"lockgate first boot failed: {reason or 'see the console log'}"
            if self.report_failure(description[:MAX_DESCRIPTION], timeout):
                return None
            what = "the failure"
        return f"azure: reporting {what} to the platform failed: {self.last_report_error}"


def _private_ip(doc: dict[str, object]) -> str | None:
    try:
        interfaces = doc["network"]["interface"]  # type: ignore[index]
        return str(interfaces[0]["ipv4"]["ipAddress"][0]["privateIpAddress"]) or None
    except (KeyError, IndexError, TypeError):
        return None
