"""Sweep targets: our rungs and the peers, in one table (`--targets py,py+rs,litellm,...`).

    from harness.targets import TARGETS, target
    target("py+rs").kind           # "rung": started by gateway.launch with --mode py+rs
    target("litellm-rust").kind    # "peer": harness.peers.litellm, LITELLM_RUST=true

A new rung joins by name: every mode in `gateway.twins.MODES` is a target, started exactly
like the others (`gatewaylab serve --mode NAME`); a new peer joins through its adapter's
`TARGETS`.
Every target is measured by the same sweep: load generator, windows, repeats, direct
baseline on its route, overhead, CPU and peak RSS of its process tree, statistics, report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.twins import MODES
from harness.peers import litellm, noveum, portkey
from harness.peers._base import PeerTarget

# Our own gateway's rungs, by mode name (DESIGN.md "The Rust ladder"): one source, the twins' modes.
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
