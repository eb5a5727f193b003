"""The traffic manager's configuration store: one JSON file, replaced atomically.

``<state_dir>/runtime/config.json`` holds ``{"version": N, "tree": {...},
"imported": {...}}``. Every change takes an exclusive ``flock`` on
``runtime/.lock``, validates the WHOLE resulting configuration, writes a temp
file, fsyncs it, renames it over the old one and fsyncs the folder. A change
that fails validation raises :class:`ConfigError` and leaves the file (and so
the running configuration) untouched. Readers never lock: a rename is atomic.

Workers notice a new version by ``stat()`` of the file (inode/mtime), polled
every second, or at once on SIGHUP (:func:`lockgate.runtime.workers.notify_reload`).
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from lockgate.files import atomic_write
from lockgate.paths import StatePaths
from lockgate.runtime.config.model import Config, empty_tree, normalise_tree, parse_config, users_of
from lockgate.runtime.config.schema import KINDS, ConfigError, fill_document


class ConfigNotFound(ConfigError):
    """No object of that kind and name (the REST layer answers 404)."""


class StaleVersion(ConfigError):
    """The change was based on an older configuration version (the REST layer answers 409)."""


def tree_digest(tree: dict[str, Any]) -> str:
    """A content hash of a tree: the tie-break between two versions of one number
    (cluster replication, docs/cluster.md)."""
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a user's YAML or JSON config file into a normalised tree."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                                     f"{str(exc).splitlines()[0]}") from None
    tree = normalise_tree(raw if raw is not None else {}, str(path))
    parse_config(tree, 0)
    return tree


class ConfigStore:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.folder = StatePaths(self.state_dir).runtime
        self.path = self.folder / "config.json"
        self._lock_path = self.folder / ".lock"

    # ---- reading -------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": 0, "tree": empty_tree(), "imported": None}
        return data

    @property
    def version(self) -> int:
        return int(self._read()["version"])

    def load(self) -> Config:
        data = self._read()
        return parse_config(data["tree"], int(data["version"]))

    def list(self, kind: str) -> builtins.list[str]:
        _check_kind(kind)
        return sorted(self._read()["tree"][kind])

    def get(self, kind: str, name: str) -> dict[str, Any]:
        _check_kind(kind)
        try:
            document: dict[str, Any] = self._read()["tree"][kind][name]
        except KeyError:
            raise ConfigNotFound(f"{kind}.{name}", "no such object") from None
        return document

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        """Version and tree read together (one file read)."""
        data = self._read()
        return int(data["version"]), data["tree"]

    def tree(self) -> dict[str, Any]:
        """The whole normalised tree (kind -> name -> document, plus "settings")."""
        tree: dict[str, Any] = self._read()["tree"]
        return tree

    # ---- changing ------------------------------------------------------------------------
    def put(self, kind: str, name: str, document: dict[str, Any],
            expect_version: int | None = None) -> int:
        """Create or replace one object; returns the new version.

        ``expect_version``: the version the change was based on; a store that has
        moved on since raises :class:`StaleVersion` (no lost update)."""
        _check_kind(kind)
        filled = fill_document(kind, name, document)
        with self._locked() as data:
            _check_version(data, f"{kind}.{name}", expect_version)
            tree = copy.deepcopy(data["tree"])
            tree[kind][name] = filled
            return self._commit(data, tree)

    def delete(self, kind: str, name: str, expect_version: int | None = None) -> int:
        _check_kind(kind)
        with self._locked() as data:
            _check_version(data, f"{kind}.{name}", expect_version)
            tree = copy.deepcopy(data["tree"])
            if name not in tree[kind]:
                raise ConfigNotFound(f"{kind}.{name}", "no such object")
            users = users_of(tree, kind, name)
            if users:
                raise ConfigError(f"{kind}.{name}", f"still used by {', '.join(users)}")
            del tree[kind][name]
            return self._commit(data, tree)

    def replace(self, tree: dict[str, Any], imported: dict[str, Any] | None = None) -> int:
        """Replace everything with an already normalised tree (from a file)."""
        with self._locked() as data:
            return self._commit(data, copy.deepcopy(tree), imported)

    def install(self, version: int, tree: dict[str, Any], force: bool = False) -> bool:
        """Take a whole configuration from a cluster peer at exactly ``version``.

        Taken only when (version, digest) is newer than what the store holds, so
        every member ends on the same configuration whatever order pushes arrive
        in; ``force`` takes it anyway (a joining member adopts the cluster's).
        Returns whether it was taken."""
        tree = normalise_tree(copy.deepcopy(tree), "replicated configuration")
        with self._locked() as data:
            mine = (int(data["version"]), tree_digest(data["tree"]))
            if not force and (version, tree_digest(tree)) <= mine:
                return False
            parse_config(tree, version)
            record = {"version": version, "tree": tree, "imported": data.get("imported")}
            atomic_write(self.path, json.dumps(record, indent=1, sort_keys=True).encode())
            return True

    def import_file(self, path: Path, force: bool = False) -> int | None:
        """Import ``path`` unless the store already holds it or something newer.

        Rule: the file is imported when the store is empty or when the file's
        content differs from the content last imported. If the same file was
        imported before, changes made since (REST, ``reload``) are kept.
        ``force`` imports it anyway. Returns the new version, or None when
        nothing was imported.
        """
        tree = read_config_file(path)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        with self._locked() as data:
            last = data.get("imported") or {}
            if not force and data["version"] > 0 and last.get("sha256") == digest:
                return None
            return self._commit(data, tree, {"path": str(path), "sha256": digest})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)  # closing drops the lock

    def _commit(self, data: dict[str, Any], tree: dict[str, Any],
                imported: dict[str, Any] | None = None) -> int:
        version = int(data["version"]) + 1
        parse_config(tree, version)  # the whole config must hold together, or nothing changes
        record = {"version": version, "tree": tree,
                  "imported": imported if imported is not None else data.get("imported")}
        atomic_write(self.path, json.dumps(record, indent=1, sort_keys=True).encode())
        return version


def _check_version(data: dict[str, Any], field: str, expected: int | None) -> None:
    if expected is not None and int(data["version"]) != expected:
        raise StaleVersion(field, f"the configuration is at version {data['version']}, not "
                                  f"{expected}: it changed since it was read; read it again "
                                  "and repeat the change")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigNotFound(kind, f"unknown kind (known: {', '.join(KINDS)})")
