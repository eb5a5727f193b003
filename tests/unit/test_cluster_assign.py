"""Traffic-IP assignment: exactly one eligible holder per IP, stability, passive members,
keeptogether, autofailback (property tests over random clusters)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.runtime.cluster.assign import GroupSpec, assign, mine

NAMES = [f"tm{i}" for i in range(6)]


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[GroupSpec], dict[str, frozenset[str]]]:
    groups = []
    used: set[str] = set()
    for g in range(draw(st.integers(1, 3))):
        actives = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
        passive = draw(st.lists(st.sampled_from([n for n in NAMES if n not in actives]),
                                max_size=2, unique=True))
        ips = draw(st.lists(st.integers(1, 250).map(lambda i: f"10.9.0.{i}"), min_size=1,
                            max_size=6, unique=True))
        ips = [ip for ip in ips if ip not in used]  # an IP belongs to one group
        used.update(ips)
        groups.append(GroupSpec(f"g{g}", tuple(ips), tuple(actives), tuple(passive),
                                keeptogether=draw(st.booleans())))
    live = draw(st.lists(st.sampled_from(NAMES), unique=True))
    serving = {m: frozenset(g.name for g in groups) for m in live}
    return groups, serving


def holder_map(assignment: dict[str, str]) -> dict[str, frozenset[str]]:
    return {ip: frozenset({m}) for ip, m in assignment.items()}


@settings(max_examples=150, deadline=None)
@given(clusters(), st.booleans())
def test_every_ip_has_one_live_eligible_holder(case: tuple[list[GroupSpec], dict[str, frozenset[str]]],
                                               autofailback: bool) -> None:
    groups, serving = case
    result = assign(groups, serving, autofailback=autofailback)
    for group in groups:
        live_active = [m for m in group.machines if m in serving]
        live_passive = [m for m in group.passive if m in serving]
        for ip in group.ips:
            if not live_active and not live_passive:
                assert ip not in result
                continue
            holder = result[ip]  # a dict: one holder at most, by construction
            assert holder in serving
            if live_active:
                assert holder in group.machines  # passive only when every active is down
            else:
                assert holder in group.passive
        if group.keeptogether and group.ips and live_active + live_passive:
            assert len({result[ip] for ip in group.ips}) == 1


@settings(max_examples=150, deadline=None)
@given(clusters(), st.booleans(), st.data())
def test_an_unrelated_death_moves_nothing(case: tuple[list[GroupSpec], dict[str, frozenset[str]]],
                                          autofailback: bool, data: st.DataObject) -> None:
    groups, serving = case
    if not serving:
        return
    before = assign(groups, serving, autofailback=autofailback)
    dead = data.draw(st.sampled_from(sorted(serving)))
    rest = {m: g for m, g in serving.items() if m != dead}
    after = assign(groups, rest, holder_map(before), autofailback=autofailback)
    passive_in_play = any(m in g.passive for g in groups for m in serving)
    for ip, member in before.items():
        if member != dead and not passive_in_play:
            assert after[ip] == member, (ip, member, after.get(ip))
        if member == dead:
            assert after.get(ip) != dead


def test_spread_evenly_and_same_answer_everywhere() -> None:
    group = GroupSpec("web", tuple(f"10.0.0.{i}" for i in range(1, 7)), ("a", "b", "c"))
    serving = {m: frozenset({"web"}) for m in "abc"}
    result = assign([group], serving)
    assert sorted(len(mine(result, m)) for m in "abc") == [2, 2, 2]
    # Order of inputs does not matter: every member computes the same thing.
    assert assign([group], dict(reversed(serving.items()))) == result


def test_autofailback_off_recovered_member_waits_on_it_takes_back() -> None:
    group = GroupSpec("web", ("10.0.0.1", "10.0.0.2"), ("a", "b"))
    everyone = {m: frozenset({"web"}) for m in "ab"}
    start = assign([group], everyone)
    home_of_a = mine(start, "a")
    assert home_of_a
    without_a = assign([group], {"b": frozenset({"web"})}, holder_map(start))
    assert set(without_a.values()) == {"b"}
    back = assign([group], everyone, holder_map(without_a), autofailback=False)
    assert set(back.values()) == {"b"}
    back_on = assign([group], everyone, holder_map(without_a), autofailback=True)
    assert back_on == start


def test_passive_only_when_all_actives_down_and_gives_back() -> None:
    group = GroupSpec("web", ("10.0.0.1",), ("a", "b"), passive=("p",))
    web = frozenset({"web"})
    assert assign([group], {"a": web, "p": web})["10.0.0.1"] == "a"
    on_passive = assign([group], {"p": web})
    assert on_passive == {"10.0.0.1": "p"}
    # An active member back: the passive gives the IP up even without autofailback.
    assert assign([group], {"b": web, "p": web}, holder_map(on_passive))["10.0.0.1"] == "b"


def test_unhealthy_member_gives_up_and_split_brain_resolves_to_one() -> None:
    group = GroupSpec("web", ("10.0.0.1",), ("a", "b"))
    home = assign([group], {m: frozenset({"web"}) for m in "ab"})["10.0.0.1"]
    other = "b" if home == "a" else "a"
    # The home's pools are all dead: it still beats but serves no group.
    sick = {home: frozenset[str](), other: frozenset({"web"})}
    assert assign([group], sick)["10.0.0.1"] == other
    # After a partition both hold it: one answer, the same for both.
    both = {"10.0.0.1": frozenset({"a", "b"})}
    healthy = {m: frozenset({"web"}) for m in "ab"}
    assert assign([group], healthy, both)["10.0.0.1"] == home


def test_disabled_group_and_keeptogether() -> None:
    off = GroupSpec("off", ("10.0.1.1",), ("a",), enabled=False)
    together = GroupSpec("t", ("10.0.2.1", "10.0.2.2", "10.0.2.3"), ("a", "b"), keeptogether=True)
    serving = {m: frozenset({"off", "t"}) for m in "ab"}
    result = assign([off, together], serving)
    assert "10.0.1.1" not in result
    assert len({result[ip] for ip in together.ips}) == 1


def test_configuration_fields_reach_the_assignment() -> None:
    import pytest

    from lockgate.runtime.cluster.tipgroups import groups_of
    from lockgate.runtime.config.model import FaultTolerance, normalise_tree, parse_config
    from lockgate.runtime.config.schema import ConfigError

    tree = normalise_tree({"traffic_ip_groups": {"web": {"properties": {"basic": {
        "ipaddresses": ["10.0.0.1", "10.0.0.2"], "machines": ["a", "b"],
        "passive_machines": ["p"], "keeptogether": True}}}},
        "settings": {"monitor_interval": 200, "autofailback": True}})
    config = parse_config(tree, 1)
    assert groups_of(config) == [GroupSpec("web", ("10.0.0.1", "10.0.0.2"), ("a", "b"), ("p",),
                                           keeptogether=True)]
    assert config.fault_tolerance == FaultTolerance(monitor_interval=0.2, autofailback=True)
    assert parse_config(normalise_tree({}), 1).fault_tolerance == FaultTolerance()
    for bad in ({"monitor_interval": 10}, {"autofailback": "yes"}, {"monitor_timeout": -1}):
        with pytest.raises(ConfigError):
            normalise_tree({"settings": bad})
    with pytest.raises(ConfigError):
        normalise_tree({"traffic_ip_groups": {"w": {"properties": {"basic": {
            "passive_machines": ["not a host!"]}}}}})
