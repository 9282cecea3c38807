"""Run the gateway under uvicorn (httptools + uvloop) or granian.

`serve(options)` builds the configuration, the gateway and the chosen shell, binds, prints
`gateway listening on http://HOST:PORT` once it accepts connections, and runs until SIGINT /
SIGTERM, when the server stops accepting, finishes in-flight requests and runs the ASGI
lifespan shutdown (which drains the audit queue).

Options are one `gateway.options.ServeOptions` (carried to a child process, granian's worker
or a unit's worker, as JSON in $GATEWAYLAB_SERVE), checked into a configuration by
`gateway.options.build_config`, the one path for every rung. From here a gateway becomes a
unit of workers (gateway/serving/supervisor.py), the rs-server binary (rung 3,
gateway/rungs/rs_server.py), or a rung behind a Python shell under uvicorn or granian.
"""

from __future__ import annotations

import os
import socket
import sys

from gateway.errors import ConfigError
from gateway.options import SERVE_ENV, ServeOptions, build_config
from gateway.pipeline import error_body
from gateway.rungs import rs_server
from gateway.rungs.factory import make_gateway
from gateway.serving import framing
from gateway.serving.supervisor import supervise
from gateway.shells.asgi import AsgiShell
from gateway.stages.guard import check_scope


def build_app(opts: ServeOptions):
    cfg = build_config(opts)
    gw = make_gateway(cfg, threads=opts.threads)
    if cfg.shell == "fastapi":
        # imported only when asked for: FastAPI and Starlette take a while to import, and
        # the lean shell is the default
        from gateway.shells.fastapi import make_app

        return FramingGuard(make_app(gw))
    return FramingGuard(AsgiShell(gw))


class FramingGuard:
    """In front of either shell: refuse what the server let through from the request line
    (version, Host, HTTP/1.0 with Transfer-Encoding; gateway.stages.guard.check_scope) with an
    OpenAI-shaped error, before the shell or the upstream sees it."""

    __slots__ = ("app", "_check", "_body")

    def __init__(self, app):
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
    return build_app(ServeOptions.from_json(os.environ[SERVE_ENV]))


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # a worker of a unit (gateway/serving/supervisor.py): the port is shared
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
        return supervise(opts.replace(workers=opts.workers or 1))
    if cfg.switches.mode == "rs-server":  # rung 3: this process becomes the Rust binary
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
    os.environ[SERVE_ENV] = opts.to_json()
    # HTTP/1 only and no WebSockets: the gateway serves neither h2 (prior knowledge or h2c)
    # nor WebSocket upgrades, and granian's auto mode would answer an h2 preface with h2.
    srv = Server(
        "gateway.serving.server:granian_app",
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
    """`python -m gateway.serving.server` with the options in $GATEWAYLAB_SERVE
    (gateway.serving.launch starts gateways this way); a configuration mistake is one line on
    stderr and exit status 2."""
    try:
        return serve(ServeOptions.from_json(os.environ[SERVE_ENV]))
    except ConfigError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    if __package__ in (None, ""):  # run as a script (profilers): import the package, not this file
        from gateway.serving.server import main
    sys.exit(main())
