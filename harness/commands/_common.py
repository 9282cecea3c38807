"""Options shared by several subcommands."""

from __future__ import annotations

import argparse

from gateway.twins import MODES, Switches


def add_switch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode",
        choices=list(MODES),
        default=None,
        help="rung: all Python twins (py), all Rust twins behind the Python pipeline (py+rs), or the "
        "whole hot path in one Rust call (rs-core); default $GATEWAYLAB_MODE or py",
    )
    p.add_argument(
        "--impl",
        action="append",
        default=[],
        metavar="COMPONENT=python|rust",
        help="override one component's twin (repeatable, or comma-separated)",
    )


def switches_from_args(args: argparse.Namespace) -> Switches:
    return Switches.resolve(mode=args.mode, impl=args.impl)
