"""`gatewaylab bench mmr`: MMR append throughput, the seed's headline table, and how far
the Rust twin is from the SHA-256 bound.

Leaves/s at N = 100, 1k, 10k, 100k for: the Python twin per leaf, the Rust twin per leaf,
the Rust twin batch (`append_many`, GIL released). Leaves are made as in the seed,
`sha256(i.to_bytes(8, "big")).digest()`, with a fresh MMR per run. In the same pyperf run:
the SHA-256 bound, `gateway._native.sha256_many(leaves)` (only the leaf hashing, sha2 in
Rust, GIL released) -- leaves/s if the MMR cost nothing but hashing the leaves.

JSON (`--json OUT`):
    {"rows": [{"impl": "python"|"rust", "api": "per_leaf"|"batch", "n", "leaves_per_s", "min", "max"}, ...],
     "sha256_bound_leaves_per_s": X,          # at the largest N
     "sha256_bound": [{"n", "leaves_per_s", "min", "max"}, ...],
     "pyperf_json": PATH, "meta": {...}}
leaves_per_s is the median over every pyperf value; min/max are the slowest/fastest value.
A debug build of the extension is refused.
"""

from __future__ import annotations

import argparse

from harness.bench import _runner as R

NS = (100, 1_000, 10_000, 100_000)
QUICK_NS = (100, 1_000)


def measure(
    impls=("python", "rust"), ns=None, quick: bool = False, pyperf_json="mmr.pyperf.json", pyperf_args=()
) -> dict:
    """Run the benchmark (pyperf subprocess) and return the JSON-shaped result."""
    R.require_release()
    ns = tuple(ns or (QUICK_NS if quick else NS))
    cases = []
    for n in ns:
        for impl in impls:
            cases.append(
                {"name": f"mmr.{impl}.per_leaf.n{n}", "kind": "mmr", "impl": impl, "api": "per_leaf", "n": n}
            )
            if impl == "rust":
                cases.append(
                    {"name": f"mmr.rust.batch.n{n}", "kind": "mmr", "impl": "rust", "api": "batch", "n": n}
                )
        cases.append({"name": f"sha256_bound.n{n}", "kind": "sha256_bound", "n": n})
    res = R.run_cases(cases, pyperf_json, quick=quick, pyperf_args=pyperf_args)
    rows, bound = [], []
    for c in cases:
        med, lo, hi = res[c["name"]].rate()
        if c["kind"] == "mmr":
            rows.append(
                {"impl": c["impl"], "api": c["api"], "n": c["n"], "leaves_per_s": med, "min": lo, "max": hi}
            )
        else:
            bound.append({"n": c["n"], "leaves_per_s": med, "min": lo, "max": hi})
    from harness.results.meta import collect

    meta = collect(
        parameters={
            "bench": "mmr",
            "impls": list(impls),
            "ns": list(ns),
            "quick": quick,
            "pyperf_args": list(pyperf_args),
        }
    )
    return {
        "rows": rows,
        "sha256_bound_leaves_per_s": max(bound, key=lambda b: b["n"])["leaves_per_s"],
        "sha256_bound": bound,
        "pyperf_json": str(pyperf_json),
        "meta": meta,
    }


def _row(result, impl, api, n):
    for r in result["rows"]:
        if (r["impl"], r["api"], r["n"]) == (impl, api, n):
            return r
    return None


def _ratio(a, b) -> str:
    if a is None or b is None:
        return "–"
    return (
        f"{a['leaves_per_s'] / b['leaves_per_s']:.1f}x ({a['min'] / b['max']:.1f}–{a['max'] / b['min']:.1f})"
    )


def _rate(r) -> str:
    return "–" if r is None else R.fmt_spread(r["leaves_per_s"], r["min"], r["max"])


