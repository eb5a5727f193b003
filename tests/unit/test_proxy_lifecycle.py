"""A client connection's lifecycle decisions, without sockets (http1's sans-IO functions).

The transport (http_transport.HttpClient) holds the state and moves bytes; what
it does with each request event, a passed deadline, a dead node connection, a
101 and the end of an answer is decided by these functions.
"""

from __future__ import annotations

import pytest

from lockgate.runtime.proxy.http1 import (
    B_502,
    B_ABORT,
    B_RESEND,
    BODY,
    CLOSED,
    CONNECTING,
    END,
    ERROR,
    HEAD,
    IDLE,
    P_DROP,
    P_FAIL,
    P_FORWARD,
    P_FORWARD_END,
    P_HOLD,
    P_START,
    RAW,
    SENDING,
    T_ACTIVE,
    T_IDLE,
    T_REQUEST,
    TUNNEL,
    WAITING,
    after_answer,
    deadline_status,
    may_resend,
    node_broke,
    node_reusable,
    pump_action,
    switch_allowed,
)


@pytest.mark.parametrize(("state", "kind", "action"), [
    (IDLE, HEAD, P_START),
    (IDLE, ERROR, P_FAIL),  # 400/431 for the next request: answered at once
    (IDLE, BODY, P_DROP),
    (CONNECTING, BODY, P_FORWARD),  # buffered until the node connection is up
    (SENDING, BODY, P_FORWARD),
    (SENDING, END, P_FORWARD_END),
    (CONNECTING, HEAD, P_HOLD),  # pipelined: one request at a time
    (SENDING, HEAD, P_HOLD),
    (WAITING, HEAD, P_HOLD),
    (WAITING, ERROR, P_HOLD),  # a bad next request waits for the answer before it
    (SENDING, ERROR, P_FAIL),  # a bad body: the request is cut, the client told
    (TUNNEL, RAW, P_FORWARD),
    (CLOSED, HEAD, P_HOLD),
])
def test_what_each_request_event_does_in_each_state(state: int, kind: int, action: int) -> None:
    assert pump_action(state, kind) == action


def test_a_pipelined_exchange_walks_the_states_in_order() -> None:
    """GET, then a pipelined POST with a body: the second waits for the first's answer."""
    events = [HEAD, END, HEAD, BODY, END]
    state, done, log = IDLE, list[str](), list[tuple[int, int, int]]()
    queue = list(events)
    while queue:
        action = pump_action(state, queue[0])
        log.append((state, queue[0], action))
        if action == P_HOLD:
            assert state == WAITING  # the node answers, then the connection is idle again
            state = after_answer(True, False, False, False, True)
            continue
        queue.pop(0)
        if action == P_START:
            state = SENDING
        elif action == P_FORWARD_END:
            state, done = WAITING, [*done, "request"]
    assert done == ["request", "request"] and state == WAITING
    assert (WAITING, HEAD, P_HOLD) in log


@pytest.mark.parametrize(("timer", "state", "in_head", "started", "status"), [
    (T_REQUEST, IDLE, True, False, 408),  # a head still arriving
    (T_REQUEST, IDLE, False, False, 0),  # nothing said at all: just closed
    (T_IDLE, IDLE, False, False, 0),  # kept alive, no next request
    (T_ACTIVE, WAITING, False, False, 504),  # the node owes its answer
    (T_ACTIVE, WAITING, False, True, 0),  # an answer half sent: no second status line
    (T_ACTIVE, SENDING, False, False, 0),  # the client stopped sending its body
    (T_ACTIVE, TUNNEL, False, True, 0),
])
def test_what_a_passed_deadline_answers(timer: int, state: int, in_head: bool, started: bool,
                                        status: int) -> None:
    assert deadline_status(timer, state, in_head, started) == status


@pytest.mark.parametrize(("method", "has_body", "reused", "received", "resent", "again"), [
    (b"GET", False, True, False, False, True),
    (b"HEAD", False, True, False, False, True),
    (b"DELETE", False, True, False, False, True),
    (b"POST", False, True, False, False, False),  # non-idempotent: never sent twice
    (b"PATCH", False, True, False, False, False),
    (b"GET", True, True, False, False, False),  # the body is not kept
    (b"GET", False, False, False, False, False),  # a fresh connection failed: the node's fault
    (b"GET", False, True, True, False, False),  # the node said something: it saw the request
    (b"GET", False, True, False, True, False),  # only once
])
def test_which_requests_are_sent_again_after_a_kept_alive_connection_died(
        method: bytes, has_body: bool, reused: bool, received: bool, resent: bool,
        again: bool) -> None:
    assert may_resend(method, has_body, reused, received, resent) is again


@pytest.mark.parametrize(("started", "resend", "outcome"), [
    (False, True, B_RESEND),
    (False, False, B_502),
    (True, False, B_ABORT),  # part of the answer is out: a reset, not a 502 after it
])
def test_what_a_dead_node_connection_leads_to(started: bool, resend: bool, outcome: int) -> None:
    assert node_broke(started, resend) == outcome


def test_a_tunnel_opens_only_after_the_whole_request() -> None:
    assert switch_allowed(True) and not switch_allowed(False)


@pytest.mark.parametrize(("reusable", "done", "upgrading", "stopping", "pooled"), [
    (True, True, False, False, True),
    (False, True, False, False, False),  # the node said close, or its body ran to the close
    (True, False, False, False, False),  # answered before the request body was all sent
    (True, True, True, False, False),  # a refused Upgrade: the node may still want to switch
    (True, True, False, True, False),  # stopping
])
def test_when_a_node_connection_goes_back_to_the_pool(reusable: bool, done: bool, upgrading: bool,
                                                      stopping: bool, pooled: bool) -> None:
    assert node_reusable(reusable, done, upgrading, stopping) is pooled


@pytest.mark.parametrize(("keep_alive", "stopping", "upgrading", "eof", "queued", "state"), [
    (True, False, False, False, False, IDLE),
    (False, False, False, False, False, CLOSED),
    (True, True, False, False, False, CLOSED),
    (True, False, True, False, True, CLOSED),  # what followed a refused Upgrade is dropped
    (True, False, False, True, False, CLOSED),  # half-closed and nothing left to answer
    (True, False, False, True, True, IDLE),  # half-closed with pipelined requests to answer
])
def test_what_the_client_connection_does_after_an_answer(keep_alive: bool, stopping: bool,
                                                         upgrading: bool, eof: bool, queued: bool,
                                                         state: int) -> None:
    assert after_answer(keep_alive, stopping, upgrading, eof, queued) == state
