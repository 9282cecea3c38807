"""The rung factory: the gateway a configuration's mode asks for, behind a Python shell."""

from __future__ import annotations

from gateway.config import Config
from gateway.rungs.base import GatewayBase
from gateway.rungs.py import Gateway
from gateway.rungs.rs_core import RsCoreGateway


def make_gateway(config: Config, *, threads: int | None = None) -> GatewayBase:
    """The gateway of the config's rung (checked by gateway.options.build_config against the
    table of rungs, gateway/ladder.py). `threads`: rs-core's Tokio workers (None: one per CPU
    this process may run on)."""
    if config.switches.mode == "rs-core":
        return RsCoreGateway(config, threads=threads)
    return Gateway(config)
