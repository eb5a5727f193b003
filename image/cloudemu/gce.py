"""GCE metadata server (``metadata.google.internal`` / 169.254.169.254).

Every request must carry ``Metadata-Flavor: Google`` (403 otherwise) and
every reply carries it back. Serves ``/computeMetadata/v1/instance/id``,
``hostname``, ``zone``, ``network-interfaces/0/ip``,
``instance/attributes/<key>`` (``user-data`` 404 when there is none) and
``project/project-id``, ``project/attributes/<key>``; directory paths list
their children, and ``?recursive=true`` returns a folder as one JSON object.
SSH keys are attributes: ``attributes={"ssh-keys": "admin:ssh-ed25519 AAAA…"}``
(instance) or ``project_attributes=`` (project), as GCE keeps them.
"""

from __future__ import annotations

import json
from typing import Any

from lockgate.image.cloudemu.base import Emulator, Faults, Reply, list_children

PREFIX = "/computeMetadata/v1/"


class GceMetadata(Emulator):
    name = "gce"

    def __init__(
        self,
        *,
        user_data: bytes | None = None,
        instance_id: str = "4520031799277581759",
        hostname: str = "lockgate-1.us-central1-a.c.demo-project.internal",
        zone: str = "us-central1-a",
        project_id: str = "demo-project",
        ip: str = "10.128.0.2",
        attributes: dict[str, str] | None = None,
        project_attributes: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(host=host, port=port, faults=faults)
        self.user_data = user_data
        self.instance_id = instance_id
        self.hostname = hostname
        self.zone = zone
        self.project_id = project_id
        self.ip = ip
        self.attributes = dict(attributes or {})
        self.project_attributes = dict(project_attributes or {})

    def _tree(self) -> dict[str, bytes]:
        tree = {
            "instance/id": self.instance_id.encode(),
            "instance/hostname": self.hostname.encode(),
            "instance/name": self.hostname.split(".")[0].encode(),
            "instance/zone": f"projects/123456789012/zones/{self.zone}".encode(),
            "instance/network-interfaces/0/ip": self.ip.encode(),
            "project/project-id": self.project_id.encode(),
        }
        for key, value in self.attributes.items():
            tree[f"instance/attributes/{key}"] = value.encode()
        for key, value in self.project_attributes.items():
            tree[f"project/attributes/{key}"] = value.encode()
        if self.user_data is not None and not self.faults.no_user_data:
            tree["instance/attributes/user-data"] = self.user_data
        return tree

    def route(self, method: str, path: str, query: dict[str, list[str]],
              headers: dict[str, str], body: bytes) -> Reply:
        flavor = {"Metadata-Flavor": "Google"}
        if headers.get("metadata-flavor") != "Google":
            return Reply(403, b"Missing Metadata-Flavor:Google header.\n", headers=flavor)
        if "x-forwarded-for" in headers:
            return Reply(403, b"Request forwarded by a proxy.\n", headers=flavor)
        if method not in ("GET", "HEAD"):
            return Reply(405, b"Method not allowed\n", headers=flavor)
        if not path.startswith(PREFIX):
            return Reply(404, b"Not found\n", headers=flavor)
        key = path[len(PREFIX):]
        tree = self._tree()
        if (query.get("recursive") or [""])[0].lower() == "true":
            return self._recursive(tree, key, flavor)
        if key in tree:
            return Reply(200, tree[key], "application/text", flavor)
        children = list_children(list(tree), key) if key.endswith("/") or not key else []
        if children:
            return Reply(200, "\n".join(children).encode() + b"\n", "application/text", flavor)
        return Reply(404, b"Not found\n", "text/html", flavor)

    @staticmethod
    def _recursive(tree: dict[str, bytes], key: str, flavor: dict[str, str]) -> Reply:
        """``?recursive=true``: a folder as one JSON object (sub-folders nested)."""
        prefix = key.strip("/") + "/" if key.strip("/") else ""
        if key.strip("/") in tree:
            return Reply(200, json.dumps(tree[key.strip("/")].decode()).encode(),
                         "application/json", flavor)
        found: dict[str, Any] = {}
        for name, value in tree.items():
            if not name.startswith(prefix):
                continue
            *folders, leaf = name[len(prefix):].split("/")
            node = found
            for folder in folders:
                node = node.setdefault(folder, {})
            node[leaf] = value.decode(errors="replace")
        if not found:
            return Reply(404, b"Not found\n", "text/html", flavor)
        return Reply(200, json.dumps(found).encode(), "application/json", flavor)
