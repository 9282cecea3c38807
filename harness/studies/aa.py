"""Does `compare` raise false alarms, and does it catch a real slowdown? (A/A and A/B pairs)

    python -m harness.studies.aa --pairs 20 --slowdown 0.2 --out data/runs/aa     # the study (about 40 min)
    python -m harness.studies.aa --protocol sequential ...                        # A's whole sweep, then B's
    from harness.studies.aa import study; res = study(pairs=2, slowdown=0.2)     # tests: a small size

Each pair compares A with B on a small sweep (`SIZE`: one rung, three concurrencies, three
repeats, short windows) with `harness.results.stats.compare_tables` at its defaults, direct baselines
included. By default the pair is interleaved -- A and B alternate one repeat at a time and
each side's repeats are pooled -- because on a shared machine the swings are between runs,
not between repeats (docs/peers.md); `--protocol sequential` runs A's sweep, then B's.
- A/A: the same build twice. Every flagged metric is a false alarm.
- A/B: B runs with an injected slowdown: `GATEWAYLAB_INJECT_DELAY_US` (gateway/probes.py: each
  task on the gateway's loop busy-waits that long holding the GIL), calibrated once so that
  throughput at the top concurrency drops by `slowdown` (20%: each request costs 1.25x the
  CPU). A pair is detected when a primary metric (`rps`, `cpu_us_per_req`, `lat_p50_us`) is
  flagged worse and none is flagged better. The slowdown actually realised
  (B/A req/s per pair) is reported beside the rates, so the 20% is measured, not assumed.

Results: `aa.json` in `out` with every pair's verdicts, and the two rates.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Saturated concurrencies only: at c = 1 the gateway's CPU per request is dominated by idle
# wake-ups and swings +-30% between runs on a shared box (a first study with c = 1, 8 caught
# almost nothing); from c = 4 up each request's cost is what the cell measures.
SIZE = dict(
    modes=("py+rs",),
    concurrency=(4, 8, 16),
    duration_s=0.6,
    warmup_s=0.2,
    repeat=3,
    gil=False,
    capacity=False,
    report=False,
    progress=False,
    profile="xeon-4c",
)
KNOB = "GATEWAYLAB_INJECT_DELAY_US"


def _sweep(out: Path, name: str, env: dict[str, str] | None = None, **size: Any):
    from harness.infra.sweep import run_sweep

    res = run_sweep(out=out, name=name, env=env, **{**SIZE, **size})
    if res.partial:  # a sweep turns SIGTERM/Ctrl-C into a partial run; the study stops with it
        raise KeyboardInterrupt(f"sweep {name} interrupted")
    return res


def _top(table, col: str) -> float:
    ok = table[(table["status"] == "ok") & (table["concurrency"] == table["concurrency"].max())]
    return float(ok[col].median())


PRIMARY = ("rps", "cpu_us_per_req", "lat_p50_us")


def detected(flagged: dict[str, str]) -> bool:
    """A slowdown is caught when a primary metric says worse and no primary metric says
    better. A secondary view may move either way under a real slowdown: the injected delay
    busy-waits holding the GIL, which changes who waits for it (one pair of the 2026-12-01
    study flagged GIL-wait p99 better beside CPU per request 1.33x worse)."""
    return any(flagged.get(m) == "worse" for m in PRIMARY) and not any(
        flagged.get(m) == "better" for m in PRIMARY
    )


def calibrate(out: Path, slowdown: float, probe_us: int = 200, **size: Any) -> dict[str, float]:
    """The per-task delay that makes each request cost 1/(1-slowdown) times the CPU at the top
    concurrency: measured from a plain sweep and one with a probe delay. The probe is large
    (200 µs per task, about twice a request's own CPU) so the CPU it adds stands well clear of
    the run-to-run noise; a 40 µs probe misjudged the delayed tasks per request 5x."""
    base = _sweep(out, "calib-base", **size).table
    probe = _sweep(out, "calib-probe", env={KNOB: str(probe_us)}, **size).table
    cpu0, cpu1 = _top(base, "cpu_us_per_req"), _top(probe, "cpu_us_per_req")
    tasks = max((cpu1 - cpu0) / probe_us, 0.25)  # delayed tasks per request
    extra = cpu0 * (1 / (1 - slowdown) - 1)
    return {"cpu_us_per_req": cpu0, "tasks_per_req": tasks, "delay_us": max(1, round(extra / tasks))}


PROTOCOLS = ("sequential", "interleaved")


def _pair(root: Path, tag: str, env_b: dict[str, str] | None, protocol: str, **size: Any):
    """One comparison: (verdicts, A cells, B cells). `sequential`: sweep A (all its repeats),
    then sweep B. `interleaved`: A and B alternate one repeat at a time (A B A B A B), and each
    side's repeats are pooled (`harness.results.stats.pool_repeats`), so a machine that drifts during the
    pair moves both sides alike -- `gatewaylab compare A1,A2,A3 B1,B2,B3` reads runs made so."""
    from harness.results.stats import compare_tables, pool_repeats

    if protocol == "sequential":
        ra, rb = _sweep(root, f"{tag}-a", **size), _sweep(root, f"{tag}-b", env=env_b, **size)
        a, b, ba, bb = ra.table, rb.table, ra.baseline, rb.baseline
        dirs = ([str(ra.dir)], [str(rb.dir)])
    else:
        rounds = int(size.pop("repeat", SIZE["repeat"]))
        sa, sb = [], []
        for r in range(rounds):
            sa.append(_sweep(root, f"{tag}-a{r}", repeat=1, **size))
            sb.append(_sweep(root, f"{tag}-b{r}", env=env_b, repeat=1, **size))
        a, b = pool_repeats([x.table for x in sa]), pool_repeats([x.table for x in sb])
        ba, bb = pool_repeats([x.baseline for x in sa]), pool_repeats([x.baseline for x in sb])
        dirs = ([str(x.dir) for x in sa], [str(x.dir) for x in sb])
    verdicts, _ = compare_tables(a, b, base_a=ba, base_b=bb)
    return verdicts, a, b, dirs


def study(
    pairs: int = 20,
    slowdown: float = 0.2,
    out: str | Path | None = None,
    log=print,
    protocol: str = "interleaved",
    **size: Any,
) -> dict[str, Any]:
    from harness.results.runs import runs_root

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    root = (
        Path(out) if out is not None else runs_root(None) / time.strftime("%Y%m%dT%H%M%SZ-aa", time.gmtime())
    )
    root.mkdir(parents=True, exist_ok=True)
    cal = calibrate(root, slowdown, **size)
    log(f"calibration: {cal}")
    env_slow = {KNOB: str(int(cal["delay_us"]))}
    result: dict[str, Any] = {
        "size": {**SIZE, **size},
        "slowdown": slowdown,
        "protocol": protocol,
        "calibration": cal,
        "aa": [],
        "ab": [],
    }
    for i in range(pairs):
        for kind, env in (("aa", None), ("ab", env_slow)):
            verdicts, a, b, dirs = _pair(root, f"{kind}{i:02d}", env, protocol, **size)
            flagged = {v.metric: v.verdict for v in verdicts if v.flagged}
            rec = {
                "pair": i,
                "flagged": flagged,
                "rps_ratio": _top(b, "rps") / _top(a, "rps"),
                "cpu_ratio": _top(b, "cpu_us_per_req") / _top(a, "cpu_us_per_req"),
                "factors": {v.metric: v.factor for v in verdicts},
                "runs_a": dirs[0],
                "runs_b": dirs[1],
            }  # `gatewaylab compare` re-reads them
            result[kind].append(rec)
            (root / "aa.json").write_text(
                json.dumps({**result, "partial": True}, indent=2)
            )  # readable if stopped
            log(f"{kind} {i:02d}: rps B/A {rec['rps_ratio']:.3f}; flagged {flagged or 'nothing'}")
    result["false_alarms"] = sum(len(r["flagged"]) for r in result["aa"])
    result["false_alarm_pairs"] = sum(bool(r["flagged"]) for r in result["aa"])
    result["detected"] = sum(detected(r["flagged"]) for r in result["ab"])
    result["detection_rate"] = result["detected"] / pairs if pairs else float("nan")
    result["realised_slowdown_median"] = (
        1 - statistics.median(r["rps_ratio"] for r in result["ab"]) if pairs else None
    )
    result["realised_cpu_ratio_median"] = (
        statistics.median(r["cpu_ratio"] for r in result["ab"]) if pairs else None
    )
    (root / "aa.json").write_text(json.dumps(result, indent=2))
    log(
        f"A/A ({protocol}): {result['false_alarms']} flagged metric(s) over {pairs} pairs; "
        f"A/B ({slowdown:.0%} injected, {result['realised_slowdown_median']:.1%} realised): "
        f"{result['detected']}/{pairs} detected"
    )
    return result


FACTOR_MARGIN = 0.05


def derive_factors(
    result: dict[str, Any], margin: float = FACTOR_MARGIN, floor: float | None = None
) -> dict[str, float]:
    """compare's per-metric factors from a study's A/A pairs: the largest A/A move of each
    metric's geometric-mean factor (either way), widened by `margin`, never below `floor`
    (harness.results.stats.DEFAULT_FACTOR), rounded up to 0.01. A change must move a metric further
    than two runs of the same build moved it (data/aa/ holds the study the defaults come from)."""
    from harness.results.stats import DEFAULT_FACTOR, METRICS

    floor = DEFAULT_FACTOR if floor is None else floor
    widest: dict[str, float] = {}
    for rec in result["aa"]:
        for m, f in rec["factors"].items():
            if f is not None and f > 0 and not math.isnan(f):
                widest[m] = max(widest.get(m, 1.0), f, 1 / f)
    return {m: max(floor, math.ceil(widest.get(m, 1.0) * (1 + margin) * 100 - 1e-9) / 100) for m in METRICS}


def reanalyse(aa_json: str | Path, log=print) -> dict[str, Any]:
    """Compare a finished study's recorded runs again with `compare`'s current defaults (the
    runs are kept, so a change to the statistics is checked on the same measurements)."""
    from harness.commands.compare import compare_runs

    res = json.loads(Path(aa_json).read_text())
    out: dict[str, Any] = {"study": str(aa_json), "aa": [], "ab": []}
    for kind in ("aa", "ab"):
        for rec in res[kind]:
            verdicts, _ = compare_runs(rec["runs_a"], rec["runs_b"])
            out[kind].append(
                {"pair": rec["pair"], "flagged": {v.metric: v.verdict for v in verdicts if v.flagged}}
            )
    n = len(out["aa"])
    out["false_alarms"] = sum(len(r["flagged"]) for r in out["aa"])
    out["detected"] = sum(detected(r["flagged"]) for r in out["ab"])
    log(
        f"A/A: {out['false_alarms']} flagged metric(s) over {n} pairs; A/B: {out['detected']}/{len(out['ab'])} detected"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.studies.aa", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--slowdown", type=float, default=0.2)
    p.add_argument("--out", default=None)
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="interleaved",
        help="interleaved: A and B alternate one repeat at a time (default); sequential: A's sweep, then B's",
    )
    p.add_argument(
        "--reanalyse",
        metavar="AA_JSON",
        default=None,
        help="do not measure: compare a finished study's runs again with the current defaults",
    )
    args = p.parse_args(argv)
    if args.reanalyse:
        reanalyse(args.reanalyse)
        return 0
    study(args.pairs, args.slowdown, args.out, protocol=args.protocol)
    return 0


if __name__ == "__main__":
    sys.exit(main())
