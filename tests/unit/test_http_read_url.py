"""lockgate.http.read_url against real loopback servers that misbehave on purpose."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from lockgate.http import DEFAULT_RETRY_ON, UrlError, read_url
from lockgate.image.cloudemu import Ec2Imds, Faults

pytestmark = pytest.mark.timeout(30)

IID = "/latest/meta-data/instance-id"


@pytest.fixture
def imds() -> Iterator[Ec2Imds]:
    with Ec2Imds(instance_id="i-0feedface", user_data=b"password=x") as emu:
        yield emu


def dead_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_plain_get_returns_body_status_headers(imds: Ec2Imds) -> None:
    resp = read_url(imds.url + IID)
    assert (resp.status, resp.body, resp.ok) == (200, b"i-0feedface", True)
    assert resp.headers["content-type"] == "text/plain"
    assert resp.url == imds.url + IID


def test_503_burst_is_retried_until_success(imds: Ec2Imds) -> None:
    imds.set_faults(fail_first=3)
    resp = read_url(imds.url + IID, backoff=0.01, deadline=10)
    assert resp.body == b"i-0feedface"
    assert [r.status for r in imds.requests] == [503, 503, 503, 200]


def test_retries_bound_the_number_of_tries(imds: Ec2Imds) -> None:
    imds.set_faults(fail_first=10)
    with pytest.raises(UrlError) as err:
        read_url(imds.url + IID, backoff=0.01, retries=3, deadline=10)
    assert err.value.tries == 3
    assert err.value.status == 503
    assert "gave up after 3 tries" in str(err.value)
    assert "out of tries" in str(err.value)
    assert "HTTP 503" in str(err.value)
    assert len(imds.requests) == 3


def test_4xx_is_returned_not_retried(imds: Ec2Imds) -> None:
    resp = read_url(imds.url + "/latest/meta-data/no-such-thing", backoff=0.01)
    assert resp.status == 404
    assert not resp.ok
    assert len(imds.requests) == 1


def test_slow_reply_beyond_per_try_timeout_then_success_within_deadline(imds: Ec2Imds) -> None:
    imds.set_faults(delay=2.0, delay_first=2)
    began = time.monotonic()
    resp = read_url(imds.url + IID, timeout=0.3, deadline=10, backoff=0.05)
    took = time.monotonic() - began
    assert resp.body == b"i-0feedface"
    assert len(imds.requests) >= 1
    # two timed-out tries (0.3 s each) plus backoff, nowhere near the 2 s delays
    assert took < 1.8, took


def test_deadline_exceeded_gives_clear_error_in_bounded_time(imds: Ec2Imds) -> None:
    imds.set_faults(delay=5.0)
    began = time.monotonic()
    with pytest.raises(UrlError) as err:
        read_url(imds.url + IID, timeout=0.4, deadline=1.5, backoff=0.05)
    took = time.monotonic() - began
    assert 1.0 <= took < 2.5, took
    message = str(err.value)
    assert message.startswith(f"GET {imds.url}{IID}: gave up after ")
    assert "deadline of 1.5 s passed" in message
    assert "last problem: timed out" in message
    assert "\n" not in message
    assert err.value.tries >= 2


def test_connection_refused_is_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{dead_port()}/x"
    began = time.monotonic()
    with pytest.raises(UrlError) as err:
        read_url(url, deadline=0.8, backoff=0.05, backoff_cap=0.1)
    assert time.monotonic() - began < 1.5
    assert err.value.tries >= 3
    assert "connection refused" in str(err.value)


def test_dropped_connections_are_retried(imds: Ec2Imds) -> None:
    imds.set_faults(drop_first=2)
    resp = read_url(imds.url + IID, backoff=0.01, deadline=10)
    assert resp.body == b"i-0feedface"
    assert [r.status for r in imds.requests] == [None, None, 200]


def test_retry_on_can_exclude_5xx(imds: Ec2Imds) -> None:
    imds.set_faults(fail_first=1)
    only_network = [r for r in DEFAULT_RETRY_ON if not isinstance(r, int)]
    resp = read_url(imds.url + IID, retry_on=only_network)
    assert resp.status == 503
    assert len(imds.requests) == 1


def test_put_with_headers_and_body_reaches_the_server(imds: Ec2Imds) -> None:
    resp = read_url(imds.url + "/latest/api/token", method="PUT",
                    headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}, data=b"")
    assert resp.status == 200 and len(resp.body) > 20
    assert resp.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "60"


def test_oversized_reply_is_refused(imds: Ec2Imds) -> None:
    imds.user_data = b"x" * 5000
    with pytest.raises(UrlError, match="larger than 1000 bytes"):
        read_url(imds.url + "/latest/user-data", max_bytes=1000)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        emu = Ec2Imds(host="::1", instance_id="i-v6").start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        assert read_url(emu.url + IID).body == b"i-v6"
    finally:
        emu.stop()


def test_bad_urls_are_rejected_before_any_network() -> None:
    with pytest.raises(ValueError, match="not an http"):
        read_url("ftp://example.invalid/x")
    with pytest.raises(ValueError, match="retries"):
        read_url("http://127.0.0.1:1/", retries=0)


def test_faults_object_can_be_given_at_construction() -> None:
    with Ec2Imds(faults=Faults(fail_first=1, fail_status=500), instance_id="i-1") as emu:
        assert read_url(emu.url + IID, backoff=0.01).body == b"i-1"
        assert [r.status for r in emu.requests] == [500, 200]


def test_a_trickling_body_is_held_to_the_per_try_timeout() -> None:
    """Headers arrive at once, then one byte every 0.1 s: each recv is quick, the reply is not."""
    import threading

    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so the accept loop notices ``stop`` promptly

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(1000):
                    if stop.wait(0.1):
                        return
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break

    server = threading.Thread(target=serve)
    server.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
        began = time.monotonic()
        with pytest.raises(UrlError, match="last problem: timed out"):
            read_url(url, timeout=0.5, deadline=5, retries=2, backoff=0.05)
        assert time.monotonic() - began < 1.6
    finally:
        stop.set()
        listener.close()
        server.join(5)