def ratios(result) -> dict:
    """Headline figures at the largest N: rust/python per leaf, batch/python, batch share of the bound."""
    n = max(r["n"] for r in result["rows"])
    py, rs, rb = (
        _row(result, "python", "per_leaf", n),
        _row(result, "rust", "per_leaf", n),
        _row(result, "rust", "batch", n),
    )
    bound = next(b for b in result["sha256_bound"] if b["n"] == n)
    out = {"n": n}
    if py and rs:
        out["rust_over_python_per_leaf"] = rs["leaves_per_s"] / py["leaves_per_s"]
    if py and rb:
        out["batch_over_python"] = rb["leaves_per_s"] / py["leaves_per_s"]
    if rb:
        out["batch_share_of_sha256_bound"] = rb["leaves_per_s"] / bound["leaves_per_s"]
    return out


def gate_metrics(result) -> dict[str, dict]:
    """The ratios notebook 01 records for its CI gates (data/baselines/01_mmr_speedup.json),
    at the largest N, each as `harness.notebooks.metric` (median ratio, and the widest ratio
    the two spreads allow). One definition, used by the notebook and by the gate tests."""
    from harness.notebooks import metric

    n = max(r["n"] for r in result["rows"])
    trip = lambda r: (r["leaves_per_s"], r["min"], r["max"])  # noqa: E731
    py, rs, rb = (
        trip(_row(result, *k, n)) for k in (("python", "per_leaf"), ("rust", "per_leaf"), ("rust", "batch"))
    )
    bd = trip(next(b for b in result["sha256_bound"] if b["n"] == n))

    def ratio(a, b):  # (median, min, max): a.min/b.max .. a.max/b.min
        return a[0] / b[0], a[1] / b[2], a[2] / b[1]

    return {
        "mmr_per_leaf_speedup": metric(*ratio(rs, py), desc=f"Rust/Python leaves/s, per-leaf API, N={n}"),
        "mmr_batch_speedup": metric(
            *ratio(rb, py), desc=f"Rust append_many / Python per-leaf leaves/s, N={n}"
        ),
        "mmr_batch_over_per_leaf": metric(
            *ratio(rb, rs), desc=f"Rust append_many / Rust per-leaf leaves/s, N={n}"
        ),
        "mmr_batch_share_of_bound": metric(*ratio(rb, bd), desc=f"Rust append_many / SHA-256 bound, N={n}"),
        "mmr_python_share_of_bound": metric(*ratio(py, bd), desc=f"Python per-leaf / SHA-256 bound, N={n}"),
    }


def markdown(result) -> str:
    """The seed-style table (N | Python | Rust | speedup | Rust batch | batch speedup), with
    spread: rates as median (slowest–fastest), ratios as median (worst–best pairing)."""
    ns = sorted({r["n"] for r in result["rows"]})
    bound = {b["n"]: b for b in result["sha256_bound"]}
    lines = [
        "| N | Python (leaves/s) | Rust (leaves/s) | speedup | Rust batch (leaves/s) | batch speedup | SHA-256 bound (leaves/s) | batch / bound |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in ns:
        py, rs, rb = (
            _row(result, "python", "per_leaf", n),
            _row(result, "rust", "per_leaf", n),
            _row(result, "rust", "batch", n),
        )
        b = bound.get(n)
        share = f"{rb['leaves_per_s'] / b['leaves_per_s']:.0%}" if rb and b else "–"
        lines.append(
            f"| {n:,} | {_rate(py)} | {_rate(rs)} | {_ratio(rs, py)} | {_rate(rb)} | {_ratio(rb, py)} | "
            f"{_rate(b)} | {share} |"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    R.add_common_arguments(p)
    p.add_argument("--n", type=int, action="append", help="leaf counts (repeatable); default 100,1k,10k,100k")


def run(args: argparse.Namespace) -> int:
    pj = R.pyperf_path(args, "gatewaylab-bench-mmr.pyperf.json")
    result = measure(R.impls_from(args), args.n, args.quick, pj, R.pyperf_extra(args))
    return R.emit(args, result, markdown, pj)
