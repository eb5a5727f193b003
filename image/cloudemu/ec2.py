"""EC2 instance metadata service (IMDS), v2 sessions and optionally v1.

Shapes follow the AWS documentation: ``PUT /latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600) returns a token that goes in
``X-aws-ec2-metadata-token`` on every GET; an invalid or expired token gets
401; without a token, GETs get 401 when IMDSv1 is disabled (``imdsv1=False``)
and are served otherwise. ``/latest/user-data`` is 404 when there is none.
``ssh_keys`` is the launch key pair: ``meta-data/public-keys/`` lists
``0=<key_name>`` and ``public-keys/0/openssh-key`` is the key (404 without).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from lockgate.image.cloudemu.base import Emulator, Faults, Reply, list_children

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"


@dataclass
class _Token:
    expires: float
    uses: int = 0


class Ec2Imds(Emulator):
    name = "ec2"

    def __init__(
        self,
        *,
        user_data: bytes | None = None,
        instance_id: str = "i-0123456789abcdef0",
        region: str = "us-east-1",
        local_ipv4: str = "10.0.0.5",
        hostname: str = "ip-10-0-0-5.ec2.internal",
        imdsv1: bool = True,
        ssh_keys: Sequence[str] = (),
        key_name: str = "lockgate-key",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(host=host, port=port, faults=faults)
        self.user_data = user_data
        self.instance_id = instance_id
        self.region = region
        self.local_ipv4 = local_ipv4
        self.hostname = hostname
        self.imdsv1 = imdsv1
        self.ssh_keys = list(ssh_keys)  # the launch key pair; EC2 serves one, as index 0
        self.key_name = key_name
        self._tokens: dict[str, _Token] = {}
        self._token_lock = threading.Lock()
        self.tokens_issued = 0

    def _meta(self) -> dict[str, str]:
        keys = {f"public-keys/{i}/openssh-key": f"{key}\n"
                for i, key in enumerate(self.ssh_keys)}
        return keys | {
            "instance-id": self.instance_id,
            "ami-id": "ami-0abcdef1234567890",
            "instance-type": "t3.medium",
            "local-ipv4": self.local_ipv4,
            "local-hostname": self.hostname,
            "hostname": self.hostname,
            "placement/region": self.region,
            "placement/availability-zone": self.region + "a",
        }

    def _issue_token(self, headers: dict[str, str]) -> Reply:
        if self.faults.token_forbidden:
            return Reply(403, b"Forbidden\n")
        if "x-forwarded-for" in headers:  # IMDS refuses tokens through a proxy
            return Reply(403, b"Forbidden\n")
        try:
            ttl = int(headers.get(TTL_HEADER, ""))
        except ValueError:
            return Reply(400, b"Missing or invalid TTL header\n")
        if not 1 <= ttl <= 21600:
            return Reply(400, b"TTL must be between 1 and 21600 seconds\n")
        token = secrets.token_urlsafe(40)
        with self._token_lock:
            self._tokens[token] = _Token(time.monotonic() + ttl)
            self.tokens_issued += 1
        return Reply(200, token.encode(), headers={"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})

    def _token_ok(self, token: str) -> bool:
        limit = self.faults.token_max_uses
        with self._token_lock:
            state = self._tokens.get(token)
            if state is None or time.monotonic() >= state.expires:
                return False
            state.uses += 1
            return limit is None or state.uses <= limit

    def route(self, method: str, path: str, query: dict[str, list[str]],
              headers: dict[str, str], body: bytes) -> Reply:
        if path == TOKEN_PATH:
            if method != "PUT":
                return Reply(405, b"Method Not Allowed\n")
            return self._issue_token(headers)
        if method not in ("GET", "HEAD"):
            return Reply(405, b"Method Not Allowed\n")
        token = headers.get(TOKEN_HEADER)
        if token is not None:
            if not self._token_ok(token):
                return Reply(401, b"Unauthorized\n")
        elif not self.imdsv1:
            return Reply(401, b"Unauthorized\n")
        return self._serve(path)

    def _serve(self, path: str) -> Reply:
        parts = path.split("/", 2)  # "", version, rest
        if len(parts) < 3 or not (parts[1] == "latest" or parts[1][:2] == "20"):
            return Reply(404, b"Not Found\n")
        rest = parts[2]
        if rest == "user-data":
            if self.user_data is None or self.faults.no_user_data:
                return Reply(404, b"Not Found\n")
            return Reply(200, self.user_data, "application/octet-stream")
        if rest == "dynamic/instance-identity/document":
            doc = {"instanceId": self.instance_id, "region": self.region,
                   "availabilityZone": self.region + "a", "privateIp": self.local_ipv4}
            return Reply(200, json.dumps(doc, indent=2).encode(), "application/json")
        if rest.startswith("meta-data"):
            key = rest[len("meta-data"):].strip("/")
            if key == "public-keys" and self.ssh_keys:  # lists "0=name", not "0/"
                names = (f"{i}={self.key_name}" for i in range(len(self.ssh_keys)))
                return Reply(200, "\n".join(names).encode())
            meta = self._meta()
            if key in meta:
                return Reply(200, meta[key].encode())
            children = list_children(list(meta), key)
            if children:
                return Reply(200, "\n".join(children).encode())
        return Reply(404, b"Not Found\n")
