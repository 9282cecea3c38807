"""Rung 3 (`--mode rs-server`): the standalone Rust gateway binary, started from Python.

`gateway.server.serve` hands rs-server options here and this process *becomes* the binary
(`os.execv`): same pid, same CPU affinity (the launcher pins before exec), signals go
straight to it (SIGTERM drains its audit queue), nothing Python stays on the request path.
Worker threads default to the CPUs this process may run on, i.e. the profile's gateway
cores.

The binary is `native/target/release/gatewaylab-server` in this checkout (`make dev` builds
it), or the path in $GATEWAYLAB_SERVER_BIN. It reads the same YAML config and flags; see
native/server/src/cli.rs and docs/rs_server.md.
"""

from __future__ import annotations

import os
import sys

from gateway.errors import ConfigError

BIN_ENV = "GATEWAYLAB_SERVER_BIN"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(_ROOT, "native", "target", "release", "gatewaylab-server")


def binary_path() -> str:
    path = os.environ.get(BIN_ENV) or DEFAULT_BIN
    if not os.access(path, os.X_OK):
        raise ConfigError(
            f"--mode rs-server: the gateway binary {path} is not built; run `make dev` (or set ${BIN_ENV})"
        )
    return path


def server_args(opts: dict) -> list[str]:
    """`gateway.server` options -> the binary's command line (the same flags)."""
    if opts.get("impl"):
        raise ConfigError(
            "--impl: rs-server runs every component in Rust; per-component twins apply to py and py+rs"
        )
    # --shell / --server name the Python rungs' ASGI shell and server: rs-server is its own (hyper)
    args = [binary_path()]
    if opts.get("config"):
        args += ["--config", opts["config"]]
    if opts.get("upstream"):
        args += ["--upstream", opts["upstream"]]
    if opts.get("api_key"):
        args += ["--api-key", opts["api_key"]]
    if opts.get("ledger"):
        args += ["--ledger", opts["ledger"]]
    if opts.get("stages") is not None:
        args += ["--stages", opts["stages"]]
    if opts.get("audit") is not None:
        args += ["--audit", opts["audit"]]
    if opts.get("ack") is not None:
        args += ["--ack", opts["ack"]]
    if opts.get("max_in_flight") is not None:
        args += ["--max-in-flight", str(opts["max_in_flight"])]
    if opts.get("tracing") is not None:
        args += ["--tracing", opts["tracing"]]
    if opts.get("tracing_endpoint") is not None:
        args += ["--tracing-endpoint", opts["tracing_endpoint"]]
    threads = opts.get("threads") or len(os.sched_getaffinity(0))
    args += [
        "--host",
        opts.get("host") or "127.0.0.1",
        "--port",
        str(int(opts.get("port") or 0)),
        "--threads",
        str(threads),
        "--python",
        sys.executable,
        # record entropy sums floats as this interpreter's sum() does (Neumaier from 3.12)
        "--float-sum",
        "neumaier" if sys.version_info >= (3, 12) else "plain",
    ]
    return args


def exec_server(opts: dict) -> None:
    """Replace this process with the binary (never returns)."""
    args = server_args(opts)
    env = dict(os.environ)
    # the plugin sidecar (python -m gateway.plugins) imports this checkout's gateway package
    env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(args[0], args, env)
