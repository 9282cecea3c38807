"""`gatewaylab bench NAME ...`: each benchmark is a module `harness.bench.<name>` with
`add_arguments(parser)` and `run(args) -> int` (pyperf underneath, JSON kept)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def _available() -> list[str]:
    import harness.bench as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="benchmark: " + "|".join(_available()))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")


def run(args: argparse.Namespace) -> int:
    if args.name not in _available():
        print(
            f"gatewaylab bench: unknown benchmark {args.name!r}; available: {', '.join(_available())}",
            file=sys.stderr,
        )
        return 2
    mod = importlib.import_module(f"harness.bench.{args.name}")
    p = argparse.ArgumentParser(prog=f"gatewaylab bench {args.name}")
    mod.add_arguments(p)
    return int(mod.run(p.parse_args(args.rest)) or 0)
