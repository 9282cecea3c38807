"""Sweep targets: our rungs and the peers, in one table (`--targets py,py+rs,litellm,...`).

    from harness.infra.targets import TARGETS, target
    target("py+rs").kind           # "rung": started by gateway.serving.launch with --mode py+rs
    target("litellm-rust").kind    # "peer": harness.peers.litellm, LITELLM_RUST=true

A new rung joins by name: every mode in `gateway.twins.MODES` is a target, started exactly
like the others (`gatewaylab serve --mode NAME`); a new peer joins through its adapter's
`TARGETS`.
Every target is measured by the same sweep: load generator, windows, repeats, direct
baseline on its route, overhead, CPU and peak RSS of its process tree, statistics, report.

Our rungs are measured on `bench_config` (every benchmark of the harness and the notebooks
builds its gateway config with it): the zero-config shape (one passthrough model `mock` on
the upstream, one client key) whose key carries rpm/tpm limits far above any load a run
reaches (`unreachable_limits`), so the rate limiter does its bucket work on every request and
never refuses one. A run that did reach them would get 429s, counted as errors, which make its
cells not ok (harness.infra.sweep). What each target really ran, per governance feature, is
`governance(...)`: our rungs' from their options, a peer's from its adapter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.twins import MODES
from harness.peers import litellm, noveum, portkey
from harness.peers._base import Governance, PeerTarget

# Our own gateway's rungs, by mode name (docs/ladder.md): one source, the twins' modes.
RUNGS: tuple[str, ...] = tuple(MODES)


@dataclass(frozen=True)
class Rung:
    """One of our rungs: `gatewaylab serve --mode <name>` on /v1/chat/completions."""

    name: str
    route: str = "chat"


TARGETS: dict[str, Rung | PeerTarget] = {
    **{m: Rung(m) for m in RUNGS},
    **litellm.TARGETS,
    **portkey.TARGETS,
    **noveum.TARGETS,
}


# Which flamegraph tools see a target (harness.profilers): py-spy samples the Python threads
# (Python frames and the native frames under them); perf samples every thread, so it is the
# one view of a process without an interpreter and of the native threads beside one.
PYSPY, PERF = "py-spy", "perf"
# our rungs' processes: is there an interpreter, and native threads py-spy cannot see?
_RUNG_THREADS = {
    "py": (True, ""),
    "py+rs": (True, "the Rust forwarder's Tokio runtime (gatewaylab-fwd)"),
    "rs-core": (True, "the Rust pipeline's Tokio runtime and ledger thread"),
    "rs-server": (False, "every thread: the binary's Tokio runtime and ledger thread"),
}


def flamegraph_tools(name: str) -> tuple[str, ...]:
    """The flamegraph tools of a target, py-spy first: ("py-spy",), ("perf",) or both."""
    t = target(name)
    if isinstance(t, Rung):
        interp, native = _RUNG_THREADS[name]
        return (PYSPY,) * interp + (PERF,) * bool(native)
    return (PYSPY,) if t.runtime == "python" else (PERF,)


def native_threads(name: str) -> str:
    """What perf sees in a target that py-spy does not (a label's words)."""
    t = target(name)
    if isinstance(t, Rung):
        return _RUNG_THREADS[name][1]
    return {
        "node": "every thread; JS frames named from node's perf map (--perf-basic-prof): "
        "function and file:line, as the bundle names them; V8-inlined functions show as their caller"
    }.get(t.runtime, "every thread of the binary")


def kind(t: Rung | PeerTarget) -> str:
    return "rung" if isinstance(t, Rung) else "peer"


def target(name: str) -> Any:
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None


def parse_targets(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """'py,py+rs,litellm' or a list -> validated names, in order, without repeats."""
    items = spec.split(",") if isinstance(spec, str) else [x for s in spec for x in str(s).split(",")]
    names = [x.strip() for x in items if x.strip()]
    if not names:
        raise ConfigError("--targets: give at least one target")
    out: list[str] = []
    for n in names:
        target(n)
        if n not in out:
            out.append(n)
    return out


# --- the benchmark config of our rungs ------------------------------------------------------

# Far above any load: a bucket starts full at rpm requests and refills rpm/60 per second, so at
# 10^12 a run would need more than 10^10 requests a second to empty it. Whole numbers of
# requests and tokens stay exact in IEEE doubles (< 2^53), so both twins keep agreeing.
UNREACHABLE_RPM = 10**12
UNREACHABLE_TPM = 10**15


def unreachable_limits() -> dict[str, int]:
    """The rpm/tpm a benchmark key carries: the limiter runs on every request, never refuses."""
    return {"rpm": UNREACHABLE_RPM, "tpm": UNREACHABLE_TPM}


def bench_config(
    upstream_url: str,
    api_key: str,
    ledger_dir: str | os.PathLike,
    *,
    limits: Mapping[str, int] | None = None,
    ledger: Mapping[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """The gateway config every benchmark runs (a mapping for `gateway.config.from_mapping`,
    the same YAML every rung reads): zero-config's model and key, the key limited by `limits`
    (default `unreachable_limits()`), the ledger in `ledger_dir` plus `ledger` keys, and any
    other top-level `sections` (plugins, limits, ...). `limits={}`: a key without limits
    (the limiter looks it up and returns at once)."""
    from gateway.stages.auth import hash_key

    lim = dict(unreachable_limits() if limits is None else limits)
    if set(lim) not in (set(), {"rpm", "tpm"}):
        raise ValueError(f"bench_config limits: rpm and tpm together, or neither; got {sorted(lim)}")
    return {
        "model_list": [{"model_name": "mock", "upstream": {"kind": "openai", "base_url": upstream_url}}],
        "passthrough": True,
        "keys": [{"id": "default", "sha256": hash_key(api_key), **lim}],
        "ledger": {"dir": str(ledger_dir), **dict(ledger or {})},
        **sections,
    }


def write_bench_config(path: str | os.PathLike, upstream_url: str, api_key: str, ledger_dir, **kw) -> str:
    """`bench_config(...)` written as YAML to `path` (for `start_gateway(config=...)`); the path."""
    import yaml

    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(bench_config(upstream_url, api_key, ledger_dir, **kw), f, sort_keys=False)
    return str(path)


# --- what each target ran ---------------------------------------------------------------------


def rung_governance(
    stages: Iterable[str] | str,
    audit: bool,
    tracing: str = "off",
    fsync: str = "group",
    *,
    limited: bool = True,
) -> Governance:
    """What one of our rungs runs on `bench_config` with these options (`stages`: a set of
    gateway.pipeline.STAGES, or "all"/"none"; `limited`: the key has rpm/tpm limits, else
    the limiter looks the key up and returns at once: no bucket consulted, not rate limiting)."""
    from gateway.pipeline import parse_stages

    on = parse_stages(stages) if isinstance(stages, str) else frozenset(stages)
    ledger = audit and fsync != "none"
    return Governance(
        auth="auth" in on,
        waf="waf" in on,
        ratelimit="ratelimit" in on and limited,
        ledger=ledger,
        tracing=tracing != "off",
        notes="; ".join(
            n
            for n in (
                "auth: SHA-256 key check" if "auth" in on else "",
                "waf: the shipped rule set" if "waf" in on else "",
                (
                    f"ratelimit: token buckets, limits {UNREACHABLE_RPM:.0e} rpm (never reached)"
                    if limited
                    else "ratelimit: the key has no limits (the stage returns at once)"
                )
                if "ratelimit" in on
                else "",
                f"ledger: MMR + WAL, fsync {fsync}" if audit else "",
                f"tracing: {tracing}" if tracing != "off" else "",
            )
            if n
        )
        or "passthrough: guard only",
    )
