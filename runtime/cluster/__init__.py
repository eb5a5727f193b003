"""Clustering: membership (:mod:`.state`), joining (:mod:`.joining`) and configuration
replication over TCP 9080 (:mod:`.replicate`).

Kept import-light: first boot and the heartbeat code import this package, so
nothing heavy (asyncio servers, TLS) is imported until it is used.
``join(root, intent, password)`` is the hook first boot calls
(``firstboot/apply/cluster.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lockgate.runtime.cluster.state import ClusterState, Member, load_cluster, save_cluster

__all__ = ["ClusterState", "Member", "join", "load_cluster", "save_cluster"]


def join(root: Path, intent: Any, password: str) -> None:
    """First boot's hook (a function, so the submodule is named ``joining``): keep the
    password (0600, data partition) for the runtime,
    which carries out the join recorded by first boot, with retries. First boot
    itself never waits on the network for it."""
    from lockgate.runtime.cluster.joining import queue_join

    queue_join(root, intent, password)

