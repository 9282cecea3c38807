"""`gatewaylab bench tools`: wrk output parsing, and one tiny end-to-end run (shape only)."""

from __future__ import annotations

import pytest

from harness.bench import tools

WRK_OUT = """Running 1s test @ http://127.0.0.1:40000/health
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   215.32us   40.11us   2.10ms   91.00%
    Req/Sec    31.90k     1.20k   33.00k    80.00%
  Latency Distribution
     50%  210.00us
     75%  230.00us
     90%  260.00us
     99%    1.05ms
  31900 requests in 1.00s, 4.20MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  31900.12
Transfer/sec:      4.20MB
"""


def test_parse_wrk():
    r = tools.parse_wrk(WRK_OUT)
    assert r == {"rps": 31900.12, "p50_us": 210.0, "p99_us": 1050.0, "errors": 7}


def test_parse_wrk_refuses_garbage():
    with pytest.raises(ValueError):
        tools.parse_wrk("wrk: unable to connect")


def test_tiny_run_has_both_tools_and_ratios():
    r = tools.measure(duration_s=1.0, repeats=1, concurrencies=(4,), routes=("health",), warmup_s=0.1)
    assert r["machine"]["cores"] >= 1
    assert {(x["tool"], x["route"], x["concurrency"]) for x in r["rows"]} == {
        ("ours", "health", 4),
        ("wrk", "health", 4),
    }
    for x in r["rows"]:
        assert x["rps"]["median"] > 0 and x["errors"] == 0
    assert r["ratios"][0]["rps_ours_over_wrk"]["median"] > 0
    assert r["mock_requests_seen"] > 0
    assert "| ours | health | 4 |" in tools.markdown(r)
