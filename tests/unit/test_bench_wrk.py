"""wrk report parsing for the benchmark harness: counts, units, percentiles and errors."""

from __future__ import annotations

import pytest

from lockgate.benchmarks.wrk import WrkOutputError, parse_wrk, seconds, wrk_argv

CLEAN = """\
Running 10s test @ http://127.0.0.1:41234/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   764.21us  156.12us   5.67ms   89.12%
    Req/Sec    65.12k     2.01k   68.00k    78.00%
  Latency Distribution
     50%  740.00us
     75%  812.00us
     90%    0.91ms
     99%    1.23ms
  648123 requests in 10.00s, 150.23MB read
Requests/sec:  64812.30
Transfer/sec:     15.02MB
"""

# Captured from wrk 4.1 against a server answering 404 (only the counts were changed).
WITH_ERRORS = """\
Running 1s test @ http://127.0.0.1:18555/nonexist
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.16ms    4.49ms  34.34ms   93.03%
    Req/Sec     2.13k     0.93k    3.04k    81.82%
  Latency Distribution
     50%  506.00us
     75%    2.02ms
     90%    4.47ms
     99%   25.86ms
  2330 requests in 1.10s, 1.16MB read
  Socket errors: connect 3, read 17, write 2, timeout 40
  Non-2xx or 3xx responses: 2000
Requests/sec:   2121.81
Transfer/sec:      1.05MB
"""


def test_clean_run_counts_latencies_and_no_errors() -> None:
    result = parse_wrk(CLEAN)
    assert (result.requests, result.duration_s, result.rps) == (648123, 10.0, 64812.30)
    assert result.latency_s == pytest.approx({50: 740e-6, 75: 812e-6, 90: 0.91e-3, 99: 1.23e-3})
    assert result.errors == 0 and result.error_share == 0
    assert result.good_requests == 648123
    assert result.describe_errors() == "none"


def test_errors_are_all_counted_and_not_good_requests() -> None:
    result = parse_wrk(WITH_ERRORS)
    assert (result.connect_errors, result.read_errors, result.write_errors,
            result.timeouts) == (3, 17, 2, 40)
    assert result.non_2xx == 2000
    assert result.socket_errors == 62 and result.errors == 2062
    assert result.good_requests == 330
    assert result.duration_s == pytest.approx(1.10)
    # requests + attempts that never completed (connect errors, timeouts)
    assert result.error_share == pytest.approx(2062 / (2330 + 3 + 40))
    assert result.describe_errors() == "2000 non-2xx/3xx, 3 connect, 17 read, 2 write, 40 timeout"


def test_minutes_and_seconds_units() -> None:
    text = CLEAN.replace("     99%    1.23ms", "     99%    1.50s").replace(
        "648123 requests in 10.00s", "648123 requests in 1.00m")
    result = parse_wrk(text)
    assert result.duration_s == 60.0
    assert result.latency_s[99] == 1.5
    assert seconds("2", "h") == 7200


def test_without_latency_table_percentiles_are_missing_not_invented() -> None:
    text = "\n".join(line for line in CLEAN.splitlines()
                     if "%  " not in line or "Latency  " in line)
    assert parse_wrk(text).latency_s == {}


@pytest.mark.parametrize("text", [
    "unable to connect to 127.0.0.1:1 Connection refused\n",
    CLEAN.replace("Requests/sec:  64812.30\n", ""),
    "",
])
def test_truncated_or_failed_output_is_refused(text: str) -> None:
    with pytest.raises(WrkOutputError, match="wrk printed no request count"):
        parse_wrk(text)


def test_argv_pins_with_taskset_only_when_asked() -> None:
    assert wrk_argv("http://127.0.0.1:1/", 10, cpus="1") == [
        "taskset", "-c", "1", "wrk", "-t1", "-c50", "-d10s", "--timeout=2s", "--latency",
        "http://127.0.0.1:1/"]
    argv = wrk_argv("http://127.0.0.1:1/", 2.6, connections=7)
    assert argv[0] == "wrk" and "-c7" in argv and "-d3s" in argv
    assert wrk_argv("u", 0.2)[3] == "-d1s"  # wrk takes whole seconds, never 0
