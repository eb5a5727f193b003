"""The traffic-IP guard: a small process that outlives a runtime killed with SIGKILL.

``serve`` starts it with a pipe on its stdin and tells it, line by line, which traffic
IPs are raised here. When the pipe reaches end-of-file without a goodbye (the runtime
crashed or was killed: the kernel closes the pipe either way) the guard, at once,

1. sends a signed ``leaving`` heartbeat to every peer, so they take the IPs over now
   instead of after ``monitor_timeout`` of silence, and
2. drops the IPs from this host (keepalived leaves its VIP on a node whose daemon was
   SIGKILLed; we don't),

then exits. It runs in its own session so a signal to the runtime's process group
spares it. Lines (the first carries the secret, so it never appears in argv)::

    {"secret": "<hex>", "name": "tm1", "epoch": 3, "peers": [["10.0.0.2", 9090]], "mover": "local"}
    hold 10.0.0.100
    drop 10.0.0.100
    peers [["10.0.0.2", 9090], ...] 4
    bye
"""

from __future__ import annotations

import json
import logging
import sys

log = logging.getLogger("lockgate.runtime.cluster.guard")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="lockgate-ft-guard: %(message)s")
    # Imported now, not when the runtime dies: every millisecond then is failover time.
    from lockgate.runtime.cluster.heartbeat import send_leaving
    from lockgate.runtime.cluster.movers import MoverError, choose

    first = sys.stdin.readline()
    if not first:
        return 0
    setup = json.loads(first)
    secret = bytes.fromhex(setup["secret"])
    name, epoch = str(setup["name"]), int(setup["epoch"])
    peers = [(str(h), int(p)) for h, p in setup["peers"]]
    held: set[str] = set()
    for line in sys.stdin:
        word, _, rest = line.strip().partition(" ")
        if word == "hold":
            held.add(rest)
        elif word == "drop":
            held.discard(rest)
        elif word == "peers":
            data, _, new_epoch = rest.rpartition(" ")
            peers = [(str(h), int(p)) for h, p in json.loads(data)]
            epoch = int(new_epoch)
        elif word == "bye":
            return 0
    # End of file without "bye": the runtime is gone.
    send_leaving(secret, name, epoch, peers)
    if held:
        mover = choose(setup.get("mover"))
        for ip in sorted(held):
            try:
                mover.drop_ip(ip)
            except MoverError as exc:
                log.error("%s", exc)
        log.warning("runtime gone: told %d peers, dropped traffic IPs %s", len(peers),
                    " ".join(sorted(held)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
