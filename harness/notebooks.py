"""Run the notebooks with papermill and check their results against `data/baselines/`.

    python -m harness.notebooks --profile ci                 # what `make test` runs
    python -m harness.notebooks --only 01_mmr_speedup        # one notebook
    python -m harness.notebooks --check-only data/runs/X     # re-check recorded results

Each notebook gets two papermill parameters, `profile` and `run_dir`; it writes its
results to `run_dir` and, last, `run_dir/metrics.json` (format below, written with
`write_metrics`). Executed copies go to `notebooks/executed/` (git-ignored). A gated
notebook also declares `confirm_rounds = 0` in its parameters cell (see "Confirmation").

metrics.json (schema `gatewaylab.notebook-metrics/1`):

    {"schema": "gatewaylab.notebook-metrics/1", "notebook": "01_mmr_speedup", "profile": "ci",
     "metrics": {"<name>": {"value": 3.1, "min": 2.9, "max": 3.3, "unit": "ratio", "desc": "..."}}}

Baselines (data/baselines/, explained in its README): one file per notebook with its gates,

    {"notebook": "01_mmr_speedup",
     "checks": [{"metric": "<name>", "op": ">=" | "<=", "rule": "advantage" | "cost" | "exact",
                 "tier": "timing" | "work", "neutral": 1.0, "threshold": 2.0, "why": "..."}]}

and one file per recorded ci run, `data/baselines/runs/<UTC time>.json` (written by
`--record`): the metrics of every notebook of that run, the load average and the commit.
Thresholds are derived from the recorded runs by one rule (`derive_threshold`), and a test
checks that the committed thresholds are the derived ones. `--derive` prints them, and the
leave-one-out false-alarm count over the recorded runs.

Only ratios are checked (never absolute times). A failure names the notebook, the metric,
the value, the threshold and the runs it is compared with, and the process exits non-zero.

Confirmation. Every gate has a tier (TIERS). A `work` gate (an instruction-count ratio, which
load does not move) fails the moment it trips. A `timing` gate (a wall-clock ratio) that trips
does not fail yet: once every notebook has run, the runner runs that notebook again with the
papermill parameter `confirm_rounds=N` (`--confirm-rounds`, default CONFIRM_ROUNDS), which
makes it measure its gated configurations in N interleaved rounds (A B, B A, A B, ... rather
than all of A, then all of B) and write the medians over the rounds to
`<results>/confirm/<notebook>/metrics.json`. The gate is checked again on those metrics and
fails only if it trips there too. The summary and the message show both values and the
verdict. `--check-only` measures nothing, so it cannot confirm: it uses a confirmation the
results folder already holds, and otherwise says that there is none and fails the trip.
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
from dataclasses import asdict, dataclass, replace
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
# {metric: why it was not measured} for metrics a notebook left out (a cell behind them not ok)
MISSING_FILE = "metrics_missing.json"
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

# What a gate measures, and so what a trip means (module docstring, "Confirmation"):
#   work    an instruction-count ratio (Cachegrind): fails at once, never confirmed
#   timing  a wall-clock ratio (throughput, latency, GIL waits, loop lag, spawn cost,
#           CPU per request): a trip is confirmed by re-measuring, interleaved, before it fails
TIERS = ("work", "timing")
CONFIRM_ROUNDS = 3  # interleaved rounds a confirmation measures
CONFIRM_PARAMETER = "confirm_rounds"  # the papermill parameter that asks a notebook for them
CONFIRM_DIR = "confirm"  # <results>/confirm/<notebook>/: the confirmation's results
CONFIRM_FILE = "confirmation.json"  # beside them: the rounds and the trips it was run for


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


def load_missing(run_dir: Path | str) -> dict[str, str]:
    """The notebook's reasons for the metrics it left out ({} when it left none out)."""
    p = Path(run_dir) / MISSING_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def load_metrics(run_dir: Path | str) -> dict:
    p = Path(run_dir) / METRICS_FILE
    data = json.loads(p.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{p}: schema {data.get('schema')!r}, expected {SCHEMA!r}")
    return data


def median_over_rounds(rounds: list[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict]:
    """One metrics dict from the same metrics measured in several interleaved rounds (a
    confirmation): each value the median over the rounds, min and max the rounds' extremes.
    A metric must be in every round."""
    if not rounds:
        raise ValueError("no rounds to combine")
    out = {}
    for name in rounds[0]:
        vals = sorted(float(r[name]["value"]) for r in rounds)
        k = len(vals) // 2
        med = vals[k] if len(vals) % 2 else (vals[k - 1] + vals[k]) / 2
        first = rounds[0][name]
        out[name] = metric(
            med,
            vals[0],
            vals[-1],
            unit=first.get("unit", "ratio"),
            desc=f"{first.get('desc', '')} (median of {len(rounds)} interleaved rounds)".strip(),
        )
    return out


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
#
# A `work` gate (an instruction-count ratio, tier "work") follows the same rule with two
# numbers changed, because a count does not move with load: it sits where WORK_LOSS (5%) of
# the distance between the median and `neutral` is lost, m - 0.05 (m - neutral) for a floor
# and m + 0.05 |m - neutral| for a ceiling, unless the recorded spread needs more room: then
# at the noise bound, the worst recorded value with a margin derived by the same
# leave-one-out rule in steps of WORK_MARGIN_STEP from WORK_MARGIN_STEP. Whichever is looser
# wins, and the margin is stored in the gate. A work gate takes the `advantage` rule (it
# needs its neutral point).
RULES = ("advantage", "cost", "exact")
MIN_MARGIN = 0.15  # the least room beyond the worst recorded value, as a fraction of it
WORK_LOSS = 0.05  # a work gate fails once this share of the median's distance from neutral is lost
WORK_MARGIN_STEP = 0.005  # a work gate's noise margin: from 0.5%, in steps of 0.5%
WORK_MIN_RUNS = 5  # recorded values a work gate is derived from, at the least (the aim: 20; README)


@dataclass
class Confirmation:
    """A tripped timing gate measured again: `value` in the confirmation's interleaved rounds
    (None when there is no confirmation, and `note` says why)."""

    value: float | None
    ok: bool
    rounds: int = 0
    note: str = ""

    def describe(self) -> str:
        if self.value is None:
            return f"not confirmed: {self.note}"
        how = f"{self.rounds} interleaved rounds" if self.rounds else "rounds not recorded"
        said = "passes: the trip was not confirmed" if self.ok else "trips too"
        return f"confirmation ({how}{'; ' + self.note if self.note else ''}) = {self.value:.4g}: {said}"


@dataclass
class Check:
    notebook: str
    metric: str
    value: float | None
    op: str
    threshold: float
    ok: bool  # the first measurement's verdict
    tier: str = "timing"
    note: str = ""
    compared_with: str = ""
    confirmation: Confirmation | None = None

    @property
    def tripped(self) -> bool:
        """The first measurement has a value and fails the gate."""
        return self.value is not None and not self.ok

    @property
    def passed(self) -> bool:
        """The verdict: the first measurement passed, or its trip was not confirmed."""
        return self.ok or (self.confirmation is not None and self.confirmation.ok)

    def result(self) -> str:
        """The summary table's word for the verdict."""
        if self.ok:
            return "ok"
        if self.value is None:
            return "FAIL (missing)"
        if self.tier == "work":
            return "FAIL (work gate)"
        if self.confirmation is None or self.confirmation.value is None:
            return "FAIL (not confirmed)"
        return "ok (trip not confirmed)" if self.confirmation.ok else "FAIL (confirmed)"

    def message(self) -> str:
        against = f"; compared with {self.compared_with}" if self.compared_with else ""
        if self.value is None:
            return f"FAIL {self.notebook}: metric {self.metric!r} missing ({self.note}){against}"
        verdict = "ok  " if self.passed else "FAIL"
        first = "" if self.ok else " tripped"
        then = ""
        if self.tripped and self.tier == "work":
            then = "; work gate: fails at once, no confirmation"
        elif self.tripped:
            c = self.confirmation or Confirmation(None, False, note="none was run")
            then = "; " + c.describe()
        return (
            f"{verdict} {self.notebook}: {self.metric} = {self.value:.4g}{first}, "
            f"threshold {self.op} {self.threshold:.4g}"
            + (f" ({self.note})" if self.note else "")
            + then
            + against
        )


def load_baselines(baseline_dir: Path | str = BASELINE_DIR) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in sorted(Path(baseline_dir).glob("*.json")):
        data = json.loads(p.read_text())
        nb = data.get("notebook") or p.stem
        for c in data.get("checks", []):
            if c.get("tier") not in TIERS:
                raise ValueError(
                    f"{p}: check {c.get('metric')!r} has tier {c.get('tier')!r}; expected one of {list(TIERS)}"
                )
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


def fmt_margin(margin: float) -> str:
    """A margin as the README and `--derive` print it: 15%, 0.5%."""
    return f"{round(margin * 100, 3):g}%"


def _min_margin(check: Mapping[str, Any]) -> float:
    return WORK_MARGIN_STEP if check.get("tier") == "work" else MIN_MARGIN


def derive_threshold(check: Mapping[str, Any], values: list[float], margin: float | None = None) -> float:
    """The threshold `check`'s rule gives for these recorded values (see RULES above);
    `margin` defaults to the least one of the gate's tier."""
    rule, op = check.get("rule", "exact"), check["op"]
    if rule == "exact":
        return float(check["threshold"])
    if not values:
        raise ValueError(f"{check['metric']}: no recorded values to derive a threshold from")
    margin = _min_margin(check) if margin is None else margin
    vs = sorted(values)
    med = vs[len(vs) // 2] if len(vs) % 2 else (vs[len(vs) // 2 - 1] + vs[len(vs) // 2]) / 2
    higher_is_better = op.startswith(">")
    noise = vs[0] * (1 - margin) if higher_is_better else vs[-1] * (1 + margin)
    if check.get("tier") == "work":
        if rule != "advantage":
            raise ValueError(f"{check['metric']}: a work gate takes the advantage rule, not {rule!r}")
        step = WORK_LOSS * abs(med - float(check["neutral"]))
        loss = med - step if higher_is_better else med + step
        return round(min(loss, noise) if higher_is_better else max(loss, noise), 4)
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
            name, op, thr, tier = c["metric"], c["op"], float(c["threshold"]), c["tier"]
            against = _compared_with(runs, nb, name)
            try:
                metrics = load_metrics(Path(results_root) / nb)["metrics"]
            except (OSError, ValueError) as e:
                checks.append(Check(nb, name, None, op, thr, False, tier, f"no results: {e}", against))
                continue
            if name not in metrics:
                why = load_missing(Path(results_root) / nb).get(name)
                note = f"not measured: {why}" if why else f"not in {nb}/{METRICS_FILE}"
                checks.append(Check(nb, name, None, op, thr, False, tier, note, against))
                continue
            v = float(metrics[name]["value"])
            checks.append(
                Check(
                    nb, name, v, op, thr, bool(OPS[op](v, thr)), tier, metrics[name].get("desc", ""), against
                )
            )
    return checks


def to_confirm(checks: Iterable[Check]) -> list[str]:
    """The notebooks with a tripped timing gate, in order: the ones a confirmation re-measures.
    A work gate never confirms, and a missing metric is a failure, not a trip."""
    out: list[str] = []
    for c in checks:
        if c.tripped and c.tier == "timing" and c.notebook not in out:
            out.append(c.notebook)
    return out


def apply_confirmations(
    checks: list[Check],
    confirmed: Mapping[str, Path | str],
    baseline_dir: Path | str = BASELINE_DIR,
    rounds: Mapping[str, int] | None = None,
    unconfirmed: str = "none was run",
    reasons: Mapping[str, str] | None = None,
) -> list[Check]:
    """Give every tripped timing gate its confirmation: `confirmed[notebook]` is the results
    root whose `<notebook>/metrics.json` holds the notebook's metrics measured again in
    `rounds[notebook]` interleaved rounds; a notebook missing from `confirmed` leaves its trips
    unconfirmed (failures), with the reason `reasons[notebook]` or else `unconfirmed`. The
    first measurement stays as it was (`value`, `ok`); `passed` is the verdict."""
    again: dict[tuple[str, str], Check] = {}
    for nb, root in confirmed.items():
        for c in check_results(root, baseline_dir, [nb]):
            again[(nb, c.metric)] = c
    out = []
    for c in checks:
        if not (c.tripped and c.tier == "timing"):
            out.append(c)
            continue
        n = (rounds or {}).get(c.notebook, 0)
        if c.notebook not in confirmed:
            why = (reasons or {}).get(c.notebook, unconfirmed)
            out.append(replace(c, confirmation=Confirmation(None, False, n, why)))
            continue
        a = again.get((c.notebook, c.metric))
        if a is None or a.value is None:
            why = a.note if a is not None else "no confirmation results"
            out.append(replace(c, confirmation=Confirmation(None, False, n, why)))
            continue
        out.append(replace(c, confirmation=Confirmation(a.value, a.ok, n)))
    return out


def recorded_confirmations(results_root: Path | str, notebooks: Iterable[str]) -> tuple[dict, dict]:
    """The confirmations a results folder already holds (`confirm/<notebook>/`): what
    `--check-only` can use, since it measures nothing. (roots, rounds) per notebook."""
    roots, rounds = {}, {}
    base = Path(results_root) / CONFIRM_DIR
    for nb in notebooks:
        if (base / nb / METRICS_FILE).is_file():
            roots[nb] = base
            info = base / nb / CONFIRM_FILE
            rounds[nb] = int(json.loads(info.read_text()).get("rounds", 0)) if info.is_file() else 0
    return roots, rounds


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
    # confirmations of tripped timing gates (<root>/confirm/): kept beside, never derived from
    confirmations = {}
    for nb in metrics:
        try:
            m = load_metrics(root / CONFIRM_DIR / nb)["metrics"]
        except (OSError, ValueError):
            continue
        confirmations[nb] = {
            k: {f: v[f] for f in ("value", "min", "max") if f in v} for k, v in sorted(m.items())
        }
    from harness.results.meta import collect

    meta = collect(parameters={"notebooks": "ci"})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(runs_dir) if runs_dir is not None else RECORDED_RUNS_DIR
    out.mkdir(parents=True, exist_ok=True)
    p = out / f"{stamp}.json"
    for i in range(2, 100):  # two runs recorded in the same second (parallel --work-only loops) keep both
        if not p.exists():
            break
        p = out / f"{stamp}-{i}.json"
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
                **({"confirmations": confirmations} if confirmations else {}),
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
    """The smallest margin with no leave-one-out false alarm: 5% steps from MIN_MARGIN for a
    timing gate, WORK_MARGIN_STEP steps from WORK_MARGIN_STEP for a work gate."""
    step = WORK_MARGIN_STEP if check.get("tier") == "work" else 0.05
    m = _min_margin(check)
    while loo_alarms(check, values, m) and m < 0.95:
        m = round(m + step, 3)
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
                    "loo_at_min_margin": loo_alarms(c, vals, _min_margin(c)),
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
    confirm_rounds: int = 0  # > 0: a confirmation run, in that many interleaved rounds

    @property
    def label(self) -> str:
        return self.notebook + (
            f" (confirmation, {self.confirm_rounds} rounds)" if self.confirm_rounds else ""
        )


def run_notebook(
    name: str, profile: str, run_dir: Path, kernel: str, timeout_s: int = 900, confirm_rounds: int = 0
) -> NotebookRun:
    """Execute one notebook with papermill; `confirm_rounds` > 0 passes that parameter, which
    makes the notebook measure its gated configurations in interleaved rounds."""
    import papermill as pm

    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    src = NOTEBOOK_DIR / f"{name}.ipynb"
    dst = EXECUTED_DIR / (f"{name}.confirm.ipynb" if confirm_rounds else f"{name}.ipynb")
    parameters: dict[str, Any] = {"profile": profile, "run_dir": str(run_dir), "live_panel": False}
    if confirm_rounds:
        parameters[CONFIRM_PARAMETER] = int(confirm_rounds)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(src),
            str(dst),
            parameters=parameters,
            kernel_name=kernel,
            cwd=str(NOTEBOOK_DIR),
            progress_bar=False,
            execution_timeout=timeout_s,
            log_output=False,
        )
        return NotebookRun(name, time.perf_counter() - t0, True, confirm_rounds=confirm_rounds)
    except Exception as e:  # papermill wraps the cell's error: name the cell and the exception
        if hasattr(e, "ename"):
            msg = f"cell In[{getattr(e, 'exec_count', '?')}]: {e.ename}: {e.evalue}"
        else:
            msg = f"{type(e).__name__}: {e}"
        return NotebookRun(name, time.perf_counter() - t0, False, msg.strip()[:800], confirm_rounds)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summary(runs: list[NotebookRun], checks: list[Check]) -> str:
    out = []
    if runs:
        out.append(
            _table(
                [[r.label, f"{r.seconds:.1f}", "ok" if r.ok else "FAILED"] for r in runs],
                ["notebook", "seconds", "executed"],
            )
        )
        out.append("")
    if checks:

        def confirmation(c: Check) -> str:
            if not c.tripped:
                return "-"
            if c.tier == "work":
                return "never (work)"
            k = c.confirmation
            if k is None or k.value is None:
                return "none"
            return f"{k.value:.4g}" + (f" ({k.rounds} rounds)" if k.rounds else "")

        rows = [
            [
                c.notebook,
                c.metric,
                c.tier,
                "missing" if c.value is None else f"{c.value:.4g}",
                confirmation(c),
                f"{c.op} {c.threshold:.4g}",
                c.result(),
            ]
            for c in checks
        ]
        out.append(
            _table(rows, ["notebook", "metric", "tier", "value", "confirmation", "threshold", "result"])
        )
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
        "--confirm-rounds",
        type=int,
        default=CONFIRM_ROUNDS,
        metavar="N",
        help=f"a tripped timing gate re-runs its notebook measuring in N interleaved rounds and fails "
        f"only if that trips too (default {CONFIRM_ROUNDS}; 0: trips fail at once)",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="after the run, record its metrics in data/baselines/runs/ (to derive thresholds from)",
    )
    p.add_argument(
        "--work-only",
        action="store_true",
        help="measure only the work gates (instruction counts, harness.work_gates) of the notebooks "
        "that have them, without papermill (and without what no gate reads: 07's Noveum row), and "
        "check those gates",
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
                        "-" if r["margin"] is None else fmt_margin(r["margin"]),
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
                    f"LOO at least margin ({fmt_margin(MIN_MARGIN)}; work {fmt_margin(WORK_MARGIN_STEP)})",
                ],
            )
        )
        return 0

    if args.record:
        from gateway import inject
        from gateway.twins import REGISTRY

        if inject.active(REGISTRY):  # a recorded run sets thresholds: it never carries an injected regression
            print(
                f"python -m harness.notebooks: --record refuses a run with {inject.ENV}="
                f"{os.environ.get(inject.ENV)!r} set (test-only injected regressions)",
                file=sys.stderr,
            )
            return 2
    if args.work_only:
        return _work_only(args, names)

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
    if args.check_only:
        confirmed, rounds = recorded_confirmations(root, to_confirm(checks))
        checks = apply_confirmations(
            checks,
            confirmed,
            args.baselines,
            rounds,
            unconfirmed="--check-only measures nothing and the results hold no confirmation",
        )
    elif args.confirm_rounds > 0:
        confirmed, rounds, reasons = {}, {}, {}
        for nb in to_confirm(checks):
            tripped = {c.metric: c.value for c in checks if c.notebook == nb and c.tripped}
            n = args.confirm_rounds
            print(
                f"[notebooks] {nb}: timing gate(s) {', '.join(tripped)} tripped; "
                f"confirming in {n} interleaved rounds ({CONFIRM_PARAMETER}={n}) ...",
                flush=True,
            )
            d = root / CONFIRM_DIR / nb
            d.mkdir(parents=True, exist_ok=True)
            (d / CONFIRM_FILE).write_text(
                json.dumps({"rounds": n, "parameter": CONFIRM_PARAMETER, "tripped": tripped}, indent=1)
            )
            r = run_notebook(nb, args.profile, d, kernel, args.timeout, confirm_rounds=n)
            print(
                f"[notebooks] {r.label}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.1f} s"
                + (f": {r.error}" if r.error else ""),
                flush=True,
            )
            runs.append(r)
            rounds[nb] = n
            if r.ok:
                confirmed[nb] = root / CONFIRM_DIR
            else:
                reasons[nb] = f"the confirmation run failed: {r.error}"
        checks = apply_confirmations(checks, confirmed, args.baselines, rounds, reasons=reasons)
    else:
        checks = apply_confirmations(
            checks, {}, args.baselines, unconfirmed="confirmation is off (--confirm-rounds 0)"
        )
    total = time.perf_counter() - t0
    print()
    print(summary(runs, checks))
    # a confirmation run that failed fails its gates; it is not counted twice
    failures = [r for r in runs if not r.ok and not r.confirm_rounds] + [c for c in checks if not c.passed]
    print()
    for r in runs:
        if not r.ok:
            print(f"FAIL {r.label}: execution failed: {r.error}")
    for c in checks:
        if not c.ok:  # every trip, confirmed or not: both values and the verdict
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
                    "runs": [asdict(r) for r in runs],
                    "checks": [{**asdict(c), "passed": c.passed} for c in checks],
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
    n_ok = sum(r.ok for r in runs if not r.confirm_rounds) + sum(c.passed for c in checks)
    if failures:
        print(f"[notebooks] {len(failures)} failure(s)")
        print(f"notebooks: {n_ok} passed, {len(failures)} failed")
        return 1
    confirmations = sum(bool(r.confirm_rounds) for r in runs)
    done = f"{len(runs) - confirmations} notebook(s) executed, " if runs else ""
    done += f"{confirmations} confirmation run(s), " if confirmations else ""
    print(f"[notebooks] {done}{len(checks)} check(s) passed")
    print(f"notebooks: {n_ok} passed, 0 failed")
    return 0


