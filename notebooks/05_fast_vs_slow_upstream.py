# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Fast vs slow upstream: the "inverted catastrophe"
#
# **The seed's claim.** Against a slow upstream (a real LLM, hundreds of ms) the gateway's
# overhead is noise; against a fast upstream (a cache, a small local model) the same
# overhead becomes the dominant cost -- the optimisation that "does not matter" suddenly
# does.
#
# **What is measured.** One sweep over two mock upstreams, one with no added latency (fast)
# and one with a fixed added latency (slow), for `py` and `py+rs`: each rung's fast and slow
# cells alternate inside every repeat (one mock each, a direct baseline each), so the ratio
# the regression check reads divides shares taken from the same interleaved run, not from two
# runs one after the other. Overhead is gateway latency minus direct-to-mock latency at the
# same concurrency in the same run (**exact**, HDR histograms, **closed loop**), shown
# absolute (µs) and as a share of the client's end-to-end latency. Every stage runs (the rate
# limiter with limits far above the load; the gateway's counters show each stage ran); a cell
# with an error it did not set out to cause is not used.

# %% [markdown]
# **How it is measured.** `harness.infra.sweep.run_sweep`: the native mock upstream and the native
# load generator run as separate processes pinned to their own cores (the hardware profile is
# clamped to this machine and says so in `meta.json`); the gateway runs pinned to the gateway
# cores. Each cell is a **closed-loop** window at fixed concurrency c after a warm-up; latency
# comes from the load generator's HDR histogram (**exact**), overhead is gateway pXX minus
# direct-to-mock pXX at the same c in the same run. The load generator's capacity against the
# mock is measured beside the sweep so it is never the bottleneck unnoticed.

# %% tags=["parameters"]
# papermill parameters: "full" is the real study, "ci" a small fast run (make test)
profile = "full"
run_dir = None  # papermill passes a folder; None -> data/runs/<UTC time>-<notebook>/
live_panel = True  # the live sweep widget; headless runs turn it off (its JS would bloat the saved notebook)
confirm_rounds = 0  # > 0: a timing gate's confirmation, its gated cells in that many interleaved rounds

# %%
# %load_ext lab_ext
import pandas as pd
import plotly.express as px
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from harness.notebooks import metric, write_metrics
from lab_ext.export import export, machine_line
from lab_ext.magics import run_sweep_with_panel
from lab_ext.nb import (
    agg,
    error_bars,
    fmt,
    fmt_si,
    gated,
    label_cells,
    notebook_run,
    ratio_spread,
    shown,
    spread_of,
    usable_cells,
    values_at,
    write_missing,
)
from lab_ext.widgets import SweepPanel

NOTEBOOK = "05_fast_vs_slow_upstream"
SIZES = {
    "full": dict(
        modes=["py", "py+rs"],
        concurrency=[1, 2, 4, 8, 16],
        hw_profile="xeon-4c",
        upstreams={"fast": 0.0, "slow": 200.0},
        duration_s=5.0,
        warmup_s=1.0,
        repeat=3,
    ),
    "ci": dict(
        modes=["py", "py+rs"],
        concurrency=[2],
        hw_profile="ci-2c",
        upstreams={"fast": 0.0, "slow": 50.0},
        duration_s=1.5,
        warmup_s=0.5,
        repeat=1,
    ),
}
assert profile in SIZES, f"profile must be one of {list(SIZES)}, got {profile!r}"
S = SIZES[profile]
run = notebook_run(NOTEBOOK, profile, run_dir, parameters=S)
MACHINE = machine_line(run.meta, profile)
METRICS = {}
MISSING = {}  # metric -> why it is not measured (a cell behind it was not ok)
print(MACHINE)
print("run folder:", run.path)

# %%
# One sweep, fast and slow upstream cells alternating inside each repeat. A confirmation
# (confirm_rounds > 0) measures that many repeats, reversing the order every other round.
repeat = max(S["repeat"], confirm_rounds)
panel = (
    SweepPanel(
        total=len(S["upstreams"]) * len(S["modes"]) * len(S["concurrency"]) * repeat,
        title="fast and slow upstream, interleaved",
    )
    if live_panel
    else None
)
if panel is not None:
    display(panel.widget)
res = run_sweep_with_panel(
    panel,
    modes=S["modes"],
    concurrency=S["concurrency"],
    profile=S["hw_profile"],
    duration_s=S["duration_s"],
    warmup_s=S["warmup_s"],
    repeat=repeat,
    order="alternate" if confirm_rounds else "fixed",
    gil=False,
    upstreams={up: dict(latency_ms=ms) for up, ms in S["upstreams"].items()},
    out=run.path,
    name="upstreams",
    capacity=False,
    report=False,
)
cells = label_cells(res.table)  # labels carry the upstream: "py up=fast"
cells = cells.assign(upstream_latency_ms=cells["upstream"].map(S["upstreams"]))
run.write_table("cells", cells)
cells[["label", "concurrency", "repeat", "status", "rps", "ovh_p50_us", "stage_check", "error"]]

