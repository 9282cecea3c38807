"""`gatewaylab bench NAME ...`: each benchmark is a module `harness.bench.<name>` with
`add_arguments(parser)` and `run(args) -> int` (pyperf underneath, JSON kept).

`--pythons 3.11,3.12,3.13` (before or after NAME) runs the benchmark on each interpreter, each in
its own venv, and compares them (harness.bench._pythons, docs/interpreters.md)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from harness.commands import OneLineParser


def _available() -> list[str]:
    import harness.bench as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="benchmark: " + "|".join(_available()))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    p.add_argument(
        "--pythons",
        default=None,
        help="versions or paths, e.g. 3.11,3.12,3.13: run on each (docs/interpreters.md)",
    )


def parser(name: str) -> argparse.ArgumentParser:
    """The option parser of benchmark `name` (the CLI's and the `%bench` magic's)."""
    mod = importlib.import_module(f"harness.bench.{name}")
    p = OneLineParser(prog=f"gatewaylab bench {name}")
    mod.add_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    if args.name not in _available():
        print(
            f"gatewaylab bench: unknown benchmark {args.name!r}; available: {', '.join(_available())}",
            file=sys.stderr,
        )
        return 2
    from harness.bench._pythons import run_across, split_pythons_flag

    rest, pythons = split_pythons_flag(list(args.rest))
    if pythons or args.pythons:
        return run_across(args.name, rest, pythons or args.pythons)
    mod = importlib.import_module(f"harness.bench.{args.name}")
    return int(mod.run(parser(args.name).parse_args(rest)) or 0)
