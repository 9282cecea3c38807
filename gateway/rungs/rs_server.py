"""Rung 3 (`--mode rs-server`): the standalone Rust gateway binary, started from Python.

`gateway.serving.server.serve` hands rs-server options here and this process *becomes* the binary
(`os.execv`): same pid, same CPU affinity (the launcher pins before exec), signals go
straight to it (SIGTERM drains its audit queue), nothing Python stays on the request path.
Worker threads default to the CPUs this process may run on, i.e. the profile's gateway
cores.

The binary reads one JSON spec (`--spec FILE`, native/server/src/cli.rs): the configuration
gateway/config.py checked and normalized, the engine's options and its server options. It
validates nothing itself, so the config has one validator and one set of messages for every
rung. The spec travels in a memfd, so nothing is left on disk.

The binary is `native/target/release/gatewaylab-server` in this checkout (`make dev` builds
it), or the path in $GATEWAYLAB_SERVER_BIN; see docs/rs_server.md.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson

from gateway.config import Config, engine_spec
from gateway.errors import ConfigError
from gateway.options import ServeOptions

BIN_ENV = "GATEWAYLAB_SERVER_BIN"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BIN = os.path.join(_ROOT, "native", "target", "release", "gatewaylab-server")


def binary_path() -> str:
    path = os.environ.get(BIN_ENV) or DEFAULT_BIN
    if not os.access(path, os.X_OK):
        raise ConfigError(
            f"--mode rs-server: the gateway binary {path} is not built; run `make dev` (or set ${BIN_ENV})"
        )
    return path


def spec(opts: ServeOptions, config: Config, worker: dict[str, Any] | None = None) -> dict[str, Any]:
    """The binary's spec: `config` (checked by gateway.options.build_config), the engine's
    options and the server's. `worker`: {"index", "count", "unit_dir", "layout"} for a worker
    of a unit (gateway/serving/supervisor.py)."""
    s = engine_spec(config, opts.threads)
    s["server"] = {
        "host": opts.host,
        "port": opts.port,
        "reuse_port": opts.reuse_port,
        "worker": worker,
        # the plugin sidecar's interpreter (python -m gateway.plugins)
        "python": sys.executable,
    }
    return s


def spec_fd(s: dict[str, Any]) -> int:
    """The spec in an anonymous in-memory file, inherited by the binary (read as /dev/fd/N)."""
    fd = os.memfd_create("gatewaylab-server-spec", 0)
    os.set_inheritable(fd, True)
    os.write(fd, orjson.dumps(s))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def command(fd: int) -> list[str]:
    """The binary's command line, reading its spec from inherited descriptor `fd`."""
    return [binary_path(), "--spec", f"/dev/fd/{fd}"]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    # the plugin sidecar (python -m gateway.plugins) imports this checkout's gateway package
    env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def exec_server(opts: ServeOptions, config: Config) -> None:
    """Replace this process with the binary (never returns)."""
    args = command(spec_fd(spec(opts, config)))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(args[0], args, environment())
