"""`gatewaylab` command line. Contract: docs/formats.md "CLI contract".

Each subcommand is a module `harness.commands.<name>` with
`add_arguments(parser)` and `run(args) -> int`. Only the chosen one is imported.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "serve": "run the gateway",
    "mock": "run the native mock upstream",
    "load": "run the native load generator",
    "sweep": "concurrency sweep over modes/switches/shells",
    "bench": "microbenchmarks: mmr|spawn|wal|hash|entropy|stages|...; instructions (Cachegrind)",
    "report": "write report.md / report.html for a run folder",
    "compare": "compare two run folders (significance and factor)",
    "verdicts": "judge a run's cells by the label rules now and before; the limiter's pairs",
    "audit": "append/verify/prove/consistency on a WAL file",
    "torture": "kill -9 the gateway under load; check the ledger after every kill",
    "soak": "steady soak (RSS, CPU, p99, audit lag), overload, upstream chaos, idle connections",
    "peers": "install / list the peer gateways (LiteLLM, Portkey, Noveum)",
    "bundle": "wheels + native binaries + run script to sweep on another machine, offline",
    "import": "turn a raw run folder (sweep --raw) into Parquet tables and a report",
}


def _usage() -> str:
    lines = ["usage: gatewaylab COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<8} {desc}" for name, desc in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gatewaylab: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        mod = importlib.import_module(f"harness.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"harness.commands.{name}":
            print(f"gatewaylab: command {name!r} is not available in this build", file=sys.stderr)
            return 2
        raise
    from harness.commands import OneLineParser

    parser = OneLineParser(prog=f"gatewaylab {name}", description=COMMANDS[name])
    mod.add_arguments(parser)
    args = parser.parse_args(rest)
    from gateway.errors import GatewayLabError

    try:
        return int(mod.run(args) or 0)
    except GatewayLabError as e:
        print(f"gatewaylab {name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gatewaylab {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
