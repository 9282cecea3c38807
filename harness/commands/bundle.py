"""`gatewaylab bundle OUT [--python X.Y]`: wheels (the project with its extension + runtime
dependencies only), the native binaries and a one-line run script, to sweep on another
machine offline (engine: harness.infra.bundle; docs/bundle.md)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the bundle folder (new or empty)")
    p.add_argument(
        "--python", default=None, help="target CPython version, e.g. 3.11 (default: this interpreter's)"
    )


def run(args: argparse.Namespace) -> int:
    from harness.infra.bundle import build_bundle

    m = build_bundle(args.out, python=args.python)
    wheels = [f for f in m["files"] if f["path"].startswith("wheels/")]
    print(f"bundle: {args.out} ({m['bytes'] / 1e6:.1f} MB: {len(wheels)} wheels, bin/gatewaylab-server)")
    print(f"on the target: {args.out}/run.sh sweep --raw --modes py,py+rs --profile xeon-4c")
    return 0
