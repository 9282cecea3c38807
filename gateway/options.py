"""`gatewaylab serve`'s options, parsed once into one typed object that every path uses.

    ServeOptions(upstream="http://127.0.0.1:9000", api_key="sk", mode="rs-core", threads=2)
    ServeOptions.from_json(os.environ["GATEWAYLAB_SERVE"])   # a child process's copy
    opts.to_json()

The command line (harness/commands/serve.py), `gateway.serving.launch.start_gateway` (tests,
sweeps, notebooks), the server (gateway/serving/server.py), the workers' supervisor
(gateway/serving/supervisor.py) and the rs-server launcher (gateway/rungs/rs_server.py) all
build or read this object; each value is checked here, once, with one message.

`build_config(options)` is the one path from options to a checked configuration, for every
rung: the configuration (gateway/config.py) with the options applied, and every option the
rung cannot honour refused in one line (gateway/ladder.py's table). None means "not given":
the configuration's value (or its default) holds.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from typing import Any

from gateway import config as cfgmod
from gateway import ladder
from gateway.config import ACKS
from gateway.errors import ConfigError
from gateway.ladder import LAYOUTS, MODES, SERVERS, SHELLS
from gateway.pipeline import parse_stages
from gateway.tracing import parse_mode
from gateway.twins import Switches, parse_impl

# the environment variable a child process (python -m gateway.serving.server, granian's
# worker, a unit's worker) reads its options from, as ServeOptions.to_json()
SERVE_ENV = "GATEWAYLAB_SERVE"


def _choice(flag: str, value: Any, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise ConfigError(f"{flag}: expected one of {', '.join(choices)}, got {value!r}")


def _positive(flag: str, value: Any) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ConfigError(f"{flag}: expected a positive integer, got {value!r}")


@dataclass(frozen=True)
class ServeOptions:
    config: str | None = None  # YAML file (gateway/config.py)
    upstream: str | None = None  # zero-config: upstream base URL
    api_key: str | None = None  # zero-config: the client key
    ledger: str | None = None  # ledger directory (satisfies or overrides `ledger.dir`)
    mode: str | None = None  # py | py+rs | rs-core | rs-server (None: config's, $GATEWAYLAB_MODE, py)
    impl: tuple[str, ...] = ()  # COMPONENT=python|rust overrides
    shell: str | None = None
    server: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    stages: str | None = None  # all | none | a comma list
    audit: str | None = None  # on | off
    ack: str | None = None  # background | durable
    max_in_flight: int | None = None
    threads: int | None = None  # Tokio worker threads (rs-core, rs-server)
    workers: int | None = None  # N worker processes on one port (gateway/serving/supervisor.py)
    worker_cpus: tuple[tuple[int, ...], ...] | None = None  # worker k's CPUs
    ledger_layout: str | None = None  # single | sharded | single-writer
    tracing: str | None = None  # off | on | sampled:R
    tracing_endpoint: str | None = None
    reuse_port: bool = False  # set by the supervisor: a worker of a unit shares its port

    def __post_init__(self):
        if self.config and (self.upstream or self.api_key):
            raise ConfigError("--config: give either --config or --upstream/--api-key, not both")
        _choice("--mode", self.mode, MODES)
        _choice("--shell", self.shell, SHELLS)
        _choice("--server", self.server, SERVERS)
        _choice("--audit", self.audit, ("on", "off"))
        _choice("--ack", self.ack, ACKS)
        _choice("--ledger-layout", self.ledger_layout, LAYOUTS)
        for flag in ("max_in_flight", "threads", "workers"):
            _positive("--" + flag.replace("_", "-"), getattr(self, flag))
        if type(self.port) is not int or not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: expected a port number (0 picks a free one), got {self.port!r}")
        object.__setattr__(self, "impl", tuple(self.impl))
        if self.worker_cpus is not None:
            object.__setattr__(self, "worker_cpus", tuple(tuple(int(c) for c in w) for w in self.worker_cpus))
        if self.tracing is not None:
            parse_mode(self.tracing)
        if self.stages is not None:
            parse_stages(self.stages)

    def given(self) -> dict[str, Any]:
        """The options the user gave (for gateway/ladder.py's check)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name)}

    def replace(self, **changes: Any) -> ServeOptions:
        return dataclasses.replace(self, **changes)

    def with_ledger(self) -> ServeOptions:
        """Zero-config without --ledger: a new temporary ledger directory, chosen once, so that
        every process of this gateway (granian's worker, a unit's workers) writes the same one."""
        if self.config or self.ledger:
            return self
        return self.replace(ledger=tempfile.mkdtemp(prefix="gatewaylab-ledger-"))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        return cls(**json.loads(text))


def build_config(opts: ServeOptions) -> cfgmod.Config:
    """The configuration the options describe, checked (gateway/config.py), with every option
    the rung cannot honour refused in one line (gateway/ladder.py)."""
    if opts.config:
        cfg = cfgmod.load(opts.config, ledger_dir=opts.ledger)
    else:
        if not opts.upstream:
            raise ConfigError("--upstream: required without --config")
        if not opts.api_key:
            raise ConfigError("--api-key: required without --config")
        if not opts.ledger:
            raise ConfigError("--ledger: required without --config (ServeOptions.with_ledger picks one)")
        cfg = cfgmod.embedded(opts.upstream, opts.api_key, opts.ledger)
    sw = cfg.switches
    mode = opts.mode or sw.mode
    changes: dict = {"switches": Switches(mode, {**sw.overrides, **parse_impl(opts.impl or None)})}
    if opts.shell is not None:
        changes["shell"] = opts.shell
    if opts.server is not None:
        changes["server"] = opts.server
    if opts.ack is not None:
        changes["ack"] = opts.ack
    if opts.max_in_flight is not None:
        changes["max_in_flight"] = opts.max_in_flight
    if opts.stages is not None:
        changes["stages"] = parse_stages(opts.stages)
    if opts.ledger_layout is not None:
        changes["ledger_layout"] = opts.ledger_layout
    if opts.audit is not None:
        changes["audit"] = opts.audit == "on"
    if opts.tracing is not None:
        changes["tracing"] = parse_mode(opts.tracing)
    if opts.tracing_endpoint is not None:
        changes["tracing_endpoint"] = opts.tracing_endpoint
    ladder.check(mode, cfg, opts.given())
    return dataclasses.replace(cfg, **changes)
