"""The load generator measures what the mock injects: latency, errors, drops, stalls.

Behaviours, not timing budgets: every threshold below follows from what was injected
(a 20 ms delay cannot produce a p50 under 20 ms), never from how fast this machine is.
"""

from __future__ import annotations

import json
import os

import pytest

from gateway import twins
from gateway.errors import InvalidInput
from harness.infra.native_procs import run_load

LOAD_CPUS = [min(os.sched_getaffinity(0))]  # the mock fixtures take the last CPU

CHAT = "/v1/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
KEYS = {
    "mode",
    "concurrency",
    "rate",
    "duration_s",
    "requests",
    "errors",
    "rps",
    "latency_us",
    "series",
    "meta",
}


def load(url, **kw):
    kw.setdefault("cpus", LOAD_CPUS)
    return run_load(url, **kw)


def test_result_shape_closed_loop(mock):
    r = load(mock.url + "/health", concurrency=2, duration_s=0.5)
    assert set(r) == KEYS
    assert r["mode"] == "closed" and r["concurrency"] == 2 and r["rate"] is None
    assert set(r["latency_us"]) == {"p50", "p90", "p95", "p99", "p999", "max"}
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert r["errors"] == {} and r["requests"] == r["meta"]["ok"] > 0
    assert r["rps"] == pytest.approx(r["requests"] / r["duration_s"])
    assert sum(p["requests"] for p in r["series"]) == r["requests"]


def test_injected_latency_shows_in_percentiles(mock):
    r = load(mock.url + CHAT, concurrency=2, duration_s=1.0, body=BODY, headers={"x-mock-latency-ms": 20})
    assert r["requests"] > 0 and not r["errors"]
    assert r["latency_us"]["p50"] >= 20_000
    # Closed loop at c=2 with 20 ms per request cannot exceed 2 / 0.020 = 100 req/s.
    assert r["rps"] <= 100


def test_streaming_ttfb_and_total(mock):
    r = load(
        mock.url + CHAT,
        rate=50,
        duration_s=1.0,
        stream=True,
        body=dict(BODY, stream=True),
        headers={"x-mock-ttft-ms": 30, "x-mock-itl-ms": 5, "x-mock-tokens": 5},
    )
    assert set(r) == KEYS | {"ttfb_us"}
    assert r["requests"] == 50 and not r["errors"]
    assert r["ttfb_us"]["p50"] >= 30_000
    assert r["latency_us"]["p50"] >= 30_000 + 4 * 5_000
    assert r["ttfb_us"]["p50"] < r["latency_us"]["p50"]


def test_stall_shows_in_open_loop_p99_and_hides_in_closed_loop_p99(make_mock):
    """Coordinated omission, demonstrated: every 300th request freezes the server for 200 ms.

    Closed loop (c=1, a fixed 900 requests): during a freeze only the one request in flight
    waits, so exactly 3 of 900 samples (0.33%, under the 1% above p99) carry a freeze, and
    p99 is an unfrozen request. Open loop: the requests due during the freeze are measured
    from when they were due, so far more than 1% carry it and p99 does. Every bound below
    follows from the injected freeze, none from this machine's speed.
    """
    stall_ms = 200
    closed = load(
        make_mock(stall_every=300, stall_ms=stall_ms).url + "/v1/models", concurrency=1, requests=900
    )
    opened = load(make_mock(stall_every=300, stall_ms=stall_ms).url + "/v1/models", rate=1000, duration_s=1.5)
    assert not closed["errors"] and not opened["errors"]
    assert closed["requests"] == 900
    # The stalls happened in both runs ...
    assert closed["latency_us"]["max"] >= stall_ms * 1000
    assert opened["latency_us"]["max"] >= stall_ms * 1000
    # ... the open loop's p99 carries them (every request due during a freeze waits for its end) ...
    assert opened["latency_us"]["p99"] >= stall_ms * 1000 / 2
    # ... and the closed loop's p99 is one of the 897 requests that no freeze touched: below
    # the open loop's p99, which a freeze did reach
    assert closed["latency_us"]["p99"] < opened["latency_us"]["p99"]


def test_error_rate_counts_as_errors_and_matches_mock(make_mock):
    m = make_mock(seed=3)
    r = load(
        m.url + CHAT,
        concurrency=2,
        requests=400,
        duration_s=30,
        body=BODY,
        headers={"x-mock-error-status": 503, "x-mock-error-rate": 0.25},
    )
    s = m.stats()["by_route"][f"POST {CHAT}"]
    assert r["requests"] == 400
    assert r["errors"] == {"status_5xx": s["503"]}
    assert 40 < s["503"] < 160  # 25% of 400, loosely
    assert r["meta"]["ok"] == s["200"] == 400 - s["503"]


