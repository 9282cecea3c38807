"""`gatewaylab serve`: run the gateway (docs/formats.md "CLI contract").

    gatewaylab serve (--config FILE | --upstream URL --api-key KEY [--ledger DIR])
                     [--mode py|py+rs|rs-core|rs-server] [--threads N] [--workers N] [--ledger-layout single|sharded|single-writer] [--stages all|none|LIST] [--audit on|off] [--tracing off|on|sampled:R] [--impl C=python|rust ...] [--shell fastapi|asgi]
                     [--server uvicorn|granian] [--port P] [--host 127.0.0.1]

Prints `gateway listening on http://HOST:PORT` when it accepts connections; SIGTERM or
Ctrl-C stops it gracefully (in-flight requests finish, the audit queue drains).
"""

from __future__ import annotations

import argparse

from harness.commands._common import add_switch_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML configuration file (see gateway/config.py)")
    p.add_argument(
        "--upstream", help="zero-config: upstream base URL (model `mock`, other names passed through)"
    )
    p.add_argument("--api-key", dest="api_key", help="zero-config: the client API key to accept")
    p.add_argument("--ledger", help="audit ledger directory (default: the config's, or a new temp dir)")
    add_switch_arguments(p)
    p.add_argument(
        "--shell", choices=["asgi", "fastapi"], default=None, help="ASGI shell (default: config's, else asgi)"
    )
    p.add_argument(
        "--server", choices=["uvicorn", "granian"], default=None, help="default: config's, else uvicorn"
    )
    p.add_argument(
        "--stages",
        default=None,
        metavar="all|none|auth,parse,waf,ratelimit,adapter",
        help="hot-path stages to run (default: config's, else all; the guard always runs)",
    )
    p.add_argument(
        "--audit", choices=["on", "off"], default=None, help="audit ledger on or off (default: on)"
    )
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
        help="rs-server: worker threads (default: the CPUs the gateway is pinned to)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="N gateway processes on one port, one per gateway core, supervised as one unit "
        "(py, py+rs, rs-core, rs-server; docs/workers.md)",
    )
    p.add_argument(
        "--ledger-layout",
        dest="ledger_layout",
        choices=["single", "sharded", "single-writer"],
        default=None,
        help="audit ledger layout (default: single for one process, sharded for --workers N; "
        "single-writer: one ledger process, py and py+rs)",
    )
    p.add_argument(
        "--ack",
        choices=["background", "durable"],
        default=None,
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
    from gateway.server import serve

    opts = {
        "config": args.config,
        "upstream": args.upstream,
        "api_key": args.api_key,
        "ledger": args.ledger,
        "mode": args.mode,
        "impl": args.impl,
        "stages": args.stages,
        "audit": args.audit,
        "ack": args.ack,
        "max_in_flight": args.max_in_flight,
        "shell": args.shell,
        "server": args.server,
        "host": args.host,
        "port": args.port,
        "threads": args.threads,
        "workers": args.workers,
        "ledger_layout": args.ledger_layout,
        "tracing": args.tracing,
        "tracing_endpoint": args.tracing_endpoint,
    }
    return serve(opts)
