"""`gatewaylab bench hash`: per-call cost of `sha256_hex` per twin, at body sizes from a
short prompt to a large response (64 B, 1 KiB, 64 KiB, 1 MiB).

JSON (`--json OUT`):
    {"rows": [{"impl", "size", "ns_per_call", "min", "max", "mb_per_s"}, ...], "pyperf_json": PATH, "meta": {...}}
ns_per_call is the median; min/max are the fastest/slowest pyperf value.
"""

from __future__ import annotations

import argparse

from harness.bench import _runner as R

SIZES = (64, 1024, 65536, 1 << 20)
QUICK_SIZES = (64, 65536)


def measure(
    impls=("python", "rust"), sizes=None, quick: bool = False, pyperf_json="hash.pyperf.json", pyperf_args=()
) -> dict:
    if "rust" in impls:
        R.require_release()
    sizes = tuple(sizes or (QUICK_SIZES if quick else SIZES))
    cases = [
        {"name": f"hash.{impl}.{size}", "kind": "hash", "impl": impl, "size": size}
        for size in sizes
        for impl in impls
    ]
    res = R.run_cases(cases, pyperf_json, quick=quick, pyperf_args=pyperf_args)
    rows = []
    for c in cases:
        s = res[c["name"]]
        rows.append(
            {
                "impl": c["impl"],
                "size": c["size"],
                "ns_per_call": s.median * 1e9,
                "min": s.min * 1e9,
                "max": s.max * 1e9,
                "mb_per_s": c["size"] / s.median / 1e6,
            }
        )
    from harness.results.meta import collect

    meta = collect(
        parameters={
            "bench": "hash",
            "impls": list(impls),
            "sizes": list(sizes),
            "quick": quick,
            "pyperf_args": list(pyperf_args),
        }
    )
    return {"rows": rows, "pyperf_json": str(pyperf_json), "meta": meta}


def markdown(result) -> str:
    by = {(r["impl"], r["size"]): r for r in result["rows"]}
    lines = ["| bytes | Python per call | Rust per call | Python / Rust |", "|---:|---:|---:|---:|"]
    for size in sorted({r["size"] for r in result["rows"]}):
        py, rs = by.get(("python", size)), by.get(("rust", size))
        cell, ratio = R.twin_cost_cell, R.twin_cost_ratio(py, rs)
        lines.append(f"| {size:,} | {cell(py)} | {cell(rs)} | {ratio} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    R.add_common_arguments(p)
    p.add_argument("--size", type=int, action="append", help="body sizes in bytes (repeatable)")


def run(args: argparse.Namespace) -> int:
    pj = R.pyperf_path(args, "gatewaylab-bench-hash.pyperf.json")
    result = measure(R.impls_from(args), args.size, args.quick, pj, R.pyperf_extra(args))
    return R.emit(args, result, markdown, pj)
