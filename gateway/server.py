"""Run the gateway under uvicorn (httptools + uvloop) or granian.

`serve(options)` builds the configuration, the gateway and the chosen shell, binds, prints
`gateway listening on http://HOST:PORT` once it accepts connections, and runs until SIGINT /
SIGTERM, when the server stops accepting, finishes in-flight requests and runs the ASGI
lifespan shutdown (which drains the audit queue).

Options are a plain dict (also carried to granian's worker process in $GATEWAYLAB_SERVE):
  config | (upstream, api_key, ledger), mode, impl (list of C=python|rust), shell, server,
  host, port; workers (N: supervise N workers, gateway/workers.py), worker_cpus,
  ledger_layout (single|sharded|single-writer), reuse_port (a worker of a unit: listen with
  SO_REUSEPORT); tracing (off|on|sampled:R), tracing_endpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import tempfile

from gateway import config as cfgmod
from gateway import framing
from gateway.errors import ConfigError
from gateway.twins import Switches, parse_impl

ENV = "GATEWAYLAB_SERVE"


def build_config(opts: dict) -> cfgmod.Config:
    if opts.get("config"):
        if opts.get("upstream") or opts.get("api_key"):
            raise ConfigError("--config: give either --config or --upstream/--api-key, not both")
        cfg = cfgmod.load(opts["config"])
    else:
        if not opts.get("upstream"):
            raise ConfigError("--upstream: required without --config")
        if not opts.get("api_key"):
            raise ConfigError("--api-key: required without --config")
        ledger = opts.get("ledger") or tempfile.mkdtemp(prefix="gatewaylab-ledger-")
        cfg = cfgmod.embedded(opts["upstream"], opts["api_key"], ledger)
        if opts.get("ledger") is None:
            opts["ledger"] = ledger
    if opts.get("ledger") and opts.get("config"):
        cfg = dataclasses.replace(cfg, ledger_dir=opts["ledger"])
    sw = cfg.switches
    mode = opts.get("mode") or sw.mode
    impl = {**sw.overrides, **parse_impl(opts.get("impl") or None)}
    shell = opts.get("shell") or cfg.shell
    if shell not in cfgmod.SHELLS:
        raise ConfigError(f"--shell: expected one of {', '.join(cfgmod.SHELLS)}, got {shell!r}")
    changes = {"switches": Switches(mode, impl), "shell": shell}
    if opts.get("ack") is not None:
        if opts["ack"] not in cfgmod.ACKS:
            raise ConfigError(f"--ack: expected one of {', '.join(cfgmod.ACKS)}, got {opts['ack']!r}")
        changes["ack"] = opts["ack"]
    if opts.get("max_in_flight") is not None:
        n = opts["max_in_flight"]
        if type(n) is not int or n < 1:
            raise ConfigError(f"--max-in-flight: expected a positive integer, got {n!r}")
        changes["max_in_flight"] = n
    if opts.get("stages") is not None:
        from gateway.pipeline import parse_stages

        changes["stages"] = parse_stages(opts["stages"])
    if opts.get("ledger_layout") is not None:
        from gateway.audit.shards import resolve_layout

        # a worker of a unit is one writer of its own shard: the unit checked the worker count
        changes["ledger_layout"] = resolve_layout(opts["ledger_layout"], 1)
    if opts.get("audit") is not None:
        if opts["audit"] not in ("on", "off"):
            raise ConfigError(f"--audit: expected on or off, got {opts['audit']!r}")
        changes["audit"] = opts["audit"] == "on"
    if opts.get("tracing") is not None:
        from gateway.tracing import parse_mode

        changes["tracing"] = parse_mode(opts["tracing"])
    if opts.get("tracing_endpoint") is not None:
        changes["tracing_endpoint"] = opts["tracing_endpoint"]
    return dataclasses.replace(cfg, **changes)


def build_app(opts: dict):
    from gateway.app import make_gateway

    cfg = build_config(opts)
    gw = make_gateway(cfg, shell=cfg.shell, server=opts.get("server") or "uvicorn")
    if cfg.shell == "fastapi":
        from gateway.shell_fastapi import make_app

        return FramingGuard(make_app(gw))
    from gateway.shell_asgi import AsgiShell

    return FramingGuard(AsgiShell(gw))


class FramingGuard:
    """In front of either shell: refuse what the server let through from the request line
    (version, Host, HTTP/1.0 with Transfer-Encoding; gateway.stages.guard.check_scope) with an
    OpenAI-shaped error, before the shell or the upstream sees it."""

    __slots__ = ("app", "_check", "_body")

    def __init__(self, app):
        from gateway.pipeline import error_body
        from gateway.stages.guard import check_scope

        self.app, self._check, self._body = app, check_scope, error_body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            err = self._check(scope)
            if err is not None:
                body = self._body(err.status, err.message, err.code)
                await send(
                    {
                        "type": "http.response.start",
                        "status": err.status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def granian_app():
    """Factory granian's worker calls (options from $GATEWAYLAB_SERVE)."""
    return build_app(json.loads(os.environ[ENV]))


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # a worker of a unit (gateway/workers.py): the port is shared
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"--port: cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _announce(host: str, port: int) -> None:
    print(f"gateway listening on http://{host}:{port}", flush=True)


