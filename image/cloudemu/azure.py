"""Azure IMDS and wire server (WireServer / "fabric") on one port.

On Azure these are two addresses (IMDS 169.254.169.254, wire server
168.63.129.16); the emulator serves both path sets so one port does for a
test or a QEMU guest, and the datasource takes the two base URLs separately.

IMDS: ``GET /metadata/instance?api-version=...`` needs ``Metadata: true``
(400 otherwise) and an ``api-version`` (400 otherwise); JSON with
``compute.vmId``, ``compute.userData`` (base64, "" when none), ``compute.name``,
``compute.publicKeys`` (``[{"keyData", "path"}]``, the VM's SSH keys),
``compute.location`` and the private IP. ``/metadata/instance/compute/userData
?format=text`` returns the bare base64 text.

Wire server: ``GET /machine/?comp=goalstate`` (needs ``x-ms-version``) returns
the goal state XML (Incarnation, ContainerId, RoleInstance/InstanceId);
``POST /machine/?comp=health`` takes the health report XML, checks its ids
against the goal state (400 on mismatch) and records it in
:attr:`AzureEmulator.health_reports`.

:func:`ovf_env_xml` / :func:`write_ovf_env` make the provisioning media's
``ovf-env.xml`` carrying base64 ``CustomData``.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from lockgate.image.cloudemu.base import Emulator, Faults, Reply


@dataclass(frozen=True)
class HealthReport:
    incarnation: str
    container_id: str
    instance_id: str
    state: str  # "Ready" or "NotReady"
    substatus: str | None
    description: str | None
    raw: bytes


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find_text(root: ElementTree.Element, name: str) -> str | None:
    for element in root.iter():
        if _local(element.tag) == name:
            return (element.text or "").strip()
    return None


class AzureEmulator(Emulator):
    name = "azure"

    def __init__(
        self,
        *,
        user_data: bytes | None = None,
        vm_id: str = "8b2c9d3e-6f4a-4b7e-9c1d-2e3f4a5b6c7d",
        vm_name: str = "lockgate-1",
        location: str = "westeurope",
        private_ip: str = "10.0.0.4",
        container_id: str | None = None,
        incarnation: int = 1,
        public_keys: Sequence[str] = (),
        admin_username: str = "azureuser",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(host=host, port=port, faults=faults)
        self.user_data = user_data
        self.vm_id = vm_id
        self.vm_name = vm_name
        self.location = location
        self.private_ip = private_ip
        self.container_id = container_id or str(uuid.uuid4())
        self.role_instance_id = f"{vm_id}._{vm_name}"
        self.incarnation = incarnation
        self.public_keys = list(public_keys)
        self.admin_username = admin_username
        self._reports_lock = threading.Lock()
        self.health_reports: list[HealthReport] = []

    # --- IMDS --------------------------------------------------------------------

    def _user_data_b64(self) -> str:
        if self.user_data is None or self.faults.no_user_data:
            return ""
        return base64.b64encode(self.user_data).decode()

    def _instance(self) -> dict[str, object]:
        return {
            "compute": {
                "azEnvironment": "AzurePublicCloud",
                "customData": "",  # IMDS never returns custom data; it is on the media
                "location": self.location,
                "name": self.vm_name,
                "osType": "Linux",
                "provider": "Microsoft.Compute",
                "publicKeys": [{"keyData": key,
                                "path": f"/home/{self.admin_username}/.ssh/authorized_keys"}
                               for key in self.public_keys],
                "userData": self._user_data_b64(),
                "vmId": self.vm_id,
                "vmSize": "Standard_D2s_v3",
            },
            "network": {
                "interface": [{
                    "ipv4": {"ipAddress": [{"privateIpAddress": self.private_ip,
                                            "publicIpAddress": ""}],
                             "subnet": [{"address": "10.0.0.0", "prefix": "24"}]},
                    "macAddress": "000D3A123456",
                }],
            },
        }

    def _imds(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Reply:
        def error(message: str) -> Reply:
            return Reply(400, json.dumps({"error": message}).encode(), "application/json")

        if headers.get("metadata", "").lower() != "true":
            return error("Bad request. Required metadata header not specified")
        if "x-forwarded-for" in headers:
            return error("Bad request. Forwarded requests are not allowed")
        if not query.get("api-version"):
            return error("Bad request. api-version was not specified in the request.")
        if path.rstrip("/") == "/metadata/instance":
            return Reply(200, json.dumps(self._instance()).encode(), "application/json")
        if path.rstrip("/") == "/metadata/instance/compute/userData":
            return Reply(200, self._user_data_b64().encode(), "text/plain")
        if path.rstrip("/") == "/metadata/instance/compute/vmId":
            return Reply(200, self.vm_id.encode(), "text/plain")
        return Reply(404, json.dumps({"error": "Not found"}).encode(), "application/json")

    # --- wire server ---------------------------------------------------------------

    def goal_state_xml(self) -> str:
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
            ' xsi:noNamespaceSchemaLocation="goalstate10.xsd">\n'
            "  <Version>2012-11-30</Version>\n"
            f"  <Incarnation>{self.incarnation}</Incarnation>\n"
            "  <Machine>\n    <ExpectedState>Started</ExpectedState>\n"
            "    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>\n  </Machine>\n"
            "  <Container>\n"
            f"    <ContainerId>{escape(self.container_id)}</ContainerId>\n"
            "    <RoleInstanceList>\n      <RoleInstance>\n"
            f"        <InstanceId>{escape(self.role_instance_id)}</InstanceId>\n"
            "        <State>Started</State>\n"
            "        <Configuration>\n"
            "          <HostingEnvironmentConfig>http://168.63.129.16:80/machine/"
            "?comp=config&amp;type=hostingEnvironmentConfig</HostingEnvironmentConfig>\n"
            "        </Configuration>\n"
            "      </RoleInstance>\n    </RoleInstanceList>\n"
            "  </Container>\n</GoalState>\n"
        )

    def _health(self, body: bytes) -> Reply:
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            return Reply(400, f"malformed health report: {exc}\n".encode())
        report = HealthReport(
            incarnation=_find_text(root, "GoalStateIncarnation") or "",
            container_id=_find_text(root, "ContainerId") or "",
            instance_id=_find_text(root, "InstanceId") or "",
            state=_find_text(root, "State") or "",
            substatus=_find_text(root, "SubStatus"),
            description=_find_text(root, "Description"),
            raw=body,
        )
        if _local(root.tag) != "Health" or report.state not in ("Ready", "NotReady"):
            return Reply(400, b"not a health report\n")
        if (report.container_id != self.container_id
                or report.instance_id != self.role_instance_id):
            return Reply(400, b"ContainerId/InstanceId do not match the goal state\n")
        with self._reports_lock:
            self.health_reports.append(report)
        return Reply(200, b"")

    def _wire(self, method: str, query: dict[str, list[str]], headers: dict[str, str],
              body: bytes) -> Reply:
        if not headers.get("x-ms-version"):
            return Reply(400, b"x-ms-version header required\n")
        comp = (query.get("comp") or [""])[0]
        if comp == "goalstate" and method == "GET":
            return Reply(200, self.goal_state_xml().encode(), "text/xml; charset=utf-8")
        if comp == "health" and method == "POST":
            return self._health(body)
        return Reply(404, b"Not found\n")

    def route(self, method: str, path: str, query: dict[str, list[str]],
              headers: dict[str, str], body: bytes) -> Reply:
        if path.startswith("/metadata/"):
            if method != "GET":
                return Reply(405, b"Method not allowed\n")
            return self._imds(path, query, headers)
        if path.rstrip("/") == "/machine":
            return self._wire(method, query, headers, body)
        return Reply(404, b"Not found\n")


def ovf_env_xml(custom_data: bytes | None, *, hostname: str = "lockgate-1",
                username: str = "azureuser", ssh_keys: Sequence[str] = ()) -> str:
    """The ``ovf-env.xml`` Azure puts on the provisioning media (CustomData base64,
    SSH public keys with their path and value)."""
    custom = ""
    if custom_data is not None:
        custom = f"      <CustomData>{base64.b64encode(custom_data).decode()}</CustomData>\n"
    if ssh_keys:
        entries = "".join(
            "          <PublicKey>\n            <Fingerprint>0</Fingerprint>\n"
            f"            <Path>/home/{escape(username)}/.ssh/authorized_keys</Path>\n"
            f"            <Value>{escape(key)}</Value>\n          </PublicKey>\n"
            for key in ssh_keys)
        custom += f"      <SSH>\n        <PublicKeys>\n{entries}        </PublicKeys>\n      </SSH>\n"
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"'
        ' xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"'
        ' xmlns:wa="http://schemas.microsoft.com/windowsazure"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        "  <wa:ProvisioningSection>\n    <wa:Version>1.0</wa:Version>\n"
        '    <LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure"'
        ' xmlns:i="http://www.w3.org/2001/XMLSchema-instance">\n'
        "      <ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>\n"
        f"      <HostName>{escape(hostname)}</HostName>\n"
        f"      <UserName>{escape(username)}</UserName>\n"
        "      <DisableSshPasswordAuthentication>true</DisableSshPasswordAuthentication>\n"
        f"{custom}"
        "    </LinuxProvisioningConfigurationSet>\n  </wa:ProvisioningSection>\n"
        "</Environment>\n"
    )


def write_ovf_env(directory: Path, custom_data: bytes | None, **kwargs: Any) -> Path:
    """Write ``ovf-env.xml`` into ``directory`` (a stand-in for the mounted media)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ovf-env.xml"
    path.write_text(ovf_env_xml(custom_data, **kwargs), encoding="utf-8")
    return path
