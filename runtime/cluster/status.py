"""Fault-tolerance status: the members, whether each is heard from, and who holds which
traffic IP -- one JSON document for the REST API, the CLI and the Admin UI.

:func:`cluster_status` is the one entry point (blocking, cheap)::

    from lockgate.runtime.cluster.status import cluster_status
    doc = cluster_status(state_dir)

It may be called on serve's event loop (an Admin UI or REST handler) or from any
thread; it never blocks on the network (a file read at most).

Inside ``lockgate runtime serve`` the fault-tolerance service registers itself
(:func:`register`) and the document is made from its live state. Any other process
(``lockgate runtime cluster status``) reads what the service last wrote to
``<state_dir>/runtime/cluster_status.json`` (rewritten every second while it runs and at
once on a change); a file older than :data:`STALE_S` means the runtime is not running,
and the document says so (``"running": false``) instead of showing old liveness.

The document (``null`` where nothing is known)::

    {"clustered": true, "member": "tm1", "epoch": 3, "running": true, "age_s": 0.4,
     "healthy": true,
     "settings": {"monitor_interval": 0.5, "monitor_timeout": 1.5, "autofailback": false},
     "members": [{"name", "address", "admin_port", "control_port", "fingerprint",
                  "location", "this": bool,
                  "state": "self|alive|dead|leaving|not_heard|unknown",
                  "alive": bool|null, "last_heard_s": float|null,
                  "role": "active|passive|none", "groups": [...], "serving": [...],
                  "holding": [...]}],
     "traffic_ip_groups": [{"name", "enabled", "keeptogether", "machines",
                            "passive_machines", "ips": [{"ip", "held_by", "holders"}]}],
     "dropped_packets": {"forged": 0, ...}}

``held_by`` is the one member holding the IP, null when nobody does or when several
say they do (``holders`` lists them all; two only while a healed partition settles).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from lockgate.files import atomic_write
from lockgate.paths import StatePaths

FILE_NAME = "cluster_status.json"
WRITE_EVERY = 1.0  # seconds between rewrites of the file while nothing changes
STALE_S = 5.0  # a file older than this was not written by a running service


class LiveStatus(Protocol):
    def status_document(self) -> dict[str, Any]: ...


_live: dict[Path, LiveStatus] = {}
_lock = threading.Lock()


def status_path(state_dir: Path) -> Path:
    return StatePaths(Path(state_dir)).runtime / FILE_NAME


def _key(state_dir: Path) -> Path:
    return Path(state_dir).resolve()


def register(state_dir: Path, service: LiveStatus) -> None:
    with _lock:
        _live[_key(state_dir)] = service


def unregister(state_dir: Path, service: LiveStatus) -> None:
    with _lock:
        if _live.get(_key(state_dir)) is service:
            del _live[_key(state_dir)]


def live_service(state_dir: Path) -> LiveStatus | None:
    with _lock:
        return _live.get(_key(state_dir))


def cluster_status(state_dir: Path, now: float | None = None) -> dict[str, Any]:
    """The status document (see the module's doc), live when this process runs the
    fault-tolerance service for ``state_dir``, else from its last written file."""
    live = live_service(state_dir)
    if live is not None:
        return live.status_document()
    return from_file(state_dir, time.time() if now is None else now)


def from_file(state_dir: Path, now: float) -> dict[str, Any]:
    try:
        saved = json.loads(status_path(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        saved = None
    if saved is not None and now - float(saved.get("written_at", 0)) <= STALE_S:
        return _ages(saved, now, running=True)
    # Not running (or not for a while): what the files say, with liveness unknown.
    doc = offline_document(state_dir)
    if saved is not None:
        doc["last_written_s"] = round(max(0.0, now - float(saved.get("written_at", 0))), 1)
    return doc


def _ages(saved: dict[str, Any], now: float, running: bool) -> dict[str, Any]:
    """Turn the file's wall-clock times into ages as of ``now``."""
    doc = {k: v for k, v in saved.items() if k != "written_at"}
    doc["running"] = running
    doc["age_s"] = round(max(0.0, now - float(saved["written_at"])), 3)
    members = []
    for m in saved.get("members", []):
        m = dict(m)
        heard = m.pop("heard_at", None)
        m["last_heard_s"] = None if heard is None else round(max(0.0, now - heard), 3)
        members.append(m)
    doc["members"] = members
    return doc


def offline_document(state_dir: Path) -> dict[str, Any]:
    """From cluster.json and the configuration alone: nobody's liveness is known."""
    from lockgate.runtime.cluster.state import load_cluster
    from lockgate.runtime.config.store import ConfigStore

    cluster = load_cluster(state_dir)
    try:
        config = ConfigStore(Path(state_dir)).load()
    except Exception:  # a store that does not load: report the members all the same
        config = None
    groups = list(config.traffic_ip_groups.values()) if config is not None else []
    settings = config.fault_tolerance if config is not None else None
    members = []
    for m in cluster.members if cluster else ():
        members.append(member_entry(m, cluster.name if cluster else "", groups, state="unknown",
                                    alive=None, heard_at=None, serving=[], holding=[]))
    return {
        "clustered": cluster is not None,
        "member": cluster.name if cluster else None,
        "epoch": cluster.epoch if cluster else None,
        "running": False,
        "age_s": None,
        "healthy": None,
        "settings": settings_entry(settings),
        "members": [{**{k: v for k, v in m.items() if k != "heard_at"}, "last_heard_s": None}
                    for m in members],
        "traffic_ip_groups": [group_entry(g, {}) for g in sorted(groups, key=lambda g: g.name)],
        "dropped_packets": {},
    }


def settings_entry(settings: Any) -> dict[str, Any] | None:
    if settings is None:
        return None
    return {"monitor_interval": settings.monitor_interval,
            "monitor_timeout": settings.monitor_timeout,
            "child_timeout": settings.child_timeout,
            "autofailback": settings.autofailback}


def member_entry(member: Any, me: str, groups: list[Any], *, state: str, alive: bool | None,
                 heard_at: float | None, serving: list[str], holding: list[str]
                 ) -> dict[str, Any]:
    active = sorted(g.name for g in groups if member.name in g.machines)
    passive = sorted(g.name for g in groups
                     if member.name in g.passive_machines and member.name not in g.machines)
    return {"name": member.name, "address": member.address, "admin_port": member.admin_port,
            "control_port": member.control_port, "fingerprint": member.fingerprint,
            "location": member.location, "this": member.name == me, "state": state,
            "alive": alive, "heard_at": heard_at,
            "role": "active" if active else "passive" if passive else "none",
            "groups": sorted(active + passive), "serving": sorted(serving),
            "holding": sorted(holding)}


def group_entry(group: Any, holders: dict[str, list[str]]) -> dict[str, Any]:
    ips = []
    for ip in group.ipaddresses:
        who = sorted(holders.get(ip, []))
        ips.append({"ip": ip, "held_by": who[0] if len(who) == 1 else None, "holders": who})
    return {"name": group.name, "enabled": group.enabled, "keeptogether": group.keeptogether,
            "machines": list(group.machines), "passive_machines": list(group.passive_machines),
            "ips": ips}


def write_status(state_dir: Path, raw: dict[str, Any]) -> None:
    """The service's raw document (wall-clock ``written_at`` and ``heard_at``), for other
    processes."""
    data = json.dumps(raw, sort_keys=True).encode()
    atomic_write(status_path(state_dir), data, 0o600)


def aged(raw: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """A running service's raw document as the users see it (ages, not times)."""
    return _ages(raw, time.time() if now is None else now, running=True)


def render(doc: dict[str, Any]) -> list[str]:
    """The document as lines for a terminal (``lockgate runtime cluster status``)."""
    if not doc["clustered"]:
        return ["stand-alone (a cluster of one): no fault tolerance"]
    lines = []
    if doc["running"]:
        head = f"member {doc['member']}, epoch {doc['epoch']}"
        if doc.get("healthy") is False:
            head += " -- NOT HEALTHY: serves no traffic IP group (workers or pools down)"
        lines.append(head)
    else:
        since = doc.get("last_written_s")
        lines.append(f"member {doc['member']}, epoch {doc['epoch']} -- the runtime is not "
                     "running here" + (f" (last status {since:g} s ago)" if since else "")
                     + "; liveness unknown")
    s = doc.get("settings")
    if s:
        lines.append(f"monitor_interval {s['monitor_interval']:g} s, monitor_timeout "
                     f"{s['monitor_timeout']:g} s, autofailback "
                     f"{'on' if s['autofailback'] else 'off'}")
    lines.append("members:")
    for m in doc["members"]:
        heard = ""
        if m["last_heard_s"] is not None and not m["this"]:
            heard = f" (heard {m['last_heard_s'] * 1000:.0f} ms ago)"
        state = "this member" if m["this"] else m["state"]
        where = f" location={m['location']}" if m.get("location") else ""
        holds = f" holds {' '.join(m['holding'])}" if m["holding"] else ""
        lines.append(f"  {m['name']:<12} {m['address']:<15} {state}{heard} role={m['role']}"
                     f"{holds}{where}")
        lines.append(f"  {'':<12} fingerprint {m['fingerprint'] or '-'}")
    if doc["traffic_ip_groups"]:
        lines.append("traffic IP groups:")
    for g in doc["traffic_ip_groups"]:
        flags = [] if g["enabled"] else ["disabled"]
        if g["keeptogether"]:
            flags.append("keeptogether")
        passive = f" passive {','.join(g['passive_machines'])}" if g["passive_machines"] else ""
        lines.append(f"  {g['name']} (machines {','.join(g['machines']) or '-'}{passive})"
                     + (f" [{' '.join(flags)}]" if flags else ""))
        for ip in g["ips"]:
            if len(ip["holders"]) > 1:
                where = "CONFLICT: raised on " + ", ".join(ip["holders"])
            elif ip["held_by"]:
                where = f"on {ip['held_by']}"
            else:
                where = "not raised anywhere" if doc["running"] else "unknown"
            lines.append(f"    {ip['ip']:<15} {where}")
    dropped = {k: v for k, v in (doc.get("dropped_packets") or {}).items() if v and k != "self"}
    if dropped:
        lines.append("heartbeats dropped: " + ", ".join(f"{k} {v}" for k, v in
                                                        sorted(dropped.items())))
    return lines
