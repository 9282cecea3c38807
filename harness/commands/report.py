"""`gatewaylab report RUN_DIR [--format md|html]`: write report.md and/or report.html
(plus static PNG/SVG figures for blog export) for a sweep run folder (engine: harness.results.report)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a sweep run folder (data/runs/<timestamp>-<name>)")
    p.add_argument("--format", choices=["md", "html", "both"], default="both", help="default: both")
    p.add_argument("--no-images", action="store_true", help="skip the static PNG/SVG figures")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.errors import ConfigError
    from harness.results.report import write_report

    d = Path(args.run_dir)
    if not (d / "cells.parquet").exists() and (d / "tables" / "cells.json").exists():
        raise ConfigError(f"{d} holds raw results (sweep --raw): run `gatewaylab import {d}` first")
    fmts = ("md", "html") if args.format == "both" else (args.format,)
    out = write_report(args.run_dir, formats=fmts, images=not args.no_images)
    for k in ("md", "html"):
        if out.get(k):
            print(f"{k}: {out[k]}")
    for img in out.get("images", []):
        print(f"image: {img}")
    for note in out.get("notes", []):
        print(f"note: {note}")
    return 0
