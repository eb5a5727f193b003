"""What a virtual server may listen on, and how fast a crashing worker is restarted."""

from __future__ import annotations

from pathlib import Path

from lockgate.runtime.listen import (
    MANAGEMENT_PORTS,
    address_is_local,
    ip_literal,
    load_reserved_ports,
    reserved_ports,
    save_reserved_ports,
    traffic_ips,
)
from lockgate.runtime.workers import MAX_RESTART_DELAY, Supervisor


def test_local_addresses_are_asked_of_the_kernel() -> None:
    for address in ("0.0.0.0", "::", "127.0.0.1", "127.0.0.2", "::1"):
        assert address_is_local(address), address
    for address in ("192.0.2.1", "2001:db8::1"):
        assert not address_is_local(address), address


def test_ip_literals_are_normalised_and_names_are_not_addresses() -> None:
    assert ip_literal("2001:DB8:0::1") == "2001:db8::1"
    assert ip_literal("localhost") is None
    assert traffic_ips([["10.0.0.1"], ["2001:DB8::5"]]) == {"10.0.0.1", "2001:db8::5"}


def test_reserved_ports_always_include_the_management_ports(tmp_path: Path) -> None:
    assert load_reserved_ports(tmp_path) == MANAGEMENT_PORTS  # no serve ran here
    assert reserved_ports(0, 9070) == MANAGEMENT_PORTS  # 0: any free port, reserves nothing
    save_reserved_ports(tmp_path, reserved_ports(18443, 0))
    assert load_reserved_ports(tmp_path) == (9070, 9080, 9090, 18443)


def test_a_worker_that_keeps_crashing_is_restarted_ever_more_slowly(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, 1)
    delays = [supervisor._restart_delay(0, quick=True) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, MAX_RESTART_DELAY, MAX_RESTART_DELAY, MAX_RESTART_DELAY]
    assert supervisor._restart_delay(0, quick=False) == 0  # it had run a while: at once
    assert supervisor._restart_delay(0, quick=True) == 1
