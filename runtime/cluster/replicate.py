"""Configuration replication between cluster members (TCP 9080, TLS).

Every member runs a :class:`Replicator`: a TLS server on the control port (its
Admin certificate) and one outgoing link to every other member. A link pins
the peer's certificate by the SHA-1 fingerprint in the member list, then proves
it belongs to the cluster: the server sends a random nonce, the client answers
with its name and HMAC-SHA256(cluster secret, nonce and name); the server
accepts only a current member with the right MAC. Connections from a member
that has been removed are closed and refused.

Messages are one JSON object per line. A link sends its member's state --
configuration ``version`` + ``digest`` (+ ``tree``) and membership ``epoch`` +
``members_digest`` (+ ``members``) -- when it connects and whenever the local
files change (polled every 50 ms by ``stat``: REST changes, ``reload``,
replicated ones alike); the server takes what is newer and answers with its
own state, in full when it is the newer one. So a member that was down pulls
what it missed as soon as a link comes up, and a change travels on to the
other members from wherever it arrives.

Order: configurations compare by (version, digest of the tree), membership by
(epoch, digest of the member list); every member takes only a newer one, so
all end on the same. Two changes made on two members at the same version
within one round trip are a conflict: the one with the larger digest wins
everywhere and the other member logs that its change was replaced (see
docs/cluster.md). A REST client avoids lost updates with ``If-Match`` (409).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import ssl
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lockgate.files import file_stamp
from lockgate.runtime.cluster.state import (
    ClusterState,
    Member,
    cluster_path,
    load_cluster,
    update_cluster,
)
from lockgate.runtime.config.schema import ConfigError
from lockgate.runtime.config.store import ConfigStore, tree_digest

log = logging.getLogger("lockgate.runtime.cluster")

PROTOCOL = "lockgate-cluster-1"
MAX_MESSAGE = 64 * 1024 * 1024
POLL = 0.05  # seconds between stat()s of the config and member files
KEEPALIVE = 2.0  # an idle link sends its summary this often (finds dead peers)
AUTH_TIMEOUT = 5.0
RETRY_FIRST, RETRY_CAP = 0.1, 2.0


class LinkRefused(Exception):
    pass


def mac(secret: bytes, nonce: str, name: str) -> str:
    return hmac.new(secret, f"{PROTOCOL}|{nonce}|{name}".encode(), hashlib.sha256).hexdigest()


def members_digest(members: tuple[Member, ...]) -> str:
    rows = sorted((asdict(m) for m in members), key=lambda m: m["name"])
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


async def _recv(reader: asyncio.StreamReader, timeout: float | None = None) -> dict[str, Any]:
    line = await asyncio.wait_for(reader.readline(), timeout)
    if not line:
        raise ConnectionError("connection closed")
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("message is not a JSON object")
    return message


@dataclass(frozen=True)
class Summary:
    version: int
    digest: str
    epoch: int
    members_digest: str

    @classmethod
    def of(cls, message: dict[str, Any]) -> Summary:
        return cls(int(message["version"]), str(message["digest"]), int(message["epoch"]),
                   str(message["members_digest"]))

    def config_key(self) -> tuple[int, str]:
        return (self.version, self.digest)

    def members_key(self) -> tuple[int, str]:
        return (self.epoch, self.members_digest)

    def ahead_of(self, other: Summary) -> bool:
        return (self.config_key() > other.config_key()
                or self.members_key() > other.members_key())


class Replicator:
    def __init__(self, state_dir: Path, server_context: ssl.SSLContext,
                 poll: float = POLL) -> None:
        self.state_dir = Path(state_dir)
        self.store = ConfigStore(self.state_dir)
        self.server_context = server_context
        self.poll = poll
        self.cluster: ClusterState | None = None
        self.version = 0
        self.tree: dict[str, Any] = {}
        self.digest = ""
        self.host = ""
        self.port = 0
        self._stamps: tuple[Any, Any] = (object(), object())
        self._links: dict[str, tuple[Member, asyncio.Task[None], asyncio.Event]] = {}
        self._inbound: dict[str, set[asyncio.StreamWriter]] = {}
        self._problems: dict[str, str] = {}
        self._server: asyncio.Server | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._absorbing = asyncio.Lock()
        self._closing = False

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        """Watch the local files; listen on ``port`` once this appliance is in a cluster
        (a stand-alone appliance opens no control port)."""
        self.host, self.port = host, port
        self.refresh()
        await self._listen(force=port == 0)  # a kernel-chosen port collides with nothing
        self._watcher = asyncio.create_task(self._watch())

    async def _listen(self, force: bool = False) -> None:
        if self._server is not None or (self.cluster is None and not force):
            return
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host or None, self.port, ssl=self.server_context,
                limit=MAX_MESSAGE)
        except OSError as exc:
            problem = f"cannot listen on control port {self.port}: {exc.strerror or exc}"
            if self._problems.get("") != problem:
                log.error("cluster: %s; retrying", problem)
            self._problems[""] = problem
            return
        self._problems.pop("", None)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("cluster: control port %d listening", self.port)

    async def close(self) -> None:
        self._closing = True  # the loops also stop by themselves: see below
        pending = {t for _, t, _ in self._links.values()}
        if self._watcher is not None:
            pending.add(self._watcher)
        # Python 3.11's wait_for can swallow a cancellation that arrives as its inner
        # await finishes, so one cancel() may not end a task: cancel again (bounded).
        for _ in range(20):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        self._links.clear()
        for writers in self._inbound.values():
            for writer in writers:
                writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ---- local state -------------------------------------------------------------------------
    def summary(self) -> Summary:
        members = self.cluster.members if self.cluster else ()
        return Summary(self.version, self.digest, self.cluster.epoch if self.cluster else 0,
                       members_digest(members))

    def message(self, full: bool) -> dict[str, Any]:
        summary = self.summary()
        message: dict[str, Any] = {"type": "state", **asdict(summary)}
        if full:
            message["tree"] = self.tree
            message["members"] = [asdict(m) for m in (self.cluster.members if self.cluster else ())]
        return message

    def refresh(self) -> None:
        """Re-read the member list and configuration when their files changed."""
        stamps = (file_stamp(cluster_path(self.state_dir)), file_stamp(self.store.path))
        if stamps == self._stamps:
            return
        if stamps[0] != self._stamps[0]:
            self.cluster = load_cluster(self.state_dir)
            self._reconcile()
        if stamps[1] != self._stamps[1]:
            self.version, self.tree = self.store.snapshot()
            self.digest = tree_digest(self.tree)
        self._stamps = stamps
        for _, _, wake in self._links.values():
            wake.set()

    async def _watch(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.poll)
            try:
                self.refresh()
            except (OSError, ValueError, KeyError) as exc:  # a file being replaced by hand
                log.warning("cluster: cannot read the local state: %s", exc)
            await self._listen()

    def _reconcile(self) -> None:
        """One link per current peer; none to (and no connections from) removed members."""
        cluster = self.cluster
        wanted = {m.name: m for m in cluster.peers} if cluster and cluster.me else {}
        for name, (member, task, _) in list(self._links.items()):
            if wanted.get(name) != member:
                task.cancel()
                del self._links[name]
        for name, member in wanted.items():
            if name not in self._links:
                wake = asyncio.Event()
                task = asyncio.create_task(self._link(member, wake), name=f"cluster-link-{name}")
                self._links[name] = (member, task, wake)
        for name, writers in list(self._inbound.items()):
            if cluster is None or cluster.member(name) is None:
                log.info("cluster: %s is no longer a member; closing its connections", name)
                for writer in writers:
                    writer.close()
                del self._inbound[name]

    async def absorb(self, message: dict[str, Any], source: str) -> None:
        """Take the configuration and/or member list in ``message`` when newer."""
        async with self._absorbing:
            self.refresh()
            theirs = Summary.of(message)
            mine = self.summary()
            if "tree" in message and theirs.config_key() > mine.config_key():
                try:
                    taken = await asyncio.to_thread(self.store.install, theirs.version,
                                                    message["tree"])
                except ConfigError as exc:
                    log.error("cluster: configuration version %d from %s does not load here: "
                              "%s", theirs.version, source, exc)
                    taken = False
                if taken and theirs.version == mine.version:
                    log.warning("cluster: conflict at configuration version %d: the change "
                                "from %s replaced this member's concurrent change", mine.version,
                                source)
            if "members" in message and theirs.members_key() > mine.members_key():
                members = tuple(Member.from_json(m) for m in message["members"])

                def take(current: ClusterState | None) -> ClusterState | None:
                    if current is None:
                        return None
                    key = (current.epoch, members_digest(current.members))
                    if theirs.members_key() <= key:
                        return None  # changed here meanwhile (a join): keep the newer
                    return replace(current, members=members, epoch=theirs.epoch)

                state = await asyncio.to_thread(update_cluster, self.state_dir, take)
                if state is not None and state.me is None:
                    log.warning("cluster: this member (%s) was removed from the cluster",
                                state.name)
            self.refresh()

    # ---- the server: other members' links ------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = None
        try:
            nonce = secrets.token_hex(16)
            await _send(writer, {"type": "challenge", "protocol": PROTOCOL, "nonce": nonce})
            hello = await _recv(reader, AUTH_TIMEOUT)
            name = str(hello.get("name"))
            self.refresh()  # a member that joined a moment ago
            cluster = self.cluster
            if (cluster is None or cluster.member(name) is None or name == cluster.name
                    or not hmac.compare_digest(mac(cluster.secret, nonce, name),
                                               str(hello.get("mac")))):
                client = writer.get_extra_info("peername")
                log.warning("cluster: refused a control connection from %s claiming to be %r: "
                            "not a member, or a wrong cluster secret", client, name)
                await _send(writer, {"type": "denied", "reason": "not a member of this cluster"})
                name = None
                return
            await _send(writer, {"type": "welcome", "name": cluster.name})
            self._inbound.setdefault(name, set()).add(writer)
            link = self._links.get(name)
            if link is not None and name in self._problems:
                link[2].set()  # our link to it is waiting to retry: it is up now
            while True:
                message = await _recv(reader)
                if message.get("type") != "state":
                    continue
                await self.absorb(message, name)
                await _send(writer, self.message(full=self.summary().ahead_of(
                    Summary.of(message))))
        except (OSError, ConnectionError, ValueError, KeyError, TimeoutError, ssl.SSLError):
            pass  # the peer's link reconnects; nothing here to keep
        finally:
            if name is not None:
                self._inbound.get(name, set()).discard(writer)
            writer.close()

    # ---- the client: this member's link to one peer ----------------------------------------
    async def _link(self, peer: Member, wake: asyncio.Event) -> None:
        delay = RETRY_FIRST
        while not self._closing:
            try:
                await self._link_once(peer, wake)
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionError, ValueError, KeyError, TimeoutError,
                    ssl.SSLError, LinkRefused) as exc:
                problem = str(exc) or type(exc).__name__
                if self._problems.get(peer.name) != problem:
                    log.warning("cluster: link to %s (%s:%d): %s", peer.name, peer.address,
                                peer.control_port, problem)
                self._problems[peer.name] = problem
            # Woken early when the peer connects to us: it is up, so try it now.
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
            delay = min(delay * 2, RETRY_CAP)

    async def _link_once(self, peer: Member, wake: asyncio.Event) -> None:
        from lockgate.http import sha1_fingerprint, unverified_context

        cluster = self.cluster
        if cluster is None:
            raise LinkRefused("no cluster")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            peer.address, peer.control_port, ssl=unverified_context(), server_hostname="",
            limit=MAX_MESSAGE), AUTH_TIMEOUT)
        try:
            tls = writer.get_extra_info("ssl_object")
            der = tls.getpeercert(binary_form=True) if tls is not None else None
            got = sha1_fingerprint(der) if der else "(none)"
            if got != peer.fingerprint:
                raise LinkRefused(f"certificate fingerprint {got} is not the member's "
                                  f"{peer.fingerprint}")
            challenge = await _recv(reader, AUTH_TIMEOUT)
            await _send(writer, {"type": "hello", "name": cluster.name,
                                 "mac": mac(cluster.secret, str(challenge["nonce"]),
                                            cluster.name)})
            answer = await _recv(reader, AUTH_TIMEOUT)
            if answer.get("type") != "welcome":
                raise LinkRefused(f"refused: {answer.get('reason', 'no reason given')}")
            if self._problems.pop(peer.name, None) is not None:
                log.info("cluster: link to %s is up", peer.name)
            known: Summary | None = None
            while not self._closing:
                wake.clear()
                mine = self.summary()
                full = known is None or mine.ahead_of(known)
                await _send(writer, self.message(full=full))
                reply = await _recv(reader, AUTH_TIMEOUT * 2)
                await self.absorb(reply, peer.name)
                known = Summary.of(reply)
                now = self.summary()
                if now != mine and now.ahead_of(known):
                    continue  # changed during the exchange: send again at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), KEEPALIVE)
        finally:
            writer.close()

    def status(self) -> dict[str, Any]:
        return {name: {"connected": name not in self._problems,
                       "problem": self._problems.get(name)} for name in self._links}

    @property
    def listening(self) -> bool:
        return self._server is not None
