"""Options shared by several subcommands."""
from __future__ import annotations

import argparse

from gateway.twins import Switches


def add_switch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["py", "py+rs"], default=None,
                   help="all Python twins (py) or all Rust twins (py+rs); default $GATEWAYLAB_MODE or py")
    p.add_argument("--impl", action="append", default=[], metavar="COMPONENT=python|rust",
                   help="override one component's twin (repeatable, or comma-separated)")


def switches_from_args(args: argparse.Namespace) -> Switches:
    return Switches.resolve(mode=args.mode, impl=args.impl)
