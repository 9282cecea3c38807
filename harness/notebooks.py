"""Run the notebooks with papermill and check their results against `data/baselines/`.

    python -m harness.notebooks --profile ci                 # what `make test` runs
    python -m harness.notebooks --only 01_mmr_speedup        # one notebook
    python -m harness.notebooks --check-only data/runs/X     # re-check recorded results

Each notebook gets two papermill parameters, `profile` and `run_dir`; it writes its
results to `run_dir` and, last, `run_dir/metrics.json` (format below, written with
`write_metrics`). Executed copies go to `notebooks/executed/` (git-ignored).

metrics.json (schema `gatewaylab.notebook-metrics/1`):

    {"schema": "gatewaylab.notebook-metrics/1", "notebook": "01_mmr_speedup", "profile": "ci",
     "metrics": {"<name>": {"value": 3.1, "min": 2.9, "max": 3.3, "unit": "ratio", "desc": "..."}}}

Baselines (data/baselines/, explained in its README): one file per notebook with its gates,

    {"notebook": "01_mmr_speedup",
     "checks": [{"metric": "<name>", "op": ">=" | "<=", "rule": "advantage" | "cost" | "exact",
                 "neutral": 1.0, "threshold": 2.0, "why": "..."}]}

and one file per recorded ci run, `data/baselines/runs/<UTC time>.json` (written by
`--record`): the metrics of every notebook of that run, the load average and the commit.
Thresholds are derived from the recorded runs by one rule (`derive_threshold`), and a test
checks that the committed thresholds are the derived ones. `--derive` prints them, and the
leave-one-out false-alarm count over the recorded runs.

Only ratios are checked (never absolute times). A failure names the notebook, the metric,
the value, the threshold and the runs it is compared with, and the process exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXECUTED_DIR = NOTEBOOK_DIR / "executed"
BASELINE_DIR = ROOT / "data" / "baselines"
RUNS_DIR = ROOT / "data" / "runs"
KERNEL_NAME = "gatewaylab"
METRICS_FILE = "metrics.json"
SCHEMA = "gatewaylab.notebook-metrics/1"

RECORDED_RUNS_DIR = BASELINE_DIR / "runs"
RUN_SCHEMA = "gatewaylab.notebook-run/1"

# The notebooks `--profile ci` runs, in order. Each is notebooks/<name>.py (jupytext
# py:percent, the source) paired with notebooks/<name>.ipynb (what papermill executes).
NOTEBOOKS = [
    "01_mmr_speedup",
    "02_spawn_cost",
    "03_concurrency_knee",
    "04_flamegraphs",
    "05_fast_vs_slow_upstream",
    "06_component_ablation",
    "07_rust_ladder",
    "08_peers",
    "09_scale_out",
    "10_router_and_tracing",
    "11_interpreters",
]

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


# --- results written by the notebooks ---------------------------------------------------


def metric(
    value: float, lo: float | None = None, hi: float | None = None, unit: str = "ratio", desc: str = ""
) -> dict:
    """One metric entry: a value with its spread (min/max over repeats)."""
    return {
        "value": float(value),
        "min": float(value if lo is None else lo),
        "max": float(value if hi is None else hi),
        "unit": unit,
        "desc": desc,
    }


def write_metrics(
    run_dir: Path | str, notebook: str, profile: str, metrics: Mapping[str, Mapping[str, Any] | float]
) -> Path:
    """Write `run_dir/metrics.json`; bare numbers are accepted as `metric(value)`."""
    norm = {k: (dict(v) if isinstance(v, Mapping) else metric(v)) for k, v in metrics.items()}
    for k, v in norm.items():
        if not isinstance(v.get("value"), (int, float)) or not math.isfinite(v["value"]):
            raise ValueError(f"{notebook}: metric {k!r} has no finite value: {v!r}")
    p = Path(run_dir) / METRICS_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        json.dumps(
            {"schema": SCHEMA, "notebook": notebook, "profile": profile, "metrics": norm},
            indent=2,
            sort_keys=True,
        )
    )
    return p


def load_metrics(run_dir: Path | str) -> dict:
    p = Path(run_dir) / METRICS_FILE
    data = json.loads(p.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{p}: schema {data.get('schema')!r}, expected {SCHEMA!r}")
    return data


# --- the baseline check ------------------------------------------------------------------

# How a threshold follows from the recorded runs (one rule, applied by `derive_threshold`):
#   advantage  a ratio that shows an advantage over `neutral` (1.0 = no advantage). The gate
#              sits where half of the median recorded advantage is lost, unless noise needs
#              more room: then at the noise floor (the worst recorded value with a margin).
#   cost       a ratio with no neutral point worth gating on (spawn / create_task): the
#              gate is the worst recorded value with the margin.
#   exact      a property that must hold exactly (every cell profiled): the threshold is given.
# The noise margin is itself derived, per gate: the smallest step of 5% (at least 15%) for
# which no recorded run trips the gate derived from the *other* recorded runs
# (leave-one-out). `derive_margin` computes it and the baseline file records it.
RULES = ("advantage", "cost", "exact")
MIN_MARGIN = 0.15  # the least room beyond the worst recorded value, as a fraction of it


@dataclass
class Check:
    notebook: str
    metric: str
    value: float | None
    op: str
    threshold: float
    ok: bool
    note: str = ""
    compared_with: str = ""

    def message(self) -> str:
        against = f"; compared with {self.compared_with}" if self.compared_with else ""
        if self.value is None:
            return f"FAIL {self.notebook}: metric {self.metric!r} missing ({self.note}){against}"
        verdict = "ok  " if self.ok else "FAIL"
        return (
            f"{verdict} {self.notebook}: {self.metric} = {self.value:.4g}, "
            f"threshold {self.op} {self.threshold:.4g}" + (f" ({self.note})" if self.note else "") + against
        )


def load_baselines(baseline_dir: Path | str = BASELINE_DIR) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in sorted(Path(baseline_dir).glob("*.json")):
        data = json.loads(p.read_text())
        nb = data.get("notebook") or p.stem
        for c in data.get("checks", []):
            if c.get("op") not in OPS:
                raise ValueError(
                    f"{p}: check {c.get('metric')!r} has op {c.get('op')!r}; expected one of {list(OPS)}"
                )
            if not isinstance(c.get("threshold"), (int, float)):
                raise ValueError(f"{p}: check {c.get('metric')!r} has no numeric threshold")
            if c.get("rule", "exact") not in RULES:
                raise ValueError(
                    f"{p}: check {c.get('metric')!r} has rule {c.get('rule')!r}; expected one of {list(RULES)}"
                )
        out[nb] = list(data.get("checks", []))
    return out


def load_recorded_runs(runs_dir: Path | str | None = None) -> list[dict]:
    """The recorded ci runs the thresholds are derived from, oldest first."""
    d = Path(runs_dir) if runs_dir is not None else RECORDED_RUNS_DIR
    runs = []
    for p in sorted(d.glob("*.json")):
        data = json.loads(p.read_text())
        if data.get("schema") != RUN_SCHEMA:
            raise ValueError(f"{p}: schema {data.get('schema')!r}, expected {RUN_SCHEMA!r}")
        data["file"] = p.name
        runs.append(data)
    return runs


def recorded_values(runs: list[dict], notebook: str, metric_name: str) -> list[float]:
    return [
        float(r["metrics"][notebook][metric_name]["value"])
        for r in runs
        if metric_name in r.get("metrics", {}).get(notebook, {})
    ]


def derive_threshold(check: Mapping[str, Any], values: list[float], margin: float = MIN_MARGIN) -> float:
    """The threshold `check`'s rule gives for these recorded values (see RULES above)."""
    rule, op = check.get("rule", "exact"), check["op"]
    if rule == "exact":
        return float(check["threshold"])
    if not values:
        raise ValueError(f"{check['metric']}: no recorded values to derive a threshold from")
    vs = sorted(values)
    med = vs[len(vs) // 2] if len(vs) % 2 else (vs[len(vs) // 2 - 1] + vs[len(vs) // 2]) / 2
    higher_is_better = op.startswith(">")
    noise = vs[0] * (1 - margin) if higher_is_better else vs[-1] * (1 + margin)
    if rule == "cost":
        return round(noise, 3)
    neutral = float(check["neutral"])
    half = neutral + (med - neutral) / 2
    return round(min(half, noise) if higher_is_better else max(half, noise), 3)


def _compared_with(runs: list[dict], nb: str, name: str) -> str:
    vals = recorded_values(runs, nb, name)
    if not vals:
        return ""
    vs = sorted(vals)
    med = vs[len(vs) // 2] if len(vs) % 2 else (vs[len(vs) // 2 - 1] + vs[len(vs) // 2]) / 2
    having = [r for r in runs if name in r.get("metrics", {}).get(nb, {})]  # a run may hold a subset
    first, last = having[0]["file"].removesuffix(".json"), having[-1]["file"].removesuffix(".json")
    return (
        f"{len(vals)} recorded ci runs {first}..{last} in data/baselines/runs "
        f"(median {med:.4g}, range {vs[0]:.4g}-{vs[-1]:.4g})"
    )


def check_results(
    results_root: Path | str,
    baseline_dir: Path | str = BASELINE_DIR,
    notebooks: Iterable[str] | None = None,
    runs_dir: Path | str | None = None,
) -> list[Check]:
    """Compare `results_root/<notebook>/metrics.json` with the baselines, one Check per threshold."""
    baselines = load_baselines(baseline_dir)
    rd = Path(runs_dir) if runs_dir is not None else Path(baseline_dir) / "runs"
    runs = load_recorded_runs(rd) if rd.is_dir() else []
    wanted = list(notebooks) if notebooks is not None else list(baselines)
    checks: list[Check] = []
    for nb in wanted:
        for c in baselines.get(nb, []):
            name, op, thr = c["metric"], c["op"], float(c["threshold"])
            against = _compared_with(runs, nb, name)
            try:
                metrics = load_metrics(Path(results_root) / nb)["metrics"]
            except (OSError, ValueError) as e:
                checks.append(Check(nb, name, None, op, thr, False, f"no results: {e}", against))
                continue
            if name not in metrics:
                checks.append(Check(nb, name, None, op, thr, False, f"not in {nb}/{METRICS_FILE}", against))
                continue
            v = float(metrics[name]["value"])
            checks.append(
                Check(nb, name, v, op, thr, bool(OPS[op](v, thr)), metrics[name].get("desc", ""), against)
            )
    return checks


def record_run(
    results_root: Path | str,
    runs_dir: Path | str | None = None,
    notebooks: Iterable[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Copy the metrics of one `--profile ci` run into data/baselines/runs/<stamp>.json."""
    root = Path(results_root)
    metrics = {}
    for nb in list(notebooks) if notebooks is not None else NOTEBOOKS:
        try:
            m = load_metrics(root / nb)["metrics"]
        except (OSError, ValueError):
            continue
        metrics[nb] = {k: {f: v[f] for f in ("value", "min", "max") if f in v} for k, v in sorted(m.items())}
    from harness.meta import collect

    meta = collect(parameters={"notebooks": "ci"})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(runs_dir) if runs_dir is not None else RECORDED_RUNS_DIR
    out.mkdir(parents=True, exist_ok=True)
    p = out / f"{stamp}.json"
    p.write_text(
        json.dumps(
            {
                "schema": RUN_SCHEMA,
                "stamp": stamp,
                "results": root.name,
                "git_sha": meta.get("git_sha"),
                "git_dirty": meta.get("git_dirty"),
                "cpu_model": meta.get("cpu_model"),
                "load_average_end": meta.get("load_average"),
                **dict(extra or {}),
                "metrics": metrics,
            },
            indent=1,
            sort_keys=True,
        )
    )
    return p


def write_thresholds(baseline_dir: Path | str = BASELINE_DIR, runs_dir: Path | str | None = None) -> None:
    """Set every derived threshold in the baseline files to what the recorded runs give."""
    rd = Path(runs_dir) if runs_dir is not None else Path(baseline_dir) / "runs"
    runs = load_recorded_runs(rd)
    for p in sorted(Path(baseline_dir).glob("*.json")):
        data = json.loads(p.read_text())
        for c in data.get("checks", []):
            if c.get("rule", "exact") != "exact":
                vals = recorded_values(runs, data["notebook"], c["metric"])
                c["margin"] = derive_margin(c, vals)
                c["threshold"] = derive_threshold(c, vals, c["margin"])
        p.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def loo_alarms(check: Mapping[str, Any], values: list[float], margin: float) -> int:
    """How many recorded values fail the gate derived (with `margin`) from the others."""
    if check.get("rule", "exact") == "exact":
        return sum(not OPS[check["op"]](v, float(check["threshold"])) for v in values)
    return sum(
        not OPS[check["op"]](v, derive_threshold(check, values[:i] + values[i + 1 :], margin))
        for i, v in enumerate(values)
        if len(values) > 1
    )


def derive_margin(check: Mapping[str, Any], values: list[float]) -> float:
    """The smallest margin (5% steps, from MIN_MARGIN) with no leave-one-out false alarm."""
    m = MIN_MARGIN
    while loo_alarms(check, values, m) and m < 0.95:
        m = round(m + 0.05, 2)
    return m


def derive_all(baseline_dir: Path | str = BASELINE_DIR, runs_dir: Path | str | None = None) -> list[dict]:
    """Per check: the recorded values, the derived threshold, and the leave-one-out false
    alarms (each run checked against the threshold derived from the other runs)."""
    rd = Path(runs_dir) if runs_dir is not None else Path(baseline_dir) / "runs"
    runs = load_recorded_runs(rd)
    out = []
    for nb, checks in load_baselines(baseline_dir).items():
        for c in checks:
            vals = recorded_values(runs, nb, c["metric"])
            exact = c.get("rule", "exact") == "exact"
            margin = None if exact else derive_margin(c, vals)
            thr = float(c["threshold"]) if exact else (derive_threshold(c, vals, margin) if vals else None)
            out.append(
                {
                    "notebook": nb,
                    "metric": c["metric"],
                    "op": c["op"],
                    "rule": c.get("rule", "exact"),
                    "values": vals,
                    "derived": thr,
                    "committed": float(c["threshold"]),
                    "margin": margin,
                    "committed_margin": c.get("margin"),
                    "false_alarms": sum(not OPS[c["op"]](v, float(c["threshold"])) for v in vals),
                    # leave-one-out at the least margin: how often a run would trip a gate
                    # derived from the others if the margin were not widened to prevent it
                    "loo_at_min_margin": loo_alarms(c, vals, MIN_MARGIN),
                    "runs": len(vals),
                }
            )
    return out


# --- running the notebooks ---------------------------------------------------------------


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """A kernelspec `name` whose argv is this interpreter (the .venv's python), installed
    into sys.prefix so papermill never picks up another Python."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(name)
        if spec.argv and Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return name
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name="Python (gatewaylab .venv)", prefix=sys.prefix)
    return name


@dataclass
class NotebookRun:
    notebook: str
    seconds: float
    ok: bool
    error: str = ""


def run_notebook(name: str, profile: str, run_dir: Path, kernel: str, timeout_s: int = 900) -> NotebookRun:
    import papermill as pm

    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    src = NOTEBOOK_DIR / f"{name}.ipynb"
    dst = EXECUTED_DIR / f"{name}.ipynb"
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(src),
            str(dst),
            parameters={"profile": profile, "run_dir": str(run_dir), "live_panel": False},
            kernel_name=kernel,
            cwd=str(NOTEBOOK_DIR),
            progress_bar=False,
            execution_timeout=timeout_s,
            log_output=False,
        )
        return NotebookRun(name, time.perf_counter() - t0, True)
    except Exception as e:  # papermill wraps the cell's error: name the cell and the exception
        if hasattr(e, "ename"):
            msg = f"cell In[{getattr(e, 'exec_count', '?')}]: {e.ename}: {e.evalue}"
        else:
            msg = f"{type(e).__name__}: {e}"
        return NotebookRun(name, time.perf_counter() - t0, False, msg.strip()[:800])


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summary(runs: list[NotebookRun], checks: list[Check]) -> str:
    out = []
    if runs:
        out.append(
            _table(
                [[r.notebook, f"{r.seconds:.1f}", "ok" if r.ok else "FAILED"] for r in runs],
                ["notebook", "seconds", "executed"],
            )
        )
        out.append("")
    if checks:
        rows = [
            [
                c.notebook,
                c.metric,
                "missing" if c.value is None else f"{c.value:.4g}",
                f"{c.op} {c.threshold:.4g}",
                "ok" if c.ok else "FAIL",
            ]
            for c in checks
        ]
        out.append(_table(rows, ["notebook", "metric", "value", "threshold", "result"]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.notebooks", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="ci", choices=["ci", "full"])
    p.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run only these notebooks")
    p.add_argument(
        "--check-only", metavar="RESULTS_ROOT", help="do not run; check recorded results in this folder"
    )
    p.add_argument("--baselines", default=str(BASELINE_DIR))
    p.add_argument("--out", help="results root (default data/runs/<UTC time>-notebooks-<profile>)")
    p.add_argument(
        "--kernel", default=None, help=f"kernel name (default: ensure '{KERNEL_NAME}' -> this python)"
    )
    p.add_argument("--timeout", type=int, default=900, help="per-cell timeout in seconds")
    p.add_argument(
        "--record",
        action="store_true",
        help="after the run, record its metrics in data/baselines/runs/ (to derive thresholds from)",
    )
    p.add_argument(
        "--derive",
        action="store_true",
        help="do not run; print the thresholds the recorded runs give and their false alarms",
    )
    p.add_argument(
        "--write-thresholds",
        action="store_true",
        help="with --derive: write the derived thresholds into the baseline files",
    )
    args = p.parse_args(argv)
    names = list(args.only or NOTEBOOKS)
    if args.derive:
        if args.write_thresholds:
            write_thresholds(args.baselines)
        rows = derive_all(args.baselines)
        print(
            _table(
                [
                    [
                        r["notebook"],
                        r["metric"],
                        r["rule"],
                        f"{r['op']} {r['committed']:.4g}",
                        "-" if r["derived"] is None else f"{r['derived']:.4g}",
                        "-" if r["margin"] is None else f"{r['margin']:.0%}",
                        ", ".join(f"{v:.3g}" for v in r["values"]),
                        f"{r['false_alarms']}/{r['runs']}",
                        f"{r['loo_at_min_margin']}/{r['runs']}",
                    ]
                    for r in rows
                ],
                [
                    "notebook",
                    "metric",
                    "rule",
                    "committed",
                    "derived",
                    "margin",
                    "recorded",
                    "false alarms",
                    f"LOO at {MIN_MARGIN:.0%}",
                ],
            )
        )
        return 0

    t0 = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    runs: list[NotebookRun] = []
    if args.check_only:
        root = Path(args.check_only)
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        root = Path(args.out) if args.out else RUNS_DIR / f"{stamp}-notebooks-{args.profile}"
        root.mkdir(parents=True, exist_ok=True)
        kernel = args.kernel or ensure_kernel()
        for nb in names:
            print(f"[notebooks] running {nb} (profile={args.profile}) ...", flush=True)
            r = run_notebook(nb, args.profile, root / nb, kernel, args.timeout)
            print(
                f"[notebooks] {nb}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.1f} s"
                + (f": {r.error}" if r.error else ""),
                flush=True,
            )
            runs.append(r)
    checks = check_results(root, args.baselines, names)
    total = time.perf_counter() - t0
    print()
    print(summary(runs, checks))
    failures = [r for r in runs if not r.ok] + [c for c in checks if not c.ok]
    print()
    for r in runs:
        if not r.ok:
            print(f"FAIL {r.notebook}: execution failed: {r.error}")
    for c in checks:
        if not c.ok:
            print(c.message())
    if args.check_only:
        print(f"[notebooks] checked recorded results in {root}")
    else:
        print(f"[notebooks] results in {root}; executed copies in {EXECUTED_DIR}; total {total:.1f} s")
        (root / "notebooks-summary.json").write_text(
            json.dumps(
                {
                    "profile": args.profile,
                    "total_seconds": total,
                    "runs": [vars(r) for r in runs],
                    "checks": [vars(c) for c in checks],
                },
                indent=2,
            )
        )
        if args.record:
            rec = record_run(
                root,
                notebooks=names,
                extra={
                    "total_seconds": round(total, 1),
                    "load_average_start": load_start,
                    "executed": {r.notebook: r.ok for r in runs},
                },
            )
            print(f"[notebooks] recorded this run's metrics in {rec}")
    # the closing line counts notebook executions and baseline checks together, as a test runner would
    n_ok = sum(r.ok for r in runs) + sum(c.ok for c in checks)
    if failures:
        print(f"[notebooks] {len(failures)} failure(s)")
        print(f"notebooks: {n_ok} passed, {len(failures)} failed")
        return 1
    done = f"{len(runs)} notebook(s) executed, " if runs else ""
    print(f"[notebooks] {done}{len(checks)} check(s) passed")
    print(f"notebooks: {n_ok} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
