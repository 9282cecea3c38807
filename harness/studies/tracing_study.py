"""What tracing costs per request, per rung (docs/tracing.md; notebook 10's "Tracing" section).

    study = tracing_cost(modes=("py", "py+rs", "rs-core", "rs-server"), tracing=("off", "sampled:0.1", "on"),
                         concurrency=8, repeat=5, profile="xeon-4c")
    study.table          # one row per (rung, tracing): CPU µs/req, req/s, p50, each with its
                         # ratio to the same rung with tracing off, median [min–max]
    study.markdown()     # the same, formatted for a report

One sweep (harness.infra.sweep) with `tracing` as an axis: every configuration runs once per
repeat, in turn, so the rung with and without tracing share each stretch of machine load;
ratios are taken per repeat (traced / off, same repeat) and summarised as median [min–max]
over the repeats. CPU µs per request (the gateway process tree's user+sys over the cell,
per completed request) is the steadiest figure on a loaded machine; req/s and p50 come from
the load generator. Spans go to the sweep's local OTLP receiver (harness.infra.otlp), which counts
and keeps nothing; its decoding runs outside the gateway's cores.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.twins import MODES

DEFAULT_TRACING = ("off", "sampled:0.1", "on")
# (column, what) the table reports, each with its ratio to tracing off
FIGURES = (("cpu_us_per_req", "CPU µs/req"), ("rps", "req/s"), ("lat_p50_us", "p50 µs"))


@dataclass
class TracingCost:
    run: Any  # harness.infra.sweep.RunResult (run folder, cells table)
    table: Any  # pandas DataFrame, one row per (mode, tracing)
    concurrency: int

    def markdown(self) -> str:
        cols = (
            ["mode", "tracing"] + [f"{what}" for _, what in FIGURES] + [f"{what} ×off" for _, what in FIGURES]
        )
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.table.to_dict("records"):
            cells = [r["mode"], r["tracing"]]
            cells += [_spread(r[c], r[f"{c}_min"], r[f"{c}_max"], 4) for c, _ in FIGURES]
            cells += [
                _spread(r[f"{c}_ratio"], r[f"{c}_ratio_min"], r[f"{c}_ratio_max"], 3) for c, _ in FIGURES
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def figure(self, column: str = "cpu_us_per_req"):
        """Plotly bars: `column`'s ratio to tracing off, per rung and tracing mode, with the
        min–max of the per-repeat ratios as error bars."""
        import plotly.graph_objects as go

        what = dict(FIGURES)[column]
        fig = go.Figure()
        t = self.table[self.table["tracing"] != "off"]
        for tracing, d in t.groupby("tracing", sort=False):
            m = d[f"{column}_ratio"]
            fig.add_bar(
                x=d["mode"],
                y=m,
                name=f"tracing {tracing}",
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=(d[f"{column}_ratio_max"] - m).tolist(),
                    arrayminus=(m - d[f"{column}_ratio_min"]).tolist(),
                ),
            )
        fig.add_hline(y=1.0, line_dash="dot", annotation_text="tracing off")
        repeats = int(self.table["repeats"].min()) if len(self.table) else 0
        fig.update_layout(
            barmode="group",
            yaxis_title=f"{what}, × the same rung untraced",
            title=dict(
                text=f"What tracing costs per request (c={self.concurrency})",
                subtitle=dict(
                    text=f"closed loop; exact: CPU from /proc, 2xx counted; per-repeat ratios, median of "
                    f"{repeats} repeat(s), bars min–max"
                ),
            ),
        )
        return fig


def _spread(m: float, lo: float, hi: float, digits: int) -> str:
    if m != m:
        return "–"
    return f"{m:.{digits}g} [{lo:.{digits}g}–{hi:.{digits}g}]"


def _mmm(values: Sequence[float]) -> tuple[float, float, float]:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return math.nan, math.nan, math.nan
    return statistics.median(v), min(v), max(v)


def cost_table(cells, concurrency: int):
    """A sweep's cells (with a `tracing` column) -> one row per (mode, tracing) at
    `concurrency`: each figure's median/min/max over the repeats and its per-repeat ratio to
    the same mode with tracing off."""
    import pandas as pd

    ok = cells[(cells["status"] == "ok") & (cells["concurrency"] == concurrency)]
    rows = []
    for (mode, tracing), d in ok.groupby(["mode", "tracing"], sort=False):
        off = ok[(ok["mode"] == mode) & (ok["tracing"] == "off")].set_index("repeat")
        row: dict[str, Any] = {"mode": mode, "tracing": tracing, "repeats": len(d)}
        for col, _ in FIGURES:
            row[col], row[f"{col}_min"], row[f"{col}_max"] = _mmm(d[col].tolist())
            ratios = [
                v / off.at[rep, col]
                for rep, v in zip(d["repeat"], d[col])
                if rep in off.index and off.at[rep, col] and v == v
            ]
            row[f"{col}_ratio"], row[f"{col}_ratio_min"], row[f"{col}_ratio_max"] = _mmm(ratios)
        rows.append(row)
    order = {m: i for i, m in enumerate(MODES)}
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(
            ["mode", "tracing"],
            key=lambda s: s.map(order) if s.name == "mode" else s.map(lambda t: (t != "off", t != "on", t)),
        ).reset_index(drop=True)
    return table


def tracing_cost(
    modes: Sequence[str] = tuple(MODES),
    tracing: Sequence[str] = DEFAULT_TRACING,
    concurrency: int = 8,
    profile: Any = "xeon-4c",
    duration_s: float = 3.0,
    warmup_s: float = 0.5,
    repeat: int = 5,
    out: Any = None,
    name: str = "tracing",
    progress: bool = False,
    upstream: dict | None = None,
) -> TracingCost:
    """Sweep `modes` x `tracing` at one concurrency and tabulate the cost (module docstring).
    "off" is always measured (it is what the ratios divide by)."""
    from harness.infra.sweep import run_sweep

    tracing = tuple(dict.fromkeys(("off", *tracing)))
    res = run_sweep(
        modes=tuple(modes),
        tracing=tracing,
        concurrency=(int(concurrency),),
        profile=profile,
        duration_s=duration_s,
        warmup_s=warmup_s,
        repeat=repeat,
        gil=False,
        capacity=False,
        report=False,
        out=out,
        name=name,
        progress=progress,
        upstream=dict(latency_ms=0) if upstream is None else upstream,
    )
    return TracingCost(res, cost_table(res.table, int(concurrency)), int(concurrency))
