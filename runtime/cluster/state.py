"""Cluster membership: who is in the cluster, and the secret its members share.

``<state_dir>/runtime/cluster.json`` (mode 0600: it holds the secret)::

    {"name": "tm1", "secret": "<64 hex digits>", "epoch": 3,
     "members": [{"name": "tm1", "address": "10.0.0.1", "admin_port": 9090,
                  "control_port": 9080, "fingerprint": "AA:BB:...", "location": null}, ...]}

A stand-alone appliance has no file (:func:`load_cluster` returns None); it is
a cluster of one, and the file is created on first need (the first join
against it, :func:`ensure_cluster`). ``epoch`` goes up by one on every
membership change, so members can tell which member list is newer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lockgate.files import atomic_write
from lockgate.paths import StatePaths

FILE_NAME = "cluster.json"
ADMIN_PORT = 9090
CONTROL_PORT = 9080
SECRET_BYTES = 32


@dataclass(frozen=True)
class Member:
    name: str
    address: str
    admin_port: int = ADMIN_PORT
    control_port: int = CONTROL_PORT
    fingerprint: str = ""  # SHA-1 "AA:BB:..." of the member's admin certificate
    location: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Member:
        return cls(name=str(data["name"]), address=str(data["address"]),
                   admin_port=int(data.get("admin_port", ADMIN_PORT)),
                   control_port=int(data.get("control_port", CONTROL_PORT)),
                   fingerprint=str(data.get("fingerprint", "")),
                   location=data.get("location"))


@dataclass(frozen=True)
class ClusterState:
    name: str  # this member's name
    secret: bytes = field(repr=False)  # shared by all members; never printed
    members: tuple[Member, ...]  # including this member
    epoch: int

    @property
    def me(self) -> Member | None:
        return self.member(self.name)

    @property
    def peers(self) -> tuple[Member, ...]:
        """Every member but this one."""
        return tuple(m for m in self.members if m.name != self.name)

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def with_member(self, member: Member) -> ClusterState:
        """Add ``member`` (or replace the one of that name); epoch + 1."""
        others = tuple(m for m in self.members if m.name != member.name)
        return replace(self, members=(*others, member), epoch=self.epoch + 1)

    def without_member(self, name: str) -> ClusterState:
        return replace(self, members=tuple(m for m in self.members if m.name != name),
                       epoch=self.epoch + 1)

    def to_json(self, include_secret: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "epoch": self.epoch,
                                "members": [asdict(m) for m in self.members]}
        if include_secret:
            data["secret"] = self.secret.hex()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        return cls(name=str(data["name"]), secret=bytes.fromhex(data["secret"]),
                   members=tuple(Member.from_json(m) for m in data["members"]),
                   epoch=int(data["epoch"]))


def cluster_path(state_dir: Path) -> Path:
    return StatePaths(Path(state_dir)).runtime / FILE_NAME


def load_cluster(state_dir: Path) -> ClusterState | None:
    """This appliance's cluster, or None while it stands alone (a cluster of one)."""
    try:
        data = json.loads(cluster_path(state_dir).read_text())
    except FileNotFoundError:
        return None
    return ClusterState.from_json(data)


def save_cluster(state_dir: Path, state: ClusterState) -> None:
    text = json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n"
    atomic_write(cluster_path(state_dir), text.encode(), 0o600)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    path = cluster_path(state_dir).with_name(".cluster.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def update_cluster(state_dir: Path,
                   change: Callable[[ClusterState | None], ClusterState | None]
                   ) -> ClusterState | None:
    """Read, change and save the member list as one step (an exclusive lock), so a join
    answered here and a list arriving from a peer cannot overwrite each other.
    ``change`` returns the new state, or None to leave the file as it is."""
    with _locked(state_dir):
        current = load_cluster(state_dir)
        new = change(current)
        if new is None:
            return current
        save_cluster(state_dir, new)
        return new


def new_cluster(me: Member) -> ClusterState:
    """A cluster of one: this member, a fresh secret, epoch 1."""
    return ClusterState(name=me.name, secret=secrets.token_bytes(SECRET_BYTES),
                        members=(me,), epoch=1)


def ensure_cluster(state_dir: Path, me: Member) -> ClusterState:
    """The stored cluster, or a new cluster of one (saved) when there is none yet."""
    state = load_cluster(state_dir)
    if state is None:
        state = new_cluster(me)
        save_cluster(state_dir, state)
    return state
