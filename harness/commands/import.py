"""`gatewaylab import RUN_DIR [--out ROOT] [--in-place] [--no-report]`: a raw run folder (from
`gatewaylab sweep --raw`, e.g. on the target hardware through a bundle) -> the usual Parquet
tables and report (engine: harness.results.raw_results; docs/bundle.md)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder swept with --raw (meta.json + tables/*.json)")
    p.add_argument(
        "--out", default=None, help="runs root to copy it under (default data/runs or $GATEWAYLAB_RUNS_DIR)"
    )
    p.add_argument("--in-place", action="store_true", help="convert where it lies instead of copying")
    p.add_argument("--no-report", action="store_true", help="tables only, no report.md/html")
    p.add_argument("--images", action="store_true", help="also the static PNG/SVG figures (slow)")


def run(args: argparse.Namespace) -> int:
    from harness.results.raw_results import import_run

    dest = import_run(
        args.run_dir, root=args.out, in_place=args.in_place, report=not args.no_report, images=args.images
    )
    print(f"run: {dest}")
    if (dest / "report.md").exists() and not args.no_report:
        print(f"report: {dest / 'report.md'}")
    return 0