def _mode(opts: dict) -> str:
    if opts.get("mode"):
        return opts["mode"]
    if opts.get("config"):
        return cfgmod.load(opts["config"]).switches.mode
    return os.environ.get("GATEWAYLAB_MODE") or "py"


def _sharded_unit(opts: dict) -> bool:
    """Run as a unit of workers: --workers given, or a sharded ledger (one shard per worker)."""
    if opts.get("workers") is not None:
        return True
    if opts.get("ledger_layout") is not None:
        return opts["ledger_layout"] == "sharded"
    return bool(opts.get("config")) and cfgmod.load(opts["config"]).ledger_layout == "sharded"


def serve(opts: dict) -> int:
    if not opts.get("reuse_port") and _sharded_unit(opts):  # --workers N: supervise N workers
        from gateway import workers

        return workers.supervise({**opts, "workers": opts.get("workers") or 1})
    if _mode(opts) == "rs-server":  # rung 3: this process becomes the Rust binary
        from gateway import rs_server

        rs_server.exec_server(opts)
    server = opts.get("server") or (build_config(dict(opts)).server if opts.get("config") else "uvicorn")
    host = opts.get("host") or "127.0.0.1"
    port = int(opts.get("port") or 0)
    if server == "uvicorn":
        return _serve_uvicorn(opts, host, port)
    if server == "granian":
        return _serve_granian(opts, host, port)
    raise ConfigError(f"--server: expected uvicorn or granian, got {server!r}")


def _serve_uvicorn(opts: dict, host: str, port: int) -> int:
    import asyncio

    import uvicorn
    import uvloop

    opts = dict(opts, server="uvicorn")
    app = build_app(opts)  # config errors surface here, before binding
    sock = _bind(host, port, reuse_port=bool(opts.get("reuse_port")))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="none",
        http=framing.protocol_class(),  # llhttp with hyper's caps, OpenAI-shaped refusals
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        timeout_keep_alive=30,
        backlog=2048,
    )
    srv = uvicorn.Server(config)
    # uvicorn re-raises the signal it caught once it has shut down gracefully; with these
    # no-op handlers in place that ends in a clean exit status 0 instead of death by SIGTERM.
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)

    async def main():
        task = asyncio.ensure_future(srv.serve(sockets=[sock]))
        while not srv.started and not task.done():
            await asyncio.sleep(0.005)
        if srv.started:
            _announce(host, port)
        await task

    uvloop.run(main())
    return 0 if srv.started else 1


def _serve_granian(opts: dict, host: str, port: int) -> int:
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.server import Server

    opts = dict(opts, server="granian")
    build_config(opts)  # fail fast in this process on bad configuration (also fixes the ledger dir)
    if port == 0:
        s = _bind(host, 0)
        port = s.getsockname()[1]
        s.close()
    os.environ[ENV] = json.dumps(opts)
    # HTTP/1 only and no WebSockets: the gateway serves neither h2 (prior knowledge or h2c)
    # nor WebSocket upgrades, and granian's auto mode would answer an h2 preface with h2.
    srv = Server(
        "gateway.server:granian_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        factory=True,
        log_enabled=False,
        log_access=False,
        backlog=2048,
        http=HTTPModes.http1,
        websockets=False,
    )
    _announce(host, port)
    srv.serve()
    return 0


def main() -> int:
    """`python -m gateway.server` with the options in $GATEWAYLAB_SERVE (gateway.launch starts
    gateways this way); a configuration mistake is one line on stderr and exit status 2."""
    try:
        return serve(json.loads(os.environ[ENV]))
    except ConfigError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    if __package__ in (None, ""):  # run as a script (profilers): import the package, not this file
        from gateway.server import main
    sys.exit(main())
