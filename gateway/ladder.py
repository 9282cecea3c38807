"""The ladder's rungs, in one table: per mode, what runs where, which options, ledger layouts
and plugin placement it supports, and which probes apply to it.

    RUNGS["rs-core"].threads        -> True (--threads N: its Tokio workers)
    refusal(RUNGS["py"], "--threads") -> ConfigError("--threads: not available on py (...)")
    check(mode, config, options)    -> None, or the one-line ConfigError naming the rung

Read by the command line (harness/commands/serve.py: choices and help), the config paths
(gateway/options.py build_config runs `check` for every rung, so `gatewaylab serve`, the
workers' supervisor and the rs-server launcher refuse the same things with the same words),
twin selection (gateway/twins.py MODES), the sweep (which probes apply) and
tests/gateway/test_ladder.py, which walks every (rung, option) pair: each works, shown by
its effect in /health, or is refused here. Nothing is silently ignored.

A leaf module: it imports nothing of the gateway but its errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError

SHELLS = ("asgi", "fastapi")
SERVERS = ("uvicorn", "granian")
LAYOUTS = ("single", "sharded", "single-writer")  # ledger layouts (gateway/audit/shards.py)
# probes (harness/): CPU and RSS of the process tree apply to every rung; the in-gateway
# probes (GIL acquisition, event-loop lag, the extension's GIL counters at /debug/probes),
# py-spy (GIL ownership, flamegraphs) and scalene need an interpreter serving requests
PROBES = ("cpu", "rss", "in_gateway", "py_spy", "scalene")
_NO_INTERPRETER_PROBES = ("cpu", "rss")


@dataclass(frozen=True)
class Rung:
    mode: str
    number: int
    twins: str  # the twin every component defaults to: python | rust
    per_component: bool  # --impl COMPONENT=python|rust
    shells: tuple[str, ...]  # --shell / `shell:` (the Python ASGI shells); () serves HTTP itself
    servers: tuple[str, ...]  # --server / `server:`
    threads: bool  # --threads N: worker threads in one process (Tokio)
    layouts: tuple[str, ...]  # --ledger-layout / `ledger.layout`
    plugins: str | None  # where `plugins.pre_call` hooks run: in-process | sidecar | None
    background: bool  # `background.*`: the Python audit queue's settings
    probes: tuple[str, ...]

    @property
    def server_label(self) -> str:
        """What serves HTTP by default (results say which): uvicorn, or the binary itself."""
        return self.servers[0] if self.servers else "gatewaylab-server"

    @property
    def interpreter(self) -> bool:
        """A Python interpreter serves its requests (GIL, loop-lag, py-spy, scalene apply)."""
        return "py_spy" in self.probes


RUNGS: dict[str, Rung] = {
    r.mode: r
    for r in (
        Rung("py", 0, "python", True, SHELLS, SERVERS, False, LAYOUTS, "in-process", True, PROBES),
        Rung("py+rs", 1, "rust", True, SHELLS, SERVERS, False, LAYOUTS, "in-process", True, PROBES),
        Rung("rs-core", 2, "rust", False, SHELLS, SERVERS, True, ("single", "sharded"), None, False, PROBES),
        Rung(
            "rs-server",
            3,
            "rust",
            False,
            (),
            (),
            True,
            ("single", "sharded"),
            "sidecar",
            False,
            _NO_INTERPRETER_PROBES,
        ),
    )
}
MODES = tuple(RUNGS)

# option -> why a rung without it cannot honour it (the one message: `refusal`)
_WHY = {
    "impl": "every component is Rust, in one call; per-component twins apply to py and py+rs",
    "shell": "it serves HTTP itself (hyper); the ASGI shells are the Python rungs'",
    "server": "it serves HTTP itself (hyper); uvicorn and granian serve the Python rungs",
    "threads": "one event loop per process; use --workers N",
    "single-writer": "its ledger is its own Rust thread; use sharded",
    "background": "its audit queue is the Rust ledger thread's (unbounded, lossless)",
    "plugins": "the whole pipeline is one Rust call; plugins run in-process on py and py+rs, "
    "in a sidecar on rs-server",
}


def refusal(rung: Rung, option: str, why: str) -> ConfigError:
    """The one line for an option `rung` cannot honour: `option` is what the user wrote
    (`--threads`, `ledger.layout single-writer`, `background.queue_size`)."""
    return ConfigError(f"{option}: not available on {rung.mode} ({_WHY[why]})")


def server_label(mode: str, server: str | None) -> str:
    """What serves HTTP for `mode` (results say which): the server asked for, else the rung's
    own (empty for a mode that is no rung: starting it fails, in its own words)."""
    if server:
        return server
    r = RUNGS.get(mode)
    return r.server_label if r is not None else ""


def rung(mode: str) -> Rung:
    try:
        return RUNGS[mode]
    except KeyError:
        raise ConfigError(f"mode {mode!r}: expected one of {', '.join(MODES)}") from None


def check(mode: str, config: Any, options: Mapping[str, Any]) -> None:
    """Refuse, in one line naming the rung, any option `mode` cannot honour. `config` is the
    gateway/config.py Config (its `given`: the fields the YAML set), `options` the serve
    options the user gave (None: not given)."""
    r = rung(mode)  # --impl: gateway.twins.Switches refuses it, with refusal(), where it is parsed
    for name in ("shell", "server"):
        allowed = r.shells if name == "shell" else r.servers
        if allowed:
            continue
        if options.get(name) is not None:
            raise refusal(r, f"--{name}", name)
        if name in config.given:
            raise refusal(r, name, name)
    if options.get("threads") is not None and not r.threads:
        raise refusal(r, "--threads", "threads")
    layout = options.get("ledger_layout")
    where = "--ledger-layout"
    if layout is None:
        layout, where = config.ledger_layout, "ledger.layout"
    if layout is not None and layout not in r.layouts:
        raise refusal(r, f"{where} {layout}", layout)
    if not r.background:
        given = sorted(k for k in config.given if k.startswith("background."))
        if given:
            raise refusal(r, given[0], "background")
    if config.plugins.pre_call and r.plugins is None:
        raise refusal(r, "plugins.pre_call", "plugins")
