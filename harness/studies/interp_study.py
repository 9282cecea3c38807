"""Notebook 11's tables (docs/interpreters.md): what each interpreter costs and what the Rust
twins buy on it, from `gatewaylab bench NAME --pythons ...` documents and an interpreter-axis
sweep (`run_sweep(pythons=...)`).

Every figure is one long row, the shape `harness.bench._pythons.headlines` gives:

    {"component", "measure", "python", "tag", "value", "min", "max", "unit", "desc", "source"}

`measure` is "rust_advantage" (the Python twin's cost / the Rust twin's, >1 = Rust cheaper),
"python_cost" (what the Python twin or the py rung costs) or another named ratio; value is the
median, min/max the widest spread the measurements allow. The conclusion table pivots the
rows (`advantage_table`); another source of figures (instruction counts per request, say)
joins by adding rows of the same shape.

    rows = pd.concat([bench_rows(doc) for doc in docs] + [sweep_rows(cells, pythons)])
    advantage_table(rows, pythons)          # component x interpreter, plus newest / oldest
    gate_metrics(rows, pythons)             # the ratios metrics.json carries
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

COLUMNS = ["component", "measure", "python", "tag", "value", "min", "max", "unit", "desc", "source"]
MEASURES = {
    "rust_advantage": "Rust advantage (Python / Rust)",
    "python_cost": "Python cost",
    "over_create_task": "÷ bare create_task",
}


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows, columns=COLUMNS)


def bench_rows(doc: dict[str, Any]):
    """The comparison rows of a `bench --pythons` JSON document, tagged with the benchmark."""
    return _frame([{**r, "source": f"bench {doc['bench']}"} for r in doc["comparison"]])


def _spread(s) -> tuple[float, float, float]:
    return float(s.median()), float(s.min()), float(s.max())


def sweep_rows(cells, pythons: Sequence[tuple[str, str]], at_c: int | None = None):
    """Per interpreter, from the ok cells of an interpreter-axis sweep at concurrency `at_c`
    (default: the lowest swept): the py rung's CPU µs per request ("python_cost"), and the
    advantage of each other rung with an interpreter over it in CPU per request
    (py CPU/request ÷ rung CPU/request, spread over repeats). `pythons`: (label, tag) pairs."""
    ok = cells[(cells["status"] == "ok") & cells["cpu_us_per_req"].notna()]
    c = at_c if at_c is not None else int(ok["concurrency"].min())
    ok = ok[ok["concurrency"] == c]
    rows = []
    for label, tag in pythons:
        mine = ok[ok["python"] == label]
        by = {m: g["cpu_us_per_req"] for m, g in mine.groupby("mode")}
        if "py" not in by:
            continue
        py = _spread(by["py"])
        rows.append(
            {
                "component": "request (py rung)",
                "measure": "python_cost",
                "python": label,
                "tag": tag,
                "value": py[0],
                "min": py[1],
                "max": py[2],
                "unit": "µs CPU",
                "desc": f"py rung: gateway CPU µs per request at c={c} (sweep, /proc, exact)",
                "source": "sweep",
            }
        )
        for mode in sorted(m for m in by if m != "py"):
            r = _spread(by[mode])
            rows.append(
                {
                    "component": f"request ({mode} rung)",
                    "measure": "rust_advantage",
                    "python": label,
                    "tag": tag,
                    "value": py[0] / r[0],
                    "min": py[1] / r[2],
                    "max": py[2] / r[1],
                    "unit": "x",
                    "desc": f"py ÷ {mode}: gateway CPU µs per request at c={c}",
                    "source": "sweep",
                }
            )
    return _frame(rows)


def knee_table(cells, pythons: Sequence[tuple[str, str]]):
    """Per interpreter and rung: where median throughput peaks over c, the peak, the throughput
    at the lowest c and their ratio (how far concurrency pays)."""
    import pandas as pd

    ok = cells[cells["status"] == "ok"]
    out = []
    for label, _tag in pythons:
        for mode, g in ok[ok["python"] == label].groupby("mode", sort=False):
            med = g.groupby("concurrency")["rps"].agg(["median", "min", "max"])
            peak_c = int(med["median"].idxmax())
            c1 = int(med.index.min())
            out.append(
                {
                    "python": label,
                    "mode": mode,
                    "peak c": peak_c,
                    "peak req/s": f"{med.loc[peak_c, 'median']:.0f} [{med.loc[peak_c, 'min']:.0f}–{med.loc[peak_c, 'max']:.0f}]",
                    f"req/s at c={c1}": f"{med.loc[c1, 'median']:.0f}",
                    "peak ÷ lowest c": round(float(med.loc[peak_c, "median"] / med.loc[c1, "median"]), 2),
                }
            )
    return pd.DataFrame(out)


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _cell(r) -> str:
    u = "x" if r["unit"] == "x" else f" {r['unit']}"
    return f"{_num(r['value'])}{u} [{_num(r['min'])}–{_num(r['max'])}]"


def advantage_table(rows, pythons: Sequence[tuple[str, str]], measures=("rust_advantage", "python_cost")):
    """component | measure | one column per interpreter (median [min–max]) | newest ÷ oldest
    (the change of the median from the first interpreter given to the last; < 1 for an
    advantage means it shrank)."""
    import pandas as pd

    labels = [lab for lab, _ in pythons]
    sel = rows[rows["measure"].isin(measures)]
    out = []
    for (comp, meas), g in sel.groupby(["component", "measure"], sort=False):
        by = {r["python"]: r for r in g.to_dict("records")}
        row: dict[str, Any] = {"component": comp, "measure": MEASURES.get(meas, meas)}
        for lab in labels:
            row[lab] = _cell(by[lab]) if lab in by else "–"
        first, last = by.get(labels[0]), by.get(labels[-1])
        row[f"{_short(labels[-1])} ÷ {_short(labels[0])}"] = (
            f"{last['value'] / first['value']:.2f}"
            if first is not None and last is not None and len(labels) > 1
            else "–"
        )
        out.append(row)
    return pd.DataFrame(out)


def _short(label: str) -> str:
    """`CPython 3.12.1 GIL` -> `3.12.1`; free-threaded and JIT builds keep a suffix."""
    m = re.search(r"(\d+\.\d+\.\d+)", label)
    v = m.group(1) if m else label
    return v + ("t" if "free-threaded" in label else "") + ("+JIT" if " JIT" in label else "")


def metric_name(component: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", component.lower()).strip("_")


def gate_metrics(rows, pythons: Sequence[tuple[str, str]]) -> dict[str, dict]:
    """The ratios a gate would read (harness.notebooks.metric): every Rust advantage per
    interpreter, its change from the first interpreter to the last, and the py rung's CPU per
    request on each interpreter relative to the first. Absolute costs stay out (ratios only)."""
    from harness.notebooks import metric

    tags = {lab: tag for lab, tag in pythons}
    first, last = pythons[0][0], pythons[-1][0]
    out: dict[str, dict] = {}
    for (comp, meas), g in rows.groupby(["component", "measure"], sort=False):
        by = {r["python"]: r for r in g.to_dict("records")}
        name = metric_name(comp)
        if meas in ("rust_advantage", "over_create_task"):
            kind = "rust_advantage" if meas == "rust_advantage" else "over_create_task"
            for lab, r in by.items():
                out[f"{kind}_{name}_{tags[lab]}"] = metric(
                    r["value"], r["min"], r["max"], desc=f"{r['desc']} on {lab}"
                )
        if len(pythons) > 1 and first in by and last in by:
            a, b = by[first], by[last]
            what = "Rust advantage" if meas == "rust_advantage" else MEASURES.get(meas, meas)
            out[f"{meas}_{name}_{tags[last]}_over_{tags[first]}"] = metric(
                b["value"] / a["value"],
                b["min"] / a["max"],
                b["max"] / a["min"],
                desc=f"{comp}: {what} on {last} ÷ on {first}",
            )
    return out
