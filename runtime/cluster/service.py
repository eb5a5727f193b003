"""The cluster's part of ``lockgate runtime serve``: the join endpoint on the Admin
and REST ports, replication on the control port, and first boot's pending join.

Hook (``runtime/serve.py``)::

    cluster = await start_cluster(state_dir, mgmt, host, control_port, member_name)
    ...
    await cluster.close()
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate.runtime.cluster.joining import JOIN_PATH, JoinRetrier, JoinService, member_name
from lockgate.runtime.cluster.replicate import Replicator

log = logging.getLogger("lockgate.runtime.cluster")

CLUSTER_PREFIX = JOIN_PATH.rsplit("/", 1)[0]  # /api/tm/1.0/cluster


@dataclass
class ClusterRuntime:
    service: JoinService
    replicator: Replicator
    retrier: asyncio.Task[None]

    def describe(self) -> str:
        return f"control={self.replicator.port} member={self.service.name}"

    async def close(self) -> None:
        # A join attempt in its worker thread cannot be interrupted; don't wait for it
        # (it gives up within its own deadline). Cancel again if 3.11's wait_for ate one.
        for _ in range(5):
            if self.retrier.done():
                break
            self.retrier.cancel()
            await asyncio.wait({self.retrier}, timeout=0.5)
        await self.replicator.close()


async def start_cluster(state_dir: Path, mgmt: Any, host: str, control_port: int,
                        name: str | None = None) -> ClusterRuntime:
    """Start replication and the join retries; route the cluster resources of the Admin
    port (where joiners connect, as in the reference product) to the REST API."""
    state_dir = Path(state_dir)
    replicator = Replicator(state_dir, mgmt.certificate.server_context())
    await replicator.start(host, control_port)
    me = member_name(state_dir, name)
    service = JoinService(state_dir, me, mgmt.admin.port, replicator.port, mgmt.fingerprint)
    rest = mgmt.rest.handler
    rest.cluster = service
    rest.replicator = replicator
    admin = mgmt.admin.handler

    async def admin_with_cluster(request: Any) -> Any:
        if request.path == CLUSTER_PREFIX or request.path.startswith(CLUSTER_PREFIX + "/"):
            return await rest(request)
        return await admin(request)

    mgmt.admin.handler = admin_with_cluster
    retrier = JoinRetrier(state_dir, me, mgmt.admin.port, replicator.port)
    return ClusterRuntime(service, replicator, asyncio.create_task(retrier.run()))
