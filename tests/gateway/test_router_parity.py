"""Router twins (gateway/router.py, native/core/src/router.rs): the same config, seed, clock
and outcomes give the same steps, deployment states and in-flight counts, through the binding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import twins
from gateway.router import STRATEGIES, router_config

pytestmark = pytest.mark.skipif(not twins.native_available(), reason="needs the Rust extension (make dev)")
Py = twins.load("router", "python")


def _rs():
    return twins.load("router", "rust")


def drive(router_cls, cfg: str, ops: list, groups: dict) -> list:
    r = router_cls(cfg)
    now = 1_000_000
    open_: list = []
    trace: list = []

    def step_on(att):
        nonlocal now
        while True:
            s = r.next(att, now)
            trace.append(tuple(s))
            if s[0] == "wait":
                now += s[1]
                continue
            if s[0] == "send":
                open_.append(att)
            return

    for kind, arg in ops:
        if kind == "tick":
            now += arg * 1_000_000
        elif kind == "new":
            step_on(r.begin("a", arg, now))
        elif open_:
            att = open_.pop(arg % len(open_))
            trace.append(("state", r.report(att, kind, arg * 100, now)))
            if kind == "fail":
                step_on(att)
    for g, n in groups.items():
        trace.append(tuple((r.state(g, i, now), r.in_flight(g, i)) for i in range(n)))
    return trace


dep = st.fixed_dictionaries(
    {
        "weight": st.integers(1, 5),
        "rpm": st.one_of(st.none(), st.integers(1, 6)),
        "tpm": st.one_of(st.none(), st.integers(1, 400)),
    }
)
op = st.tuples(st.sampled_from(["new", "new", "ok", "fail", "fail", "cancel", "tick"]), st.integers(0, 200))


@settings(max_examples=60, deadline=None)
@given(
    strategy=st.sampled_from(STRATEGIES),
    a=st.lists(dep, min_size=1, max_size=4),
    b=st.lists(dep, min_size=1, max_size=2),
    fallback=st.booleans(),
    seed=st.integers(0, 2**64 - 1),
    retries=st.integers(0, 3),
    allowed=st.integers(1, 3),
    cooldown=st.integers(1, 3000),
    budget=st.integers(1, 5000),
    ops=st.lists(op, max_size=60),
)
def test_twins_make_the_same_choices(strategy, a, b, fallback, seed, retries, allowed, cooldown, budget, ops):
    section = {
        "strategy": strategy,
        "seed": seed,
        "num_retries": retries,
        "allowed_fails": allowed,
        "cooldown_ms": cooldown,
        "retry_budget_ms": budget,
        "backoff_base_ms": 5,
        "backoff_max_ms": 40,
        "fail_window_ms": 2000,
        "latency_window": 3,
    }
    if fallback:
        section["fallbacks"] = [{"a": ["b"]}]
    cfg = router_config(section, {"a": a, "b": b})
    groups = {"a": len(a), "b": len(b)}
    assert drive(Py, cfg, ops, groups) == drive(_rs(), cfg, ops, groups)


BAD = [
    (
        {"strategy": "fastest"},
        "router.strategy: expected one of simple-shuffle, least-busy, latency-based, "
        "usage-based, got 'fastest'",
    ),
    ({"num_retries": -1}, "router.num_retries: must be >= 0, got -1"),
    ({"cooldown_ms": 1.5}, "router.cooldown_ms: expected int, got 1.5"),
    ({"allowed_fails": True}, "router.allowed_fails: expected int, got True"),
    (
        {"backoff_base_ms": 50, "backoff_max_ms": 10},
        "router.backoff_max_ms: must be >= backoff_base_ms (50), got 10",
    ),
    (
        {"retries": 3},
        "router.retries: unknown field; known: strategy, num_retries, retry_budget_ms, backoff_base_ms, "
        "backoff_max_ms, allowed_fails, fail_window_ms, cooldown_ms, latency_window, seed, fallbacks",
    ),
    (
        {"fallbacks": {"a": ["b"]}},
        "router.fallbacks: expected a list of {model: [fallback models]}, got {'a': ['b']}",
    ),
    ({"fallbacks": [{"x": ["b"]}]}, "router.fallbacks[0]: unknown model 'x'"),
    ({"fallbacks": [{"a": ["b", "zz"]}]}, "router.fallbacks[0].a[1]: unknown model 'zz'"),
    ({"fallbacks": [{"a": ["a"]}]}, "router.fallbacks[0].a[0]: a model cannot fall back to itself"),
    ({"fallbacks": [{"a": []}]}, "router.fallbacks[0].a: expected a non-empty list of model names, got []"),
]


@pytest.mark.parametrize("section,message", BAD)
@pytest.mark.parametrize("impl", twins.IMPLS)
def test_a_bad_router_section_names_its_field(impl, section, message):
    from gateway.errors import ConfigError

    cfg = router_config(section, {"a": [{"weight": 1}], "b": [{"weight": 1}]})
    with pytest.raises(ConfigError) as e:
        twins.load("router", impl)(cfg)
    assert str(e.value) == message
