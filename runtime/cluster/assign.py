"""Which member raises which traffic IP: a pure function every member computes alike.

No negotiation: every member feeds the same inputs (the groups from the replicated
configuration, the live members and what each can serve from the heartbeats, and
who holds what, also from the heartbeats) into :func:`assign` and gets the same
answer, so at most one member raises each IP once the heartbeats agree.

The rules, for each enabled group:

* eligible members are the live members that say they can serve the group;
  passive members are eligible only while no active member is;
* every IP has a *home*: the IPs are spread over the group's active members as
  evenly as possible (IPs in sorted order, each to the active member with the fewest
  so far, ties broken by rendezvous hash). The home depends on the configuration
  only, never on who is alive, so one member dying never moves another's IPs;
* an IP whose home is eligible stays home when ``autofailback`` is on; with it off
  (the reference product's default) an eligible current holder keeps the IP and a
  recovered home waits to be given it back;
* any other IP goes to the eligible member with the highest rendezvous score for it
  (stable: an IP moves only when its holder goes away);
* ``keeptogether``: the whole group moves as one IP would, keyed by the group name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GroupSpec:
    name: str
    ips: tuple[str, ...]
    machines: tuple[str, ...]  # active members
    passive: tuple[str, ...] = ()  # take the IPs only when no active member can
    keeptogether: bool = False
    enabled: bool = True


def score(key: str, member: str) -> bytes:
    """Rendezvous (highest random weight) score of ``member`` for ``key``."""
    return hashlib.sha256(f"{key}\0{member}".encode()).digest()


def best(key: str, members: Iterable[str]) -> str:
    return max(members, key=lambda m: (score(key, m), m))


def homes(group: GroupSpec) -> dict[str, str]:
    """key -> home member; keys are the IPs (or the group name with keeptogether)."""
    actives = sorted(set(group.machines))
    if not actives:
        return {}
    keys = [group.name] if group.keeptogether else sorted(set(group.ips))
    count = dict.fromkeys(actives, 0)
    out: dict[str, str] = {}
    for key in keys:
        fewest = min(count.values())
        home = best(key, (m for m in actives if count[m] == fewest))
        count[home] += 1
        out[key] = home
    return out


def eligible(group: GroupSpec, serving: Mapping[str, frozenset[str]]) -> frozenset[str]:
    def can(m: str) -> bool:
        return group.name in serving.get(m, frozenset())

    active = frozenset(m for m in group.machines if can(m))
    if active:
        return active
    return frozenset(m for m in group.passive if can(m) and m not in group.machines)


def assign(groups: Iterable[GroupSpec], serving: Mapping[str, frozenset[str]],
           holders: Mapping[str, frozenset[str]] | None = None,
           autofailback: bool = False) -> dict[str, str]:
    """IP -> the member that raises it; IPs nobody can hold are left out.

    ``serving``: live member -> names of the groups it can serve (its pools have live
    nodes, its workers answer). ``holders``: IP -> the live members that say they
    hold it now (more than one after a partition heals)."""
    holders = holders or {}
    out: dict[str, str] = {}
    for group in sorted(groups, key=lambda g: g.name):
        if not group.enabled or not group.ips:
            continue
        ok = eligible(group, serving)
        if not ok:
            continue
        home = homes(group)
        keys = [group.name] if group.keeptogether else sorted(set(group.ips))
        for key in keys:
            ips = sorted(set(group.ips)) if group.keeptogether else [key]
            owner = _owner(key, ips, home.get(key), ok, holders, autofailback)
            for ip in ips:
                out[ip] = owner
    return out


def _owner(key: str, ips: list[str], home: str | None, ok: frozenset[str],
           holders: Mapping[str, frozenset[str]], autofailback: bool) -> str:
    if home in ok and autofailback:
        return home
    if not autofailback:
        # Members holding (any of) the IPs now, that may go on holding them.
        held = frozenset().union(*(holders.get(ip, frozenset()) for ip in ips)) & ok
        if held:
            # Two holders only after a partition healed: the home wins, else the best score.
            return home if home in held else best(key, held)
    if home in ok:
        return home
    return best(key, ok)


def mine(assignment: Mapping[str, str], me: str) -> frozenset[str]:
    return frozenset(ip for ip, member in assignment.items() if member == me)
