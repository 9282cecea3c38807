"""Rate-limit twins return bit-identical Retry-After values for identical call sequences."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import twins
from gateway.errors import InvalidInput

PY = twins.load("ratelimit", "python")
RS = twins.load("ratelimit", "rust")

KEYS = ["a", "b", "c"]
limits = st.dictionaries(
    st.sampled_from(KEYS[:2]),
    st.tuples(st.integers(1, 10_000), st.integers(1, 1_000_000)),
    max_size=2,
)
call = st.tuples(
    st.sampled_from(KEYS),
    st.one_of(st.integers(0, 2_000), st.integers(0, 2_000_000), st.just(2**70)),
    # time steps: mostly small increases, sometimes none, sometimes a long pause or a step back
    st.one_of(
        st.integers(0, 50_000_000), st.integers(0, 120_000_000_000), st.just(0), st.integers(-1_000_000, 0)
    ),
)


def _bits(x: float) -> str:
    return x.hex() if math.isfinite(x) else repr(x)


@settings(max_examples=300, deadline=None)
@given(lim=limits, calls=st.lists(call, max_size=60), t0=st.integers(0, 2**62))
def test_bit_identical_sequences(lim, calls, t0):
    py, rs = PY(lim), RS(lim)
    now = t0
    for key, tokens, dt in calls:
        now += dt
        a, b = py.check(key, tokens, now), rs.check(key, tokens, now)
        assert _bits(a) == _bits(b), (key, tokens, now)


def test_retry_after_is_exact():
    for impl in (PY, RS):
        rl = impl({"k": (2, 100)})
        assert rl.check("k", 10, 0) == 0.0
        assert rl.check("k", 10, 0) == 0.0
        assert rl.check("k", 10, 0) == 30.0
        assert rl.check("k", 10, 15_000_000_000) == 15.0
        assert rl.check("k", 101, 30_000_000_000) == math.inf
        assert rl.check("unlimited", 10**30, 0) == 0.0


@pytest.mark.parametrize(
    "lim",
    [
        {"k": (0, 10)},
        {"k": (1, -1)},
        {"k": (1.5, 10)},
        {"k": (True, 10)},
        {"k": (1,)},
        {"k": 5},
        {"k": (1, 2, 3)},
    ],
)
def test_bad_limits_are_invalid_input_in_both(lim):
    for impl in (PY, RS):
        with pytest.raises(InvalidInput):
            impl(lim)


@pytest.mark.parametrize("tokens", [-1, 1.0, True, "3", None])
def test_bad_tokens_are_invalid_input_in_both(tokens):
    for impl in (PY, RS):
        rl = impl({"k": (10, 10)})
        with pytest.raises(InvalidInput):
            rl.check("k", tokens, 0)
        assert rl.check("unknown", tokens, 0) == 0.0  # unlimited keys are not checked further
