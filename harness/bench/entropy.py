"""`gatewaylab bench entropy`: per-call cost of `entropy_millibits` per twin on two
chat-completion bodies: `text` (300 whitespace tokens, the text branch) and `logprobs`
(100 positions x 5 top_logprobs). Parsing the JSON is part of the cost, as in the gateway.

JSON (`--json OUT`):
    {"rows": [{"impl", "case", "body_bytes", "ns_per_call", "min", "max"}, ...], "pyperf_json": PATH, "meta": {...}}
"""

from __future__ import annotations

import argparse

from harness.bench import _runner as R

CASES = ("text", "logprobs")


def measure(
    impls=("python", "rust"),
    cases=CASES,
    quick: bool = False,
    pyperf_json="entropy.pyperf.json",
    pyperf_args=(),
) -> dict:
    if "rust" in impls:
        R.require_release()
    from harness.bench._worker import entropy_body

    specs = [
        {"name": f"entropy.{impl}.{case}", "kind": "entropy", "impl": impl, "case": case}
        for case in cases
        for impl in impls
    ]
    res = R.run_cases(specs, pyperf_json, quick=quick, pyperf_args=pyperf_args)
    rows = []
    for c in specs:
        s = res[c["name"]]
        rows.append(
            {
                "impl": c["impl"],
                "case": c["case"],
                "body_bytes": len(entropy_body(c["case"])),
                "ns_per_call": s.median * 1e9,
                "min": s.min * 1e9,
                "max": s.max * 1e9,
            }
        )
    from harness.results.meta import collect

    meta = collect(
        parameters={
            "bench": "entropy",
            "impls": list(impls),
            "cases": list(cases),
            "quick": quick,
            "pyperf_args": list(pyperf_args),
        }
    )
    return {"rows": rows, "pyperf_json": str(pyperf_json), "meta": meta}


def markdown(result) -> str:
    by = {(r["impl"], r["case"]): r for r in result["rows"]}
    lines = [
        "| body | bytes | Python per call | Rust per call | Python / Rust |",
        "|---|---:|---:|---:|---:|",
    ]
    for case in [c for c in CASES if any(r["case"] == c for r in result["rows"])]:
        py, rs = by.get(("python", case)), by.get(("rust", case))
        size = (py or rs)["body_bytes"]
        cell, ratio = R.twin_cost_cell, R.twin_cost_ratio(py, rs)
        lines.append(f"| {case} | {size:,} | {cell(py)} | {cell(rs)} | {ratio} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    R.add_common_arguments(p)
    p.add_argument("--case", action="append", choices=CASES, help="bodies (repeatable); default both")


def run(args: argparse.Namespace) -> int:
    pj = R.pyperf_path(args, "gatewaylab-bench-entropy.pyperf.json")
    result = measure(R.impls_from(args), tuple(args.case or CASES), args.quick, pj, R.pyperf_extra(args))
    return R.emit(args, result, markdown, pj)