# %%
ok = usable_cells(cells, NOTEBOOK)
ok = ok.assign(ovh_share_p50=ok["ovh_p50_us"] / ok["lat_p50_us"])
ok[
    [
        "upstream",
        "label",
        "concurrency",
        "rps",
        "lat_p50_us",
        "base_p50_us",
        "ovh_p50_us",
        "ovh_p99_us",
        "ovh_share_p50",
    ]
]

# %%
fig_ovh = make_subplots(
    rows=1, cols=2, subplot_titles=("overhead p50 (µs)", "overhead as a share of client latency (p50)")
)
palette = px.colors.qualitative.Plotly
for j, (label, d) in enumerate(agg(ok, "ovh_p50_us").groupby("label", sort=False)):
    dash = "dash" if "up=slow" in label else "solid"
    fig_ovh.add_scatter(
        x=d["concurrency"],
        y=d["median"],
        name=label,
        legendgroup=label,
        mode="lines+markers",
        line=dict(color=palette[j % 10], dash=dash),
        error_y=error_bars(d),
        row=1,
        col=1,
    )
for j, (label, d) in enumerate(agg(ok, "ovh_share_p50").groupby("label", sort=False)):
    dash = "dash" if "up=slow" in label else "solid"
    fig_ovh.add_scatter(
        x=d["concurrency"],
        y=d["median"],
        name=label,
        legendgroup=label,
        showlegend=False,
        mode="lines+markers",
        line=dict(color=palette[j % 10], dash=dash),
        error_y=error_bars(d),
        row=1,
        col=2,
    )
fig_ovh.update_xaxes(title_text="concurrency c", type="log", tickvals=S["concurrency"])  # the measured c
fig_ovh.update_yaxes(tickformat=".0%", row=1, col=2)
fig_ovh.update_layout(
    height=450,
    margin_t=120,  # the subtitle above the panel titles
    title=dict(
        text="Gateway overhead against concurrency: fast vs slow upstream",
        subtitle=dict(
            text="closed loop; exact latencies (every request in an HDR histogram), gateway minus direct; "
            f"median of {S['repeat']} repeat(s), bars min–max"
        ),
    ),
)
fig_ovh

# %%
rows = []
for (label, c), d in ok.groupby(["label", "concurrency"]):
    rows.append(
        {
            "mode / upstream": label,
            "c": c,
            "rps": fmt_si(spread_of(d["rps"])),
            "client p50 µs": fmt_si(spread_of(d["lat_p50_us"])),
            "overhead p50 µs": fmt_si(spread_of(d["ovh_p50_us"])),
            "overhead p99 µs": fmt_si(spread_of(d["ovh_p99_us"])),
            "overhead share of p50": fmt(spread_of(d["ovh_share_p50"])),
        }
    )
ovh_table = pd.DataFrame(rows)
ovh_table

# %%
c_lo, c_hi = min(S["concurrency"]), max(S["concurrency"])


def share(mode, up, c):
    return values_at(ok, f"{mode} up={up}", c, "ovh_share_p50")


def share_ratio(mode, c):
    return metric(
        *ratio_spread(share(mode, "fast", c), share(mode, "slow", c)),
        desc=f"overhead share of client p50, fast / slow upstream, {mode}, c={c} (one interleaved sweep)",
    )


for mode in S["modes"]:
    tag = mode.replace("+", "")
    for c in (c_lo, c_hi):
        gated(METRICS, MISSING, f"ovh_share_fast_over_slow_{tag}_c{c}", share_ratio, mode, c)


def visible():
    f, sl = share("py", "fast", c_lo), share("py", "slow", c_lo)
    return (
        f"With `py` at c={c_lo}, the gateway is **{f[0]:.0%}** of what the client waits for against the fast "
        f"upstream and **{sl[0]:.1%}** against the slow one: the same code, "
        f"{f[0] / sl[0]:.0f}x more visible when the upstream is fast."
    )


display(Markdown(shown(visible)))
display(write_missing(run.path, MISSING))
pd.DataFrame(METRICS).T

# %% [markdown]
# ## Blog export
#
# Markdown tables (each with its spread and the machine line under it), static PNG and
# SVG images, and standalone HTML figures, written to `blog/` in the run folder.

# %%
written = export(
    run.path,
    tables={
        "overhead": (
            ovh_table,
            "Gateway overhead, fast vs slow upstream: median [min–max] over repeats, closed loop",
        ),
    },
    figures={
        "overhead_vs_concurrency": fig_ovh,
    },
    profile=profile,
    meta=run.meta,
)
display(Markdown("\n".join(f"- `{p}`" for kind in written.values() for p in kind)))

# %%
# the ratios the CI regression check reads (data/baselines/<notebook>.json)
print(write_metrics(run.path, NOTEBOOK, profile, METRICS))
pd.DataFrame(METRICS).T[["value", "min", "max", "desc"]]
