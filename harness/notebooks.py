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

Baselines: one file per notebook, `data/baselines/<notebook>.json`:

    {"notebook": "01_mmr_speedup",
     "checks": [{"metric": "<name>", "op": ">=" | "<=", "threshold": 2.0,
                 "measured": [...values seen when the floor was set...], "why": "..."}]}

Only ratios are checked (never absolute times). A failure names the notebook, the metric,
the value and the threshold, and the process exits non-zero.
"""
from __future__ import annotations

import argparse
import json
import math
import operator
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXECUTED_DIR = NOTEBOOK_DIR / "executed"
BASELINE_DIR = ROOT / "data" / "baselines"
RUNS_DIR = ROOT / "data" / "runs"
KERNEL_NAME = "gatewaylab"
METRICS_FILE = "metrics.json"
SCHEMA = "gatewaylab.notebook-metrics/1"

NOTEBOOKS = (
    "01_mmr_speedup",
    "02_spawn_cost",
    "03_concurrency_knee",
    "04_flamegraphs",
    "05_fast_vs_slow_upstream",
    "06_component_ablation",
    "08_peers",
)

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


# --- results written by the notebooks ---------------------------------------------------

def metric(value: float, lo: float | None = None, hi: float | None = None, unit: str = "ratio", desc: str = "") -> dict:
    """One metric entry: a value with its spread (min/max over repeats)."""
    return {"value": float(value), "min": float(value if lo is None else lo), "max": float(value if hi is None else hi),
            "unit": unit, "desc": desc}


def write_metrics(run_dir: Path | str, notebook: str, profile: str, metrics: Mapping[str, Mapping[str, Any] | float]) -> Path:
    """Write `run_dir/metrics.json`; bare numbers are accepted as `metric(value)`."""
    norm = {k: (dict(v) if isinstance(v, Mapping) else metric(v)) for k, v in metrics.items()}
    for k, v in norm.items():
        if not isinstance(v.get("value"), (int, float)) or not math.isfinite(v["value"]):
            raise ValueError(f"{notebook}: metric {k!r} has no finite value: {v!r}")
    p = Path(run_dir) / METRICS_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"schema": SCHEMA, "notebook": notebook, "profile": profile, "metrics": norm},
                            indent=2, sort_keys=True))
    return p


def load_metrics(run_dir: Path | str) -> dict:
    p = Path(run_dir) / METRICS_FILE
    data = json.loads(p.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{p}: schema {data.get('schema')!r}, expected {SCHEMA!r}")
    return data


# --- the baseline check ------------------------------------------------------------------

@dataclass
class Check:
    notebook: str
    metric: str
    value: float | None
    op: str
    threshold: float
    ok: bool
    note: str = ""

    def message(self) -> str:
        if self.value is None:
            return f"FAIL {self.notebook}: metric {self.metric!r} missing ({self.note})"
        verdict = "ok  " if self.ok else "FAIL"
        return (f"{verdict} {self.notebook}: {self.metric} = {self.value:.4g}, "
                f"threshold {self.op} {self.threshold:.4g}" + (f" ({self.note})" if self.note else ""))


def load_baselines(baseline_dir: Path | str = BASELINE_DIR) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in sorted(Path(baseline_dir).glob("*.json")):
        data = json.loads(p.read_text())
        nb = data.get("notebook") or p.stem
        for c in data.get("checks", []):
            if c.get("op") not in OPS:
                raise ValueError(f"{p}: check {c.get('metric')!r} has op {c.get('op')!r}; expected one of {list(OPS)}")
            if not isinstance(c.get("threshold"), (int, float)):
                raise ValueError(f"{p}: check {c.get('metric')!r} has no numeric threshold")
        out[nb] = list(data.get("checks", []))
    return out


def check_results(results_root: Path | str, baseline_dir: Path | str = BASELINE_DIR,
                  notebooks: Iterable[str] | None = None) -> list[Check]:
    """Compare `results_root/<notebook>/metrics.json` with the baselines, one Check per threshold."""
    baselines = load_baselines(baseline_dir)
    wanted = list(notebooks) if notebooks is not None else list(baselines)
    checks: list[Check] = []
    for nb in wanted:
        for c in baselines.get(nb, []):
            name, op, thr = c["metric"], c["op"], float(c["threshold"])
            try:
                metrics = load_metrics(Path(results_root) / nb)["metrics"]
            except (OSError, ValueError) as e:
                checks.append(Check(nb, name, None, op, thr, False, f"no results: {e}"))
                continue
            if name not in metrics:
                checks.append(Check(nb, name, None, op, thr, False, f"not in {nb}/{METRICS_FILE}"))
                continue
            v = float(metrics[name]["value"])
            checks.append(Check(nb, name, v, op, thr, bool(OPS[op](v, thr)), metrics[name].get("desc", "")))
    return checks


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
        pm.execute_notebook(str(src), str(dst), parameters={"profile": profile, "run_dir": str(run_dir), "live_panel": False},
                            kernel_name=kernel, cwd=str(NOTEBOOK_DIR), progress_bar=False,
                            execution_timeout=timeout_s, log_output=False)
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
        out.append(_table([[r.notebook, f"{r.seconds:.1f}", "ok" if r.ok else "FAILED"] for r in runs],
                          ["notebook", "seconds", "executed"]))
        out.append("")
    if checks:
        rows = [[c.notebook, c.metric, "missing" if c.value is None else f"{c.value:.4g}", f"{c.op} {c.threshold:.4g}",
                 "ok" if c.ok else "FAIL"] for c in checks]
        out.append(_table(rows, ["notebook", "metric", "value", "threshold", "result"]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.notebooks", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="ci", choices=["ci", "full"])
    p.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run only these notebooks")
    p.add_argument("--check-only", metavar="RESULTS_ROOT", help="do not run; check recorded results in this folder")
    p.add_argument("--baselines", default=str(BASELINE_DIR))
    p.add_argument("--out", help="results root (default data/runs/<UTC time>-notebooks-<profile>)")
    p.add_argument("--kernel", default=None, help=f"kernel name (default: ensure '{KERNEL_NAME}' -> this python)")
    p.add_argument("--timeout", type=int, default=900, help="per-cell timeout in seconds")
    args = p.parse_args(argv)
    names = list(args.only or NOTEBOOKS)

    t0 = time.perf_counter()
    runs: list[NotebookRun] = []
    if args.check_only:
        root = Path(args.check_only)
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        root = Path(args.out) if args.out else RUNS_DIR / f"{stamp}-notebooks-{args.profile}"
        root.mkdir(parents=True, exist_ok=True)
        kernel = args.kernel or ensure_kernel()
        for nb in names:
            print(f"[notebooks] running {nb} (profile={args.profile}) ...", flush=True)
            r = run_notebook(nb, args.profile, root / nb, kernel, args.timeout)
            print(f"[notebooks] {nb}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.1f} s" + (f": {r.error}" if r.error else ""),
                  flush=True)
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
        (root / "notebooks-summary.json").write_text(json.dumps({
            "profile": args.profile, "total_seconds": total,
            "runs": [vars(r) for r in runs], "checks": [vars(c) for c in checks]}, indent=2))
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
