"""`gatewaylab compare RUN_A RUN_B`: per metric, is B different from A, significantly AND by
more than a factor (asv-style; harness.results.stats.compare_tables): like cells only (same target
and concurrency or rate), >= 3 repeats per side, and most cells agreeing. Exit 0 always
unless `--fail-on-regression` is given and some metric is worse (then 1).

    gatewaylab compare data/runs/A data/runs/B [--factor 1.10] [--alpha 0.05] [--min-repeats 3] [--json OUT] [--cells]
    gatewaylab compare A1,A2,A3 B1,B2,B3      # interleaved runs (A1 B1 A2 B2 A3 B3), each side pooled

Each side may be several run folders, comma-separated: their repeats are pooled
(harness.results.stats.pool_repeats). Run the two sides alternately (one repeat each) and a machine
that drifts during the comparison moves both alike; see docs/peers.md for the false-alarm
rates of the two ways.
"""

from __future__ import annotations

import argparse
import json
import math


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_a", help="baseline run folder (or several, comma-separated: their repeats are pooled)"
    )
    p.add_argument("run_b", help="candidate run folder (or several, comma-separated)")
    p.add_argument(
        "--factor",
        type=float,
        default=None,
        help="smallest ratio that counts, for every metric (default: per metric, harness.results.stats.FACTORS)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument(
        "--min-repeats",
        type=int,
        default=3,
        help="repeats each side needs before a cell can be flagged (default 3)",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="also write the verdicts as JSON")
    p.add_argument("--cells", action="store_true", help="print the per-cell table too")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a metric is worse")


def _side(runs) -> list[str]:
    if isinstance(runs, (str, bytes)) or hasattr(runs, "__fspath__"):
        runs = [r for r in str(runs).split(",") if r]
    return [str(r) for r in runs]


def compare_runs(run_a, run_b, factor: float | None = None, alpha: float = 0.05, min_repeats: int = 3):
    """(verdicts, per_cell DataFrame) for two sweep run folders, or two lists of run folders
    whose repeats are pooled per side (an interleaved comparison)."""
    from gateway.errors import InvalidInput
    from harness.results.runs import load_table
    from harness.results.stats import compare_tables, pool_repeats

    sides = []
    for side in (_side(run_a), _side(run_b)):
        if not side:
            raise InvalidInput("compare needs a run folder on each side")
        cells, bases = [], []
        for run in side:
            try:
                cells.append(load_table(run, "cells"))
            except FileNotFoundError as e:  # one line for the CLI, not a traceback
                raise InvalidInput(f"{e}: is it a sweep run folder?") from None
            try:
                bases.append(load_table(run, "baseline"))
            except FileNotFoundError:  # a run without a direct baseline is judged on its own figures
                bases.append(None)
        # the machine-normalised judgement needs every run of the side to have its baseline
        sides.append(
            (pool_repeats(cells), pool_repeats(bases) if all(b is not None for b in bases) else None)
        )
    (ca, ba), (cb, bb) = sides
    return compare_tables(ca, cb, factor=factor, alpha=alpha, min_repeats=min_repeats, base_a=ba, base_b=bb)


def _f(x: float, fmt: str = "{:.3f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def run(args: argparse.Namespace) -> int:
    verdicts, cells = compare_runs(args.run_a, args.run_b, args.factor, args.alpha, args.min_repeats)
    print(
        f"A: {args.run_a}\nB: {args.run_b}\n"
        f"rule: a cell (same target, concurrency or rate) is flagged when both sides have >= {args.min_repeats} "
        f"repeats, Mann-Whitney p < {args.alpha:g} or disjoint ranges, and its ratio is beyond the metric's "
        "threshold; a metric is flagged when most of its cells are flagged one way and the geometric-mean "
        "factor is beyond the threshold\n"
    )
    print("| metric | B/A factor | 95% CI | cells | cells flagged | threshold | beyond | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for v in verdicts:
        print(
            f"| {v.metric} | {_f(v.factor)} | [{_f(v.ci_low)}, {_f(v.ci_high)}] | {v.cells} | {v.cells_flagged} | "
            f"{v.threshold:g}x | {'yes' if v.beyond_factor else 'no'} | "
            f"{v.verdict.upper() if v.flagged else v.verdict} |"
        )
    flagged = [v for v in verdicts if v.flagged]
    print(
        f"\n{len(flagged)} metric(s) flagged"
        + (": " + ", ".join(f"{v.metric} {v.verdict}" for v in flagged) if flagged else "")
    )
    if args.cells and len(cells):
        print()
        print(
            cells.to_markdown(index=False) if hasattr(cells, "to_markdown") else cells.to_string(index=False)
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "run_a": str(args.run_a),
                    "run_b": str(args.run_b),
                    "factor": args.factor,
                    "alpha": args.alpha,
                    "verdicts": [v.__dict__ | {"flagged": v.flagged} for v in verdicts],
                    "cells": json.loads(cells.to_json(orient="records")) if len(cells) else [],
                },
                f,
                indent=2,
            )
    if args.fail_on_regression and any(v.verdict == "worse" for v in verdicts):
        return 1
    return 0
