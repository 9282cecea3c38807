"""Each routing strategy, retries, fallbacks, cooldown and half-open recovery, against
expectations written independently of the twins (both twins: the `impl` fixture)."""

from __future__ import annotations

import json

import pytest

from gateway import twins
from gateway.router import router_config

MS = 1_000_000
IMPLS = [i for i in twins.IMPLS if i == "python" or twins.native_available()]


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


def make(impl, deps, **section):
    groups = {"a": deps} if isinstance(deps, list) else deps
    return twins.load("router", impl)(router_config(section, groups))


def splitmix(seed):
    """The reference splitmix64 (Steele, Lea, Flood 2014), written out again here."""
    m = (1 << 64) - 1
    while True:
        seed = (seed + 0x9E3779B97F4A7C15) & m
        z = seed
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        yield z ^ (z >> 31)


def send(r, now, group="a", tokens=1):
    att = r.begin(group, tokens, now)
    return att, r.next(att, now)


def test_simple_shuffle_draws_by_weight(impl):
    r = make(impl, [{"weight": 1}, {"weight": 3}], seed=7)
    picks = []
    for t in range(1, 201):
        att, s = send(r, t)
        picks.append(s[2])
        r.report(att, "ok", 10, t)
    draws = splitmix(7)
    assert picks == [0 if next(draws) % 4 < 1 else 1 for _ in range(200)]
    assert 30 <= picks.count(0) <= 70  # a quarter of 200, loosely


def test_least_busy_goes_where_fewest_are_in_flight(impl):
    r = make(impl, [{}, {}, {}], strategy="least-busy")
    held = [send(r, 1) for _ in range(3)]
    assert sorted(s[2] for _, s in held) == [0, 1, 2]  # one each: a busy one is never picked twice
    r.report(held[0][0], "ok", 5, 2)  # frees held[0]'s deployment
    _, s = send(r, 3)
    assert s[2] == held[0][1][2]


def test_latency_based_prefers_the_lowest_moving_mean(impl):
    r = make(impl, [{}, {}], strategy="latency-based", latency_window=2)
    # no samples yet count as a mean of 0: both get explored first; then the faster wins
    first = []
    for t in (10, 11):
        att, s = send(r, t)
        first.append(s[2])
        r.report(att, "ok", (500, 100)[s[2]], t)
    assert sorted(first) == [0, 1]
    for t in (12, 13):
        att, s = send(r, t)
        assert s == ("send", "a", 1)
        r.report(att, "ok", 100, t)
    # deployment 1 turns slow: one slow answer in a window of 2 moves its mean past 0's
    att, s = send(r, 14)
    r.report(att, "ok", 2000, 14)  # window [100, 2000]: mean 1050 > 500
    _, s = send(r, 15)
    assert s == ("send", "a", 0)


def test_usage_based_and_rate_limits(impl):
    r = make(impl, [{"tpm": 100}, {"tpm": 300, "rpm": 2}], strategy="usage-based")
    att, s = send(r, 1, tokens=50)
    assert s[2] == 1  # 300 left beats 100 left
    r.report(att, "ok", 1, 1)
    att, s = send(r, 2, tokens=50)
    assert s[2] == 1  # 250 beats 100
    r.report(att, "ok", 1, 2)
    att, s = send(r, 3, tokens=50)
    assert s[2] == 0  # deployment 1 used its 2 requests this minute
    r.report(att, "ok", 1, 3)
    _, s = send(r, 4, tokens=60)
    assert s == ("give_up", "no_deployment")  # 0 has 50 tokens left, 1 no requests
    _, s = send(r, 60_000 * MS + 3, tokens=60)
    assert s == ("send", "a", 1)  # a minute on, both windows are empty again


