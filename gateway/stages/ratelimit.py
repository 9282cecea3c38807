"""Rate-limit stage, Python twin: two token buckets per key (requests/min, tokens/min).

Arithmetic, in this order, so both twins give bit-identical floats (IEEE-754 double):

    state per key: req, tok (float), last_ns (int); starts req = rpm, tok = tpm, last_ns = None
    on check(key, tokens, now_ns):
        if last_ns is not None and now_ns > last_ns:
            elapsed = (now_ns - last_ns) / 1e9            # int difference, then one division
            req = min(rpm, req + elapsed * (rpm / 60.0))
            tok = min(tpm, tok + elapsed * (tpm / 60.0))
        if last_ns is None or now_ns > last_ns: last_ns = now_ns   # time never runs backwards
        if req >= 1.0 and tok >= tokens: req -= 1.0; tok -= tokens; return 0.0
        wait = 0.0
        if req < 1.0:      wait = max(wait, (1.0 - req) / (rpm / 60.0))
        if tok < tokens:   wait = (inf if tokens > tpm else max(wait, (tokens - tok) / (tpm / 60.0)))
        return wait        # nothing debited

Keys without limits are unlimited (0.0). `tokens` is an int >= 0; limits are ints >= 1.
A request needing more tokens than the bucket holds at all gets `inf`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from gateway.errors import InvalidInput


class RateLimiter:
    __slots__ = ("_limits", "_state")

    def __init__(self, limits: Mapping[str, tuple[int, int]]):
        lim = {}
        for key_id, pair in limits.items():
            try:
                rpm, tpm = pair
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"RateLimiter: limits for {key_id!r} must be (requests_per_min, tokens_per_min)"
                ) from None
            for name, v in (("requests_per_min", rpm), ("tokens_per_min", tpm)):
                if (
                    type(v) is not int or not 1 <= v <= 1 << 63
                ):  # the Rust twin's range (differential fuzzing)
                    raise InvalidInput(f"RateLimiter: {name} for {key_id!r} must be an int >= 1, got {v!r}")
            lim[key_id] = (float(rpm), float(tpm), rpm / 60.0, tpm / 60.0)
        self._limits = lim
        self._state: dict[str, list] = {}

    def check(self, key_id: str, tokens: int, now_ns: int) -> float:
        lim = self._limits.get(key_id)
        if lim is None:
            return 0.0
        if type(tokens) is not int or tokens < 0:
            raise InvalidInput(f"RateLimiter.check: tokens must be an int >= 0, got {tokens!r}")
        rpm, tpm, rrate, trate = lim
        st = self._state.get(key_id)
        if st is None:
            st = self._state[key_id] = [rpm, tpm, now_ns]
        else:
            last = st[2]
            if now_ns > last:
                elapsed = (now_ns - last) / 1e9
                st[0] = min(rpm, st[0] + elapsed * rrate)
                st[1] = min(tpm, st[1] + elapsed * trate)
                st[2] = now_ns
        req, tok = st[0], st[1]
        if req >= 1.0 and tok >= tokens:
            st[0] = req - 1.0
            st[1] = tok - tokens
            return 0.0
        wait = 0.0
        if req < 1.0:
            wait = max(wait, (1.0 - req) / rrate)
        if tok < tokens:
            wait = math.inf if tokens > tpm else max(wait, (tokens - tok) / trate)
        return wait