def test_drop_rate_counts_as_reset_errors_and_matches_mock(make_mock):
    m = make_mock(seed=5, drop_rate=0.2)
    r = load(m.url + CHAT, concurrency=2, requests=300, duration_s=30, body=BODY)
    s = m.stats()["by_route"][f"POST {CHAT}"]
    assert r["requests"] == 300
    assert r["errors"] == {"reset": s["drop"]}
    assert 20 < s["drop"] < 100
    assert r["meta"]["ok"] == s["200"] == 300 - s["drop"]


@pytest.mark.parametrize("loop", [{"concurrency": 3}, {"rate": 1000.0}])
def test_mock_stats_count_exactly_what_was_sent(make_mock, loop):
    m = make_mock()
    r = load(m.url + CHAT, requests=250, duration_s=30, warmup_s=0.2, body=BODY, **loop)
    s = m.stats()
    assert r["requests"] == 250 and r["meta"]["ok"] == 250
    assert s["total"] == r["meta"]["sent"] > 250  # warm-up requests are sent, not recorded
    assert s["by_route"] == {f"POST {CHAT}": {"200": r["meta"]["sent"]}}


def test_open_loop_is_paced_at_the_rate(mock):
    r = load(mock.url + "/health", rate=400, duration_s=1.0)
    assert r["mode"] == "open" and r["rate"] == 400 and r["concurrency"] is None
    assert r["requests"] == 400  # exactly rate x duration, uniform arrivals
    assert r["meta"]["co_corrected"] is True


def test_poisson_arrivals_are_seeded(mock):
    a = load(mock.url + "/health", rate=300, duration_s=0.5, arrival="poisson", seed=9)
    b = load(mock.url + "/health", rate=300, duration_s=0.5, arrival="poisson", seed=9)
    assert a["requests"] == b["requests"]
    assert 100 < a["requests"] < 250


def test_connection_refused_counts_connect_errors(make_mock):
    m = make_mock()
    url = m.url
    m.stop()
    r = load(url + "/health", concurrency=1, requests=5, duration_s=5)
    assert r["errors"] == {"connect": 5} and r["rps"] == 0


def test_timeout_counts_timeout_errors(mock):
    r = load(
        mock.url + CHAT,
        concurrency=1,
        requests=2,
        duration_s=5,
        body=BODY,
        timeout_s=0.05,
        headers={"x-mock-latency-ms": 300},
    )
    assert r["errors"] == {"timeout": 2}


def test_status_4xx_counted(mock):
    r = load(mock.url + "/nope", concurrency=1, requests=10, duration_s=5)
    assert r["errors"] == {"status_4xx": 10}


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"url": "http://127.0.0.1:1/", "concurrency": 1}, "bounded"),
        ({"url": "http://127.0.0.1:1/", "concurrency": 1, "rate": 5, "duration_s": 1}, "not both"),
        ({"url": "https://127.0.0.1:1/", "concurrency": 1, "duration_s": 1}, "http://"),
        ({"url": "http://127.0.0.1:1/", "rate": -1, "duration_s": 1}, "rate"),
        ({"url": "http://127.0.0.1:1/", "concurrency": 1, "duration_s": 1, "bogus": 1}, "unknown field"),
    ],
)
def test_bad_config_is_invalid_input(cfg, match):
    with pytest.raises(InvalidInput, match=match):
        twins.native().run_load(json.dumps(cfg))


def test_run_load_requires_a_bound():
    with pytest.raises(InvalidInput):
        run_load("http://127.0.0.1:1/", concurrency=1)


def test_load_cli_text_and_json(mock):
    import subprocess
    import sys

    base = [
        sys.executable,
        "-m",
        "harness.cli",
        "load",
        "--url",
        mock.url + "/health",
        "-c",
        "1",
        "-n",
        "20",
        "--duration",
        "5",
    ]
    text = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "closed c=1" in text.stdout and "requests=20" in text.stdout
    js = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=60)
    assert js.returncode == 0 and json.loads(js.stdout)["requests"] == 20
    bad = subprocess.run(base[:-2] + ["--duration", "-3"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "duration_s" in bad.stderr
