"""The Admin UI's event log: logins, configuration changes, node health changes.

A small JSONL file in the state dir (``runtime/events.jsonl``), appended one
line per event and cut back to the newest :data:`KEEP` lines once it holds
twice that many, so it survives restarts and stays bounded. Health changes are
noticed by comparing each status snapshot with the last one: :meth:`EventLog.watch`
reads the workers' merged status every second in the management process (where
the per-worker views meet, so a change is recorded once, not once per worker),
whether or not anyone has a page open; the pages' own reads feed it too.
Nothing secret is recorded: user names and object names, never passwords.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lockgate.paths import StatePaths

KEEP = 500
WATCH_INTERVAL = 1.0  # seconds; the workers write their status about once a second

log = logging.getLogger("lockgate.runtime.admin.events")


class EventLog:
    def __init__(self, state_dir: Path) -> None:
        self.path = StatePaths(state_dir).runtime / "events.jsonl"
        self._lock = threading.Lock()
        self._health: dict[tuple[str, str], str] = {}
        self._observing = threading.Lock()  # the watcher and page reads, in worker threads
        self._lines: int | None = None

    def add(self, kind: str, text: str) -> None:
        line = json.dumps({"time": time.time(), "kind": kind, "text": text}) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(line)
                if self._lines is None:
                    self._lines = len(self.path.read_text(encoding="utf-8").splitlines())
                else:
                    self._lines += 1
                if self._lines >= 2 * KEEP:
                    from lockgate.files import atomic_write

                    kept = self.path.read_text(encoding="utf-8").splitlines()[-KEEP:]
                    atomic_write(self.path, ("\n".join(kept) + "\n").encode(), 0o600)
                    self._lines = len(kept)
            except OSError:
                pass  # the log is a convenience: a full disk must not break a login

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()[-limit:]
        except OSError:
            return []
        events = []
        for line in reversed(lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                event["when"] = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                              time.gmtime(float(event.get("time", 0))))
                events.append(event)
        return events

    def observe(self, snapshot: Mapping[str, Any]) -> None:
        """Record node health changes between this snapshot and the previous one."""
        changes = []
        with self._observing:
            seen: dict[tuple[str, str], str] = {}
            for pool, data in (snapshot.get("pools") or {}).items():
                for node, info in ((data or {}).get("nodes") or {}).items():
                    state = str((info or {}).get("state", "unknown"))
                    before = self._health.get((pool, node))
                    seen[(pool, node)] = state
                    if before is not None and before != state:
                        changes.append(f"pool {pool}: node {node} {before} -> {state}")
            # Only what the snapshot names: pools and nodes removed from the configuration
            # are forgotten, so the remembered states stay as many as the configured nodes.
            self._health = seen
        for text in changes:
            self.add("health", text)

    async def watch(self, snapshot: Callable[[], Mapping[str, Any]],
                    interval: float = WATCH_INTERVAL) -> None:
        """Observe ``snapshot()`` every ``interval`` seconds until cancelled."""
        while True:
            try:
                await asyncio.to_thread(lambda: self.observe(snapshot()))
            except Exception:  # an unreadable status file must not end the watching
                log.exception("reading the workers' status for the event log failed")
            await asyncio.sleep(interval)
