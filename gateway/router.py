"""The router, Python twin: which deployment of a model group gets each attempt, when to retry,
when to fall back to another group, and which deployments are cooling down.

Conventions are LiteLLM's: several `model_list` entries with the same `model_name` form a
group of deployments; `router:` in the config holds the routing settings (gateway/config.py
documents the YAML). The router does no I/O and reads no clock: the caller passes the
monotonic time in, reports each attempt's outcome, and sleeps when told to. Given the same
config (seed included), the same outcomes and the same clock, this twin and the Rust twin
(`native/core/src/router.rs`, bound as `gateway._native.Router`) make the same choices
(tests/gateway/test_router_parity.py).

    att = router.begin(group, tokens, now_ns)
    while True:
        step = router.next(att, now_ns)     # ("send", group, index) | ("wait", ns) | ("give_up", reason)
        ... send / sleep ...
        router.report(att, "ok" | "fail" | "cancel", latency_us, now_ns)

Semantics (both twins, operation for operation):
- Randomness: splitmix64 seeded by `router.seed`; a draw happens only when a choice is open
  (more than one candidate or tied best).
- Candidates: the group's deployments that are not cooling down (a half-open one only while
  its single probe is not in flight) and are inside their rpm/tpm for the last 60 s.
- Strategies: `simple-shuffle` (weighted: draw % total weight), `least-busy` (fewest
  in flight), `latency-based` (lowest mean of the last `latency_window` latencies; none yet
  counts as 0), `usage-based` (most (tpm headroom, rpm headroom) left, unlimited = most).
- A failure ("fail": 429, 5xx, timeout, connection error) is retried while fewer than
  `num_retries` retries were used and the backoff ends before the per-request budget
  (`retry_budget_ms` from `begin`): wait, then pick again in the same group, avoiding the
  deployments this attempt already tried there (any, when it tried all). Otherwise the next
  fallback group gets one attempt, and so on; then `give_up`.
- Backoff of retry k (0-based): cap = min(backoff_base_ms * 2^k, backoff_max_ms) in us;
  wait = cap//2 + draw % (cap - cap//2 + 1) us (exponential with equal jitter).
- Cooldown: `allowed_fails` failures within `fail_window_ms` put a deployment in cooldown
  for `cooldown_ms`; then it is half-open: one probe; success closes it, failure cools it
  down again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.errors import ConfigError, InvalidInput

STRATEGIES = ("simple-shuffle", "least-busy", "latency-based", "usage-based")
OUTCOMES = ("ok", "fail", "cancel")
_M64 = (1 << 64) - 1
_MINUTE_NS = 60_000_000_000
# field -> (default, minimum)
_INTS = {
    "num_retries": (2, 0),
    "retry_budget_ms": (10_000, 1),
    "backoff_base_ms": (25, 0),
    "backoff_max_ms": (1_000, 0),
    "allowed_fails": (3, 1),
    "fail_window_ms": (60_000, 1),
    "cooldown_ms": (5_000, 1),
    "latency_window": (20, 1),
    "seed": (0, 0),
}
FIELDS = ("strategy", *_INTS, "fallbacks")


def _int(v: Any, where: str, minimum: int) -> int:
    if type(v) is not int:
        raise ConfigError(f"{where}: expected int, got {v!r}")
    if v < minimum or v > _M64:
        raise ConfigError(f"{where}: must be >= {minimum}, got {v!r}")
    return v


def parse_settings(section: Any, groups: Mapping[str, Any]) -> dict:
    """The `router:` section (a mapping, or None for defaults) -> normalised settings.
    `groups` are the model names, for checking fallbacks. ConfigError names the field."""
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"router: expected a mapping, got {section!r}")
    unknown = sorted(k for k in section if k not in FIELDS)
    if unknown:
        raise ConfigError(f"router.{unknown[0]}: unknown field; known: {', '.join(FIELDS)}")
    out: dict[str, Any] = {}
    strategy = section.get("strategy")
    if strategy is None:
        strategy = "simple-shuffle"
    if strategy not in STRATEGIES or type(strategy) is not str:
        raise ConfigError(f"router.strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    out["strategy"] = strategy
    for k, (default, minimum) in _INTS.items():
        v = section.get(k)
        out[k] = default if v is None else _int(v, f"router.{k}", minimum)
    if out["backoff_max_ms"] < out["backoff_base_ms"]:
        raise ConfigError(
            f"router.backoff_max_ms: must be >= backoff_base_ms ({out['backoff_base_ms']}), "
            f"got {out['backoff_max_ms']}"
        )
    fb = section.get("fallbacks")
    fallbacks: list[tuple[str, list[str]]] = []
    if fb is not None:
        if type(fb) is not list:
            raise ConfigError(
                f"router.fallbacks: expected a list of {{model: [fallback models]}}, got {fb!r}"
            )
        seen = set()
        for i, item in enumerate(fb):
            w = f"router.fallbacks[{i}]"
            if not isinstance(item, Mapping) or len(item) != 1:
                raise ConfigError(
                    f"{w}: expected a one-key mapping {{model: [fallback models]}}, got {item!r}"
                )
            ((src, dst),) = item.items()
            if src not in groups:
                raise ConfigError(f"{w}: unknown model {src!r}")
            if src in seen:
                raise ConfigError(f"{w}: duplicate model {src!r}")
            seen.add(src)
            if type(dst) is not list or not dst:
                raise ConfigError(f"{w}.{src}: expected a non-empty list of model names, got {dst!r}")
            for j, name in enumerate(dst):
                if type(name) is not str or name not in groups:
                    raise ConfigError(f"{w}.{src}[{j}]: unknown model {name!r}")
                if name == src:
                    raise ConfigError(f"{w}.{src}[{j}]: a model cannot fall back to itself")
            fallbacks.append((src, list(dst)))
    out["fallbacks"] = fallbacks
    return out


def router_config(section: Any, groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """What both twins' constructors read (JSON): the raw `router:` section and the groups
    ({name: [{"weight", "rpm", "tpm"}, ...]}, in model_list order)."""
    return orjson.dumps(
        {"router": section, "groups": [{"name": n, "deployments": list(d)} for n, d in groups.items()]}
    ).decode()


class _Rng:
    __slots__ = ("s",)

    def __init__(self, seed: int):
        self.s = seed & _M64

    def next(self) -> int:  # splitmix64
        self.s = (self.s + 0x9E3779B97F4A7C15) & _M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)


class _Deployment:
    __slots__ = (
        "weight",
        "rpm",
        "tpm",
        "in_flight",
        "lat",
        "lat_sum",
        "fails",
        "state",
        "until",
        "probing",
        "usage",
        "usage_tokens",
        "track_usage",
    )

    def __init__(self, weight: int, rpm: int | None, tpm: int | None, track_usage: bool):
        self.weight, self.rpm, self.tpm = weight, rpm, tpm
        self.in_flight = 0
        self.lat: deque[int] = deque()
        self.lat_sum = 0
        self.fails: deque[int] = deque()
        self.state = "ok"  # ok | cooldown | half_open
        self.until = 0
        self.probing = False
        self.usage: deque[tuple[int, int]] = deque()  # (start ns, tokens) of the last minute's sends
        self.usage_tokens = 0
        self.track_usage = track_usage or rpm is not None or tpm is not None

    def prune(self, now: int) -> None:
        u = self.usage
        while u and u[0][0] <= now - _MINUTE_NS:
            self.usage_tokens -= u.popleft()[1]

    def refresh(self, now: int) -> None:
        if self.state == "cooldown" and now >= self.until:
            self.state = "half_open"
            self.probing = False


class Attempt:
    """One request's way through the router (opaque to callers)."""

    __slots__ = (
        "chain",
        "pos",
        "retries",
        "tried",
        "deadline",
        "state",
        "current",
        "tokens",
        "sends",
        "reason",
    )

    def __init__(self, chain: list[str], tokens: int, deadline: int):
        self.chain = chain
        self.pos = 0
        self.retries = 0
        self.tried: list[int] = []
        self.deadline = deadline
        self.state = "start"  # start | sent | failed | waiting | done
        self.current: tuple[str, int] | None = None
        self.tokens = tokens
        self.sends = 0
        self.reason = ""


