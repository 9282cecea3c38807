"""Small helpers the notebooks share: their run folder, spreads of ratios, error bars.

from lab_ext.nb import notebook_run, ratio_spread, error_bars
run = notebook_run("01_mmr_speedup", profile, run_dir, parameters={...})   # harness.results.runs.Run

A gated figure never comes from a cell that is not ok (harness.infra.sweep: no successful answer, an
error the cell did not set out to cause, or a claimed stage that did not run): `values_at`
raises `NotMeasured` naming the cells, `gated(METRICS, MISSING, name, compute)` then leaves the
metric out (the regression check reports it missing, never a value from bad data) and
`MISSING` keeps the reason, which `write_missing` saves beside metrics.json and shows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.notebooks import MISSING_FILE


def notebook_run(
    notebook: str,
    profile: str,
    run_dir: str | Path | None = None,
    parameters: Mapping[str, Any] | None = None,
):
    """The notebook's run folder: `run_dir` when papermill passes one (the regression check
    reads it back), else a new `data/runs/<UTC time>-<notebook>/`. meta.json comes from
    `harness.results.meta.collect` either way."""
    from harness.results import meta, runs

    params = {"notebook": notebook, "profile": profile, **dict(parameters or {})}
    if run_dir is None:
        return runs.create_run(notebook, parameters=params)
    p = Path(run_dir)
    p.mkdir(parents=True, exist_ok=True)
    m = meta.collect(parameters=params)
    m["run_name"] = notebook
    (p / runs.META_FILE).write_text(json.dumps(m, indent=2, sort_keys=True, default=str) + "\n")
    return runs.open_run(p)


def ratio_spread(
    num: tuple[float, float, float], den: tuple[float, float, float]
) -> tuple[float, float, float]:
    """(median, min, max) of num/den from two (median, min, max) triples: the median ratio,
    and the widest ratio the spreads allow (num.min/den.max, num.max/den.min)."""
    n, nlo, nhi = num
    d, dlo, dhi = den
    return n / d, nlo / dhi, nhi / dlo


def spread_of(values) -> tuple[float, float, float]:
    """(median, min, max) of a sequence (NaNs dropped)."""
    import numpy as np

    v = np.asarray([x for x in values if x == x], dtype=float)
    if v.size == 0:
        raise ValueError("no values")
    return float(np.median(v)), float(v.min()), float(v.max())


def error_bars(df, value: str = "median", lo: str = "min", hi: str = "max") -> dict:
    """plotly `error_y` for asymmetric min/max bars around a median column."""
    return dict(
        type="data",
        symmetric=False,
        array=(df[hi] - df[value]).tolist(),
        arrayminus=(df[value] - df[lo]).tolist(),
    )


def fmt(triple: tuple[float, float, float], digits: int = 3, unit: str = "") -> str:
    m, lo, hi = triple
    return f"{m:.{digits}g}{unit} [{lo:.{digits}g}–{hi:.{digits}g}]"


def si(x: float, digits: int = 3) -> str:
    """1234567 -> '1.23M', 144000 -> '144k', 2.5 -> '2.5'."""
    ax = abs(x)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if ax >= div:
            return f"{x / div:.{digits}g}{suf}"
    return f"{x:.{digits}g}"


def fmt_si(triple: tuple[float, float, float], unit: str = "") -> str:
    m, lo, hi = triple
    return f"{si(m)}{unit} [{si(lo)}–{si(hi)}]"


def label_cells(cells):
    """Add a `label` column to a sweep cells table: mode, plus switches and shell when set."""
    from lab_ext.widgets import cell_label

    cells = cells.copy()
    cells["label"] = [cell_label(r) for r in cells.to_dict("records")]
    return cells


def agg(cells, value: str, by=("label", "concurrency")):
    """median/min/max/n of `value` over repeats, for the ok cells, one row per `by` group."""
    ok = cells[(cells["status"] == "ok") & cells[value].notna()]
    g = ok.groupby(list(by), sort=True)[value]
    out = g.agg(["median", "min", "max", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def ok_cells(cells, what: str = "sweep"):
    """The ok cells; a clear error naming every failed cell when none succeeded for a label."""
    failed = cells[cells["status"] != "ok"]
    if len(failed):
        import warnings

        for r in failed.to_dict("records"):
            warnings.warn(f"{what}: cell {r.get('cell')} {r.get('status')}: {r.get('error')}", stacklevel=2)
    ok = cells[cells["status"] == "ok"]
    missing = sorted(set(cells["label"]) - set(ok["label"])) if "label" in cells else []
    if missing:
        errs = "; ".join(f"{r['cell']}: {r['error']}" for r in failed.to_dict("records"))[:2000]
        raise RuntimeError(f"{what}: no successful cell for {missing}: {errs}")
    return ok


class NotMeasured(RuntimeError):
    """No ok cell behind a figure: what is computed from it is not measured (the reason says
    which cells and why)."""


def values_at(cells, label: str, concurrency: int, col: str):
    """(median, min, max) of `col` over the ok cells of `label` at `concurrency`; NotMeasured
    naming the cells that were not ok (and why) when there is none."""
    sel = cells[(cells["label"] == label) & (cells["concurrency"] == concurrency)]
    ok = sel[(sel["status"] == "ok") & sel[col].notna()]
    if ok.empty:
        errs = (
            "; ".join(f"{r.get('status')}: {r.get('error')}" for r in sel.to_dict("records"))
            or "no such cell"
        )
        raise NotMeasured(f"no ok cell for {label} at c={concurrency} ({col}): {errs[:1000]}")
    return spread_of(ok[col])


def usable_cells(cells, what: str = "sweep"):
    """The ok cells; every other cell is shown (warning) with its reason, never used. Unlike
    `ok_cells` a label without an ok cell is no error here: what needs it is `NotMeasured`."""
    bad = cells[cells["status"] != "ok"]
    if len(bad):
        import warnings

        for r in bad.to_dict("records"):
            warnings.warn(
                f"{what}: cell {r.get('cell')} r{r.get('repeat')} not used ({r.get('status')}): {r.get('error')}",
                stacklevel=2,
            )
    return cells[cells["status"] == "ok"]


def gated(metrics: dict, missing: dict, name: str, compute, *args, **kw) -> None:
    """`metrics[name] = compute(*args, **kw)`, unless a cell behind it is not ok (`NotMeasured`):
    then the metric is left out, so its gate fails as missing, and `missing[name]` says why."""
    try:
        metrics[name] = compute(*args, **kw)
    except NotMeasured as e:
        metrics.pop(name, None)
        missing[name] = str(e)


def shown(compute, *args, **kw) -> str:
    """A table entry: `compute(*args, **kw)`, or "not measured: <reason>" when a cell behind it
    is not ok."""
    try:
        return compute(*args, **kw)
    except NotMeasured as e:
        return f"not measured: {str(e)[:100]}"


def write_missing(run_dir, missing: dict):
    """Save `missing` ({metric: reason}) as `metrics_missing.json` in the run folder (beside
    metrics.json, which leaves these metrics out) and return it as a table to show."""
    import pandas as pd

    (Path(run_dir) / MISSING_FILE).write_text(json.dumps(missing, indent=2, sort_keys=True) + "\n")
    if missing:
        import warnings

        for k, why in missing.items():
            warnings.warn(f"metric {k} not measured: {why}", stacklevel=2)
    return pd.DataFrame({"metric": list(missing), "why it is missing": list(missing.values())})
