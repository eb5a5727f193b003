"""Clustering: membership (:mod:`.state`), joining (:mod:`.join`) and configuration
replication over TCP 9080 (:mod:`.replicate`).

Kept import-light: first boot and the heartbeat code import this package, so
nothing heavy (asyncio servers, TLS) is imported until it is used.
``join(root, intent, password)`` is the hook first boot calls
(``firstboot/apply/cluster.py``).
"""

from __future__ import annotations

from lockgate.runtime.cluster.state import ClusterState, Member, load_cluster, save_cluster

__all__ = ["ClusterState", "Member", "load_cluster", "save_cluster"]