def test_retries_back_off_with_jitter_then_fall_back(impl):
    r = make(
        impl,
        {"a": [{}, {}], "b": [{}]},
        num_retries=2,
        backoff_base_ms=10,
        backoff_max_ms=15,
        seed=3,
        allowed_fails=100,
        fallbacks=[{"a": ["b"]}],
    )
    now = 1
    att, s = send(r, now)
    seen = [s]
    draws = splitmix(3)
    next(draws)  # the first pick's draw (two candidates)
    for cap in (10_000, 15_000):  # us: min(10ms * 2^k, 15ms)
        r.report(att, "fail", 10, now)
        w = r.next(att, now)
        assert w == ("wait", (cap // 2 + next(draws) % (cap - cap // 2 + 1)) * 1000)
        now += w[1]
        s = r.next(att, now)
        seen.append(s)
    assert [x[1:] for x in seen[:2]] in (
        [("a", 0), ("a", 1)],
        [("a", 1), ("a", 0)],
    )  # the retry avoids the failed one
    r.report(att, "fail", 10, now)
    assert r.next(att, now) == ("send", "b", 0)  # retries spent: the fallback, without a wait
    r.report(att, "fail", 10, now)
    assert r.next(att, now) == ("give_up", "exhausted")


def test_the_budget_stops_retries(impl):
    r = make(
        impl,
        [{}],
        num_retries=5,
        backoff_base_ms=100,
        backoff_max_ms=100,
        retry_budget_ms=120,
        allowed_fails=100,
    )
    att, _ = send(r, 1)
    r.report(att, "fail", 1, 1)
    assert r.next(att, 1)[0] == "wait"  # 50..100 ms < 120 ms
    s = r.next(att, 1 + 100 * MS)
    assert s[0] == "send"
    r.report(att, "fail", 1, 1 + 100 * MS)
    assert r.next(att, 1 + 100 * MS) == ("give_up", "exhausted")  # another wait would end past the budget


def test_cooldown_and_half_open_recovery(impl):
    r = make(
        impl,
        [{}, {}],
        allowed_fails=2,
        fail_window_ms=1000,
        cooldown_ms=500,
        num_retries=0,
        strategy="least-busy",
    )
    now = 10 * MS
    # deployment 0 fails twice within the window; 1 answers
    fails = 0
    while fails < 2:
        att, s = send(r, now)
        out = "fail" if s[2] == 0 else "ok"
        fails += out == "fail"
        r.report(att, out, 5, now)
        now += MS
    assert r.state("a", 0, now) == "cooldown"
    for _ in range(5):  # everything goes to 1 while 0 cools down
        att, s = send(r, now)
        assert s[2] == 1
        r.report(att, "ok", 5, now)
    cooled = now - MS + 500 * MS
    assert r.state("a", 0, cooled - 1) == "cooldown"
    assert r.state("a", 0, cooled) == "half_open"
    # one probe: hold 1 busy so least-busy would pick 0 again anyway, and the probe fails
    busy, s1 = send(r, cooled)
    probe, s = send(r, cooled)
    assert (s1[2], s[2]) in ((0, 1), (1, 0))
    p = probe if s[2] == 0 else busy
    other = busy if p is probe else probe
    assert r.report(p, "fail", 5, cooled) == "cooldown"  # a failed probe cools it down again
    r.report(other, "ok", 5, cooled)
    again = cooled + 500 * MS
    att, s = send(r, again)
    att2, s2 = send(r, again)  # a half-open deployment takes one probe at a time
    assert sorted([s[2], s2[2]]) == [0, 1]
    probe = att if s[2] == 0 else att2
    assert r.report(probe, "ok", 5, again) == "ok"  # the probe succeeds: closed
    assert r.state("a", 0, again) == "ok"


def test_failures_outside_the_window_do_not_add_up(impl):
    r = make(impl, [{}], allowed_fails=2, fail_window_ms=100, num_retries=0)
    for t in (1, 1 + 200 * MS):
        att, _ = send(r, t)
        assert r.report(att, "fail", 1, t) == "ok"


def test_the_router_is_on_only_with_a_group_or_a_router_section():
    from gateway import config as cfgmod

    key = {"id": "k", "sha256": "0" * 64}
    one = {
        "model_list": [{"model_name": "m", "upstream": {"base_url": "http://h1"}}],
        "keys": [key],
        "ledger": {"dir": "led"},
    }
    assert cfgmod.from_mapping(one, env={}).router is None  # today's path: one model, one upstream
    assert cfgmod.embedded("http://h1", "sk", "led").router is None
    two = {
        **one,
        "model_list": one["model_list"]
        + [{"model_name": "m", "upstream": {"base_url": "http://h2"}, "weight": 3}],
    }
    c = cfgmod.from_mapping(two, env={})
    assert [u.base_url for u in c.groups["m"]] == ["http://h1/v1", "http://h2/v1"]
    assert c.models["m"].base_url == "http://h1/v1"  # /v1/models and passthrough still see one entry
    cfg = json.loads(c.router)
    assert cfg["groups"] == [
        {
            "name": "m",
            "deployments": [{"weight": 1, "rpm": None, "tpm": None}, {"weight": 3, "rpm": None, "tpm": None}],
        }
    ]
    assert cfgmod.from_mapping({**one, "router": {"num_retries": 1}}, env={}).router is not None
