"""`gatewaylab serve`: run the gateway (docs/formats.md "CLI contract").

    gatewaylab serve (--config FILE | --upstream URL --api-key KEY) [--ledger DIR]
                     [--mode py|py+rs|rs-core|rs-server] [--threads N] [--workers N]
                     [--ledger-layout single|sharded|single-writer] [--stages all|none|LIST]
                     [--audit on|off] [--ack background|durable] [--max-in-flight N]
                     [--tracing off|on|sampled:R] [--tracing-endpoint URL]
                     [--impl C=python|rust ...] [--shell asgi|fastapi] [--server uvicorn|granian]
                     [--port P] [--host 127.0.0.1]

The flags become one `gateway.options.ServeOptions` (each value checked there, once); what
each rung supports is gateway/ladder.py's table, and an option a rung cannot honour is
refused in one line naming the rung. Prints `gateway listening on http://HOST:PORT` when it
accepts connections; SIGTERM or Ctrl-C stops it gracefully (in-flight requests finish, the
audit queue drains).
"""

from __future__ import annotations

import argparse

from gateway.ladder import LAYOUTS, MODES, RUNGS, SERVERS, SHELLS


def _rungs(what) -> str:
    """The rungs that support an option, from the table of rungs."""
    return ", ".join(m for m, r in RUNGS.items() if what(r))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML configuration file (see gateway/config.py)")
    p.add_argument(
        "--upstream", help="zero-config: upstream base URL (model `mock`, other names passed through)"
    )
    p.add_argument("--api-key", dest="api_key", help="zero-config: the client API key to accept")
    p.add_argument(
        "--ledger", help="audit ledger directory (default: the config's ledger.dir, or a new temp dir)"
    )
    p.add_argument(
        "--mode",
        default=None,
        metavar="|".join(MODES),
        help="rung (default: the config's, else $GATEWAYLAB_MODE, else py)",
    )
    p.add_argument(
        "--impl",
        action="append",
        default=[],
        metavar="COMPONENT=python|rust",
        help=f"override one component's twin (repeatable, or comma-separated; {_rungs(lambda r: r.per_component)})",
    )
    p.add_argument(
        "--shell",
        default=None,
        metavar="|".join(SHELLS),
        help=f"ASGI shell (default: config's, else asgi; {_rungs(lambda r: r.shells)})",
    )
    p.add_argument(
        "--server",
        default=None,
        metavar="|".join(SERVERS),
        help=f"default: config's, else uvicorn ({_rungs(lambda r: r.servers)})",
    )
    p.add_argument(
        "--stages",
        default=None,
        metavar="all|none|auth,parse,waf,ratelimit,adapter",
        help="hot-path stages to run (default: config's, else all; the guard always runs)",
    )
    p.add_argument("--audit", default=None, metavar="on|off", help="audit ledger on or off (default: on)")
    p.add_argument(
        "--tracing",
        default=None,
        metavar="off|on|sampled:R",
        help="OpenTelemetry spans over OTLP (default: config's, else off; docs/tracing.md)",
    )
    p.add_argument(
        "--tracing-endpoint",
        dest="tracing_endpoint",
        default=None,
        metavar="URL",
        help="OTLP/HTTP traces URL (default: config's, else http://127.0.0.1:4318/v1/traces)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"worker threads in one process ({_rungs(lambda r: r.threads)}; default: the CPUs "
        "the gateway is pinned to)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="N gateway processes on one port, one per gateway core, supervised as one unit "
        f"({_rungs(lambda r: True)}; docs/workers.md)",
    )
    p.add_argument(
        "--ledger-layout",
        dest="ledger_layout",
        default=None,
        metavar="|".join(LAYOUTS),
        help="audit ledger layout (default: single for one process, sharded for --workers N; "
        f"single-writer: one ledger process, {_rungs(lambda r: 'single-writer' in r.layouts)})",
    )
    p.add_argument(
        "--ack",
        default=None,
        metavar="background|durable",
        help="answer before the record is written (background, default) or once it is durable",
    )
    p.add_argument(
        "--max-in-flight",
        dest="max_in_flight",
        type=int,
        default=None,
        help="chat requests served at once; beyond it 503 overloaded (default: config's, else 1024)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")


def run(args: argparse.Namespace) -> int:
    from gateway.options import ServeOptions
    from gateway.serving.server import serve

    opts = ServeOptions(
        config=args.config,
        upstream=args.upstream,
        api_key=args.api_key,
        ledger=args.ledger,
        mode=args.mode,
        impl=tuple(args.impl),
        stages=args.stages,
        audit=args.audit,
        ack=args.ack,
        max_in_flight=args.max_in_flight,
        shell=args.shell,
        server=args.server,
        host=args.host,
        port=args.port,
        threads=args.threads,
        workers=args.workers,
        ledger_layout=args.ledger_layout,
        tracing=args.tracing,
        tracing_endpoint=args.tracing_endpoint,
    )
    return serve(opts)