def _nonneg(v: Any, what: str) -> int:
    if type(v) is not int or v < 0 or v > _M64:
        raise InvalidInput(f"Router: {what} must be an int >= 0, got {v!r}")
    return v


class Router:
    """Router(config_json) with config_json from `router_config(section, groups)`."""

    def __init__(self, config_json: str):
        try:
            raw = orjson.loads(config_json)
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"Router: config is not JSON: {e}") from None
        if type(raw) is not dict or type(raw.get("groups")) is not list:
            raise InvalidInput('Router: config must be {"router": {...}, "groups": [...]}')
        groups: dict[str, list[dict]] = {}
        for g in raw["groups"]:
            if (
                type(g) is not dict
                or type(g.get("name")) is not str
                or type(g.get("deployments")) is not list
                or not g["deployments"]
            ):
                raise InvalidInput('Router: each group must be {"name": str, "deployments": [...non-empty]}')
            groups[g["name"]] = g["deployments"]
        s = parse_settings(raw.get("router"), groups)
        self.strategy = s["strategy"]
        self.num_retries = s["num_retries"]
        self.budget_ns = s["retry_budget_ms"] * 1_000_000
        self.base_us = s["backoff_base_ms"] * 1000
        self.max_us = s["backoff_max_ms"] * 1000
        self.allowed_fails = s["allowed_fails"]
        self.window_ns = s["fail_window_ms"] * 1_000_000
        self.cooldown_ns = s["cooldown_ms"] * 1_000_000
        self.latency_window = s["latency_window"]
        self.fallbacks = dict(s["fallbacks"])
        self._rng = _Rng(s["seed"])
        usage = self.strategy == "usage-based"
        self.groups: dict[str, list[_Deployment]] = {}
        for name, deps in groups.items():
            out = []
            for d in deps:
                if type(d) is not dict:
                    raise InvalidInput(f"Router: deployments of {name!r} must be objects")
                w, rpm, tpm = d.get("weight", 1), d.get("rpm"), d.get("tpm")
                if (
                    type(w) is not int
                    or w < 1
                    or any(x is not None and (type(x) is not int or x < 1) for x in (rpm, tpm))
                ):
                    raise InvalidInput(
                        f"Router: deployment of {name!r}: weight, rpm and tpm must be ints >= 1"
                    )
                out.append(_Deployment(w, rpm, tpm, usage))
            self.groups[name] = out

    # --- the request's way ------------------------------------------------------------------
    def begin(self, group: str, tokens: int, now_ns: int) -> Attempt:
        if group not in self.groups:
            raise InvalidInput(f"Router: unknown model group {group!r}")
        _nonneg(tokens, "tokens")
        _nonneg(now_ns, "now_ns")
        return Attempt([group, *self.fallbacks.get(group, ())], tokens, now_ns + self.budget_ns)

    def next(self, att: Attempt, now_ns: int) -> tuple:
        _nonneg(now_ns, "now_ns")
        st = att.state
        if st == "sent":
            raise InvalidInput("Router.next: report the outcome of the attempt in flight first")
        if st == "done":
            return ("give_up", att.reason or "done")
        if st == "start":
            idx = self._pick(att.chain[0], (), att.tokens, now_ns)
            return self._send(att, idx, now_ns) if idx is not None else self._fallback(att, now_ns)
        if st == "failed":
            if att.retries < self.num_retries:
                delay = self._backoff_ns(att.retries)
                if now_ns + delay < att.deadline:
                    att.retries += 1
                    att.state = "waiting"
                    return ("wait", delay)
            return self._fallback(att, now_ns)
        # waiting: the retry, in the same group, on a deployment not yet tried if there is one
        group = att.chain[att.pos]
        idx = self._pick(group, att.tried, att.tokens, now_ns)
        if idx is None and att.tried:
            idx = self._pick(group, (), att.tokens, now_ns)
        return self._send(att, idx, now_ns) if idx is not None else self._fallback(att, now_ns)

    def report(self, att: Attempt, outcome: str, latency_us: int, now_ns: int) -> str:
        """The outcome of the attempt in flight -> the deployment's state after it."""
        if outcome not in OUTCOMES:
            raise InvalidInput(
                f"Router.report: outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}"
            )
        _nonneg(latency_us, "latency_us")
        _nonneg(now_ns, "now_ns")
        if att.state != "sent" or att.current is None:
            raise InvalidInput("Router.report: no attempt in flight")
        g, i = att.current
        d = self.groups[g][i]
        d.in_flight -= 1
        if outcome == "ok":
            d.lat.append(latency_us)
            d.lat_sum += latency_us
            if len(d.lat) > self.latency_window:
                d.lat_sum -= d.lat.popleft()
            if d.state == "half_open":
                d.state = "ok"
                d.probing = False
                d.fails.clear()
            att.state, att.reason = "done", "ok"
        elif outcome == "fail":
            if d.state == "half_open":
                d.state, d.until, d.probing = "cooldown", now_ns + self.cooldown_ns, False
            elif d.state == "ok":
                f = d.fails
                while f and f[0] <= now_ns - self.window_ns:
                    f.popleft()
                f.append(now_ns)
                if len(f) >= self.allowed_fails:
                    d.state, d.until = "cooldown", now_ns + self.cooldown_ns
                    f.clear()
            att.state = "failed"
        else:  # cancel: the client went away; no verdict on the deployment
            if d.state == "half_open":
                d.probing = False
            att.state, att.reason = "done", "cancelled"
        return d.state

    # --- inspection ---------------------------------------------------------------------------
    def state(self, group: str, index: int, now_ns: int) -> str:
        d = self._dep(group, index)
        d.refresh(_nonneg(now_ns, "now_ns"))
        return d.state

    def in_flight(self, group: str, index: int) -> int:
        return self._dep(group, index).in_flight

    def _dep(self, group: str, index: int) -> _Deployment:
        deps = self.groups.get(group)
        if deps is None:
            raise InvalidInput(f"Router: unknown model group {group!r}")
        if type(index) is not int or not 0 <= index < len(deps):
            raise InvalidInput(f"Router: {group!r} has no deployment {index!r}")
        return deps[index]

    # --- internals ------------------------------------------------------------------------------
    def _send(self, att: Attempt, idx: int, now: int) -> tuple:
        group = att.chain[att.pos]
        d = self.groups[group][idx]
        d.in_flight += 1
        if d.track_usage:
            d.usage.append((now, att.tokens))
            d.usage_tokens += att.tokens
        if d.state == "half_open":
            d.probing = True
        att.current = (group, idx)
        att.tried.append(idx)
        att.state = "sent"
        att.sends += 1
        return ("send", group, idx)

    def _fallback(self, att: Attempt, now: int) -> tuple:
        while True:
            att.pos += 1
            att.tried = []
            if att.pos >= len(att.chain):
                att.state = "done"
                att.reason = "exhausted" if att.sends else "no_deployment"
                return ("give_up", att.reason)
            if now >= att.deadline:
                att.state, att.reason = "done", "budget"
                return ("give_up", "budget")
            idx = self._pick(att.chain[att.pos], (), att.tokens, now)
            if idx is not None:
                return self._send(att, idx, now)

    def _backoff_ns(self, k: int) -> int:
        cap = min(self.base_us << min(k, 40), self.max_us)
        half = cap // 2
        return (half + self._rng.next() % (cap - half + 1)) * 1000

    def _pick(self, group: str, exclude, tokens: int, now: int) -> int | None:
        deps = self.groups[group]
        cands = []
        for i, d in enumerate(deps):
            if i in exclude:
                continue
            d.refresh(now)
            if d.state == "cooldown" or (d.state == "half_open" and d.probing):
                continue
            if d.track_usage:
                d.prune(now)
                if d.rpm is not None and len(d.usage) >= d.rpm:
                    continue
                if d.tpm is not None and d.usage_tokens + tokens > d.tpm:
                    continue
            cands.append(i)
        if not cands:
            return None
        if len(cands) == 1:
            return cands[0]
        s = self.strategy
        if s == "simple-shuffle":
            r = self._rng.next() % sum(deps[i].weight for i in cands)
            for i in cands:
                r -= deps[i].weight
                if r < 0:
                    return i
        if s == "least-busy":
            m = min(deps[i].in_flight for i in cands)
            tied = [i for i in cands if deps[i].in_flight == m]
        elif s == "latency-based":
            tied = [cands[0]]
            for i in cands[1:]:
                a, b = deps[i], deps[tied[0]]
                # mean(a) vs mean(b) without division; no samples = mean 0
                lhs = a.lat_sum * max(len(b.lat), 1)
                rhs = b.lat_sum * max(len(a.lat), 1)
                if lhs < rhs:
                    tied = [i]
                elif lhs == rhs:
                    tied.append(i)
        else:  # usage-based

            def headroom(d: _Deployment) -> tuple[int, int]:
                t = _M64 if d.tpm is None else d.tpm - d.usage_tokens
                r = _M64 if d.rpm is None else d.rpm - len(d.usage)
                return t, r

            best = max(headroom(deps[i]) for i in cands)
            tied = [i for i in cands if headroom(deps[i]) == best]
        return tied[0] if len(tied) == 1 else tied[self._rng.next() % len(tied)]
