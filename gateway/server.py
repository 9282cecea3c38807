"""Run the gateway under uvicorn (httptools + uvloop) or granian.

`serve(options)` builds the configuration, the gateway and the chosen shell, binds, prints
`gateway listening on http://HOST:PORT` once it accepts connections, and runs until SIGINT /
SIGTERM, when the server stops accepting, finishes in-flight requests and runs the ASGI
lifespan shutdown (which drains the audit queue).

Options are one `gateway.options.ServeOptions` (carried to a child process, granian's worker
or a unit's worker, as JSON in $GATEWAYLAB_SERVE). `build_config` is the one path from
options to a checked configuration, for every rung: the gateway's own, the workers'
supervisor's and the rs-server launcher's.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys

from gateway import config as cfgmod
from gateway import framing, ladder
from gateway.errors import ConfigError
from gateway.options import ServeOptions
from gateway.twins import Switches, parse_impl

ENV = "GATEWAYLAB_SERVE"


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
        from gateway.pipeline import parse_stages

        changes["stages"] = parse_stages(opts.stages)
    if opts.ledger_layout is not None:
        changes["ledger_layout"] = opts.ledger_layout
    if opts.audit is not None:
        changes["audit"] = opts.audit == "on"
    if opts.tracing is not None:
        from gateway.tracing import parse_mode

        changes["tracing"] = parse_mode(opts.tracing)
    if opts.tracing_endpoint is not None:
        changes["tracing_endpoint"] = opts.tracing_endpoint
    ladder.check(mode, cfg, opts.given())
    return dataclasses.replace(cfg, **changes)


def build_app(opts: ServeOptions):
    from gateway.app import make_gateway

    cfg = build_config(opts)
    gw = make_gateway(cfg, threads=opts.threads)
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
    return build_app(ServeOptions.from_json(os.environ[ENV]))


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


def serve(opts: ServeOptions) -> int:
    opts = opts.with_ledger()
    cfg = build_config(opts)  # every option checked, for every rung, before anything starts
    if not opts.reuse_port and (
        opts.workers is not None or cfg.ledger_layout == "sharded"
    ):  # --workers N: supervise N workers (a sharded ledger: one a shard)
        from gateway import workers

        return workers.supervise(opts.replace(workers=opts.workers or 1))
    if cfg.switches.mode == "rs-server":  # rung 3: this process becomes the Rust binary
        from gateway import rs_server

        rs_server.exec_server(opts, cfg)
    if cfg.server == "uvicorn":
        return _serve_uvicorn(opts)
    return _serve_granian(opts)


def _serve_uvicorn(opts: ServeOptions) -> int:
    import asyncio

    import uvicorn
    import uvloop

    host = opts.host
    app = build_app(opts)  # config errors surface here, before binding
    sock = _bind(host, opts.port, reuse_port=opts.reuse_port)
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


def _serve_granian(opts: ServeOptions) -> int:
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.server import Server

    host, port = opts.host, opts.port
    if port == 0:
        s = _bind(host, 0)
        port = s.getsockname()[1]
        s.close()
    os.environ[ENV] = opts.to_json()
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
        return serve(ServeOptions.from_json(os.environ[ENV]))
    except ConfigError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    if __package__ in (None, ""):  # run as a script (profilers): import the package, not this file
        from gateway.server import main
    sys.exit(main())
