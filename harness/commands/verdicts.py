"""`gatewaylab verdicts RUN_DIR [RUN_DIR ...] [--json OUT]`: every cell of the given sweep run
folders (or folders of them) judged by the label rules now and before (engine:
harness.results.verdicts), and, where a run holds `on` and `on-unlimited` cells, what the
limiter changed, pair by pair."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", help="sweep run folders, or folders holding them")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the counts and pairs as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from harness.results import verdicts as V

    tables = V.cell_tables(args.run_dirs)
    judged, pairs = V.judge(tables), V.limiter_pairs(tables)
    s = V.summary(judged, pairs)
    print(V.markdown(s))
    if args.json:
        from gateway.errors import InvalidInput

        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(s, f, indent=1, default=str)
        except OSError as e:
            raise InvalidInput(f"--json {args.json}: {e.strerror}") from None
    return 0
