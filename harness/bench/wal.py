"""`gatewaylab bench wal`: WAL append throughput, records/s per fsync policy per twin.

Each run opens a fresh WAL (untimed), appends `n` records of `--size` bytes (canonical-JSON
look-alikes, the size of an audit record), then `flush()` -- so the last group commit is
part of the measured work -- and closes it (untimed). `api` is `per_record` (`append` in a
loop) or `batch` (one `append_many`). fsync cost depends on the disk: `--dir` picks where
the files go (default: the system temp directory; it must not be a tmpfs to mean anything).

JSON (`--json OUT`):
    {"rows": [{"impl", "policy", "api", "n", "size", "records_per_s", "min", "max"}, ...],
     "pyperf_json": PATH, "meta": {...}}
"""

from __future__ import annotations

import argparse
import os
import tempfile

from harness.bench import _runner as R

POLICIES = ("always", "group", "none")
# records per timed run: enough for a stable rate, few enough that "always" (one fsync per
# record, milliseconds each on a real disk) stays short.
N = {"always": 100, "group": 2000, "none": 2000}
QUICK_N = {"always": 10, "group": 200, "none": 200}


def measure(
    impls=("python", "rust"),
    policies=POLICIES,
    apis=("per_record", "batch"),
    quick: bool = False,
    size: int = 256,
    directory: str | None = None,
    pyperf_json="wal.pyperf.json",
    pyperf_args=(),
) -> dict:
    if "rust" in impls:
        R.require_release()
    directory = directory or tempfile.gettempdir()
    counts = QUICK_N if quick else N
    cases = [
        {
            "name": f"wal.{impl}.{policy}.{api}",
            "kind": "wal",
            "impl": impl,
            "policy": policy,
            "api": api,
            "n": counts[policy],
            "size": size,
            "dir": os.path.abspath(directory),
        }
        for policy in policies
        for api in apis
        for impl in impls
    ]
    res = R.run_cases(cases, pyperf_json, quick=quick, pyperf_args=pyperf_args)
    rows = []
    for c in cases:
        med, lo, hi = res[c["name"]].rate()
        rows.append(
            {
                "impl": c["impl"],
                "policy": c["policy"],
                "api": c["api"],
                "n": c["n"],
                "size": size,
                "records_per_s": med,
                "min": lo,
                "max": hi,
            }
        )
    from harness.results.meta import collect

    meta = collect(
        parameters={
            "bench": "wal",
            "impls": list(impls),
            "policies": list(policies),
            "apis": list(apis),
            "quick": quick,
            "size": size,
            "dir": os.path.abspath(directory),
            "pyperf_args": list(pyperf_args),
        }
    )
    return {"rows": rows, "pyperf_json": str(pyperf_json), "meta": meta}


def markdown(result) -> str:
    """policy | api | Python | Rust | Rust/Python, rates as median (slowest–fastest)."""
    by = {(r["impl"], r["policy"], r["api"]): r for r in result["rows"]}
    keys = sorted(
        {(r["policy"], r["api"]) for r in result["rows"]},
        key=lambda k: (POLICIES.index(k[0]), k[1] != "per_record"),
    )
    lines = [
        "| fsync | api | Python (records/s) | Rust (records/s) | Rust / Python |",
        "|---|---|---:|---:|---:|",
    ]
    for policy, api in keys:
        py, rs = by.get(("python", policy, api)), by.get(("rust", policy, api))
        cell = lambda r: "–" if r is None else R.fmt_spread(r["records_per_s"], r["min"], r["max"])
        ratio = (
            "–"
            if not (py and rs)
            else f"{rs['records_per_s'] / py['records_per_s']:.1f}x ({rs['min'] / py['max']:.1f}–{rs['max'] / py['min']:.1f})"
        )
        lines.append(f"| {policy} | {api} | {cell(py)} | {cell(rs)} | {ratio} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    R.add_common_arguments(p)
    p.add_argument(
        "--policy", action="append", choices=POLICIES, help="fsync policies (repeatable); default all"
    )
    p.add_argument("--api", action="append", choices=["per_record", "batch"], help="default both")
    p.add_argument("--size", type=int, default=256, help="payload bytes per record (default 256)")
    p.add_argument("--dir", default=None, help="where the WAL files go (default: system temp dir)")


def run(args: argparse.Namespace) -> int:
    pj = R.pyperf_path(args, "gatewaylab-bench-wal.pyperf.json")
    result = measure(
        R.impls_from(args),
        tuple(args.policy or POLICIES),
        tuple(args.api or ("per_record", "batch")),
        args.quick,
        args.size,
        args.dir,
        pj,
        R.pyperf_extra(args),
    )
    return R.emit(args, result, markdown, pj)