def _work_only(args: argparse.Namespace, names: list[str]) -> int:
    """`--work-only`: each notebook's work-gate measurement (harness.work_gates), the very one
    the notebook makes, written as its metrics and checked against its work gates."""
    from harness import work_gates

    t0 = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = Path(args.out) if args.out else RUNS_DIR / f"{stamp}-work-{args.profile}"
    todo = [nb for nb in names if nb in work_gates.MEASURES]
    runs: list[NotebookRun] = []
    for nb in todo:
        print(f"[notebooks] measuring the work gates of {nb} (profile={args.profile}) ...", flush=True)
        t = time.perf_counter()
        try:
            w = work_gates.measure(nb, args.profile, gated_only=True)
            write_metrics(root / nb, nb, args.profile, w.metrics)
            (root / nb / "instructions.json").write_text(json.dumps(w.run.to_json(), indent=1, default=str))
            runs.append(NotebookRun(nb, time.perf_counter() - t, True))
        except Exception as e:  # noqa: BLE001 - reported as the notebook's failure, in one line
            runs.append(NotebookRun(nb, time.perf_counter() - t, False, f"{type(e).__name__}: {e}"[:800]))
    checks = [c for c in check_results(root, args.baselines, todo) if c.tier == "work"]
    total = time.perf_counter() - t0
    print()
    print(summary(runs, checks))
    print()
    for c in checks:
        if not c.ok:
            print(c.message())
    for r in runs:
        if not r.ok:
            print(f"FAIL {r.notebook}: work measurement failed: {r.error}")
    print(f"[notebooks] work gates: results in {root}; total {total:.1f} s")
    if args.record and all(r.ok for r in runs):
        rec = record_run(
            root,
            notebooks=todo,
            extra={
                "work_only": True,
                "total_seconds": round(total, 1),
                "load_average_start": load_start,
                "executed": {r.notebook: r.ok for r in runs},
            },
        )
        print(f"[notebooks] recorded this run's metrics in {rec}")
    failures = [r for r in runs if not r.ok] + [c for c in checks if not c.ok]
    print(f"notebooks: {sum(r.ok for r in runs) + sum(c.ok for c in checks)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
