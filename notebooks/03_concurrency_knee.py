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
# # 03 · The concurrency knee: does the GIL explain it?
#
# **The seed's claim.** Throughput stops growing past c = 4, "caused by GIL contention" --
# inferred from the throughput curve, never measured.
#
# **What is measured.** Three rungs of the Rust ladder across concurrencies: `py` (every
# Python twin), `py+rs` (every Rust twin behind the same Python ASGI shell, one FFI call per
# stage) and `rs-core` (the same shell making one awaitable Rust call that runs the whole hot
# path and the audit ledger, the GIL released throughout), with the four GIL views beside
# throughput:
# 1. **sampled** GIL ownership: share of py-spy samples (`--gil --idle`) in which a thread holds the GIL;
# 2. **exact** Rust entry points: time the extension held the GIL, ran detached, waited to re-acquire it;
# 3. **exact** GIL acquisition latency: a probe thread inside the gateway that repeatedly asks for the GIL;
# 4. **exact** event-loop lag: how late `call_later` callbacks fire on the gateway's loop.
# CPU (user+sys seconds per second of the gateway process tree, from /proc) is shown too:
# a knee where one core is saturated is a different story from a knee where threads queue
# for the GIL.
#
# **Two kinds of cell.** The views need probes inside the gateway (a probe thread waking every
# 2 ms, a loop ticker every 10 ms, py-spy sampling from outside) that cost throughput, so they
# run in cells of their own (`probes=on`), interleaved with throughput cells that carry no probe
# at all: throughput, CPU and every gated ratio come from the throughput cells, the four views
# from the view cells at the same concurrency. Every rung runs with its rate limiter doing
# bucket work (limits far above the load), every claimed stage is shown to have run by the
# gateway's own counters, CPU per request is over successful answers, and a cell with an error
# it did not set out to cause is not used.

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
    NotMeasured,
    agg,
    error_bars,
    fmt,
    fmt_si,
    gated,
    label_cells,
    notebook_run,
    ratio_spread,
    spread_of,
    usable_cells,
    values_at,
    write_missing,
)
from lab_ext.widgets import SweepPanel

NOTEBOOK = "03_concurrency_knee"
SIZES = {
    "full": dict(
        modes=["py", "py+rs", "rs-core"],
        concurrency=list(range(1, 17)),
        hw_profile="xeon-4c",
        duration_s=5.0,
        warmup_s=1.0,
        repeat=3,
        capacity=True,
        report=True,
    ),
    "ci": dict(
        modes=["py", "py+rs", "rs-core"],
        concurrency=[1, 4, 16],
        hw_profile="ci-2c",
        duration_s=1.5,
        warmup_s=0.5,
        repeat=1,
        capacity=True,
        report=False,
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

# %% [markdown]
# ## Run the sweep (live panel: progress, throughput and GIL wait per cell)

# %%
panel = (
    SweepPanel(total=2 * len(S["modes"]) * len(S["concurrency"]) * S["repeat"], title=NOTEBOOK)
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
    repeat=max(S["repeat"], confirm_rounds),
    order="alternate" if confirm_rounds else "fixed",  # a confirmation: A B C, C B A, ...
    gil=True,
    out=run.path,
    name="knee",
    capacity=S["capacity"],
    report=S["report"],
    report_images=False,
)
cells = label_cells(res.table)
run.write_table("cells", cells)
print("sweep run folder:", res.dir)
cells[
    [
        "label",
        "concurrency",
        "repeat",
        "status",
        "rps",
        "cpu_cores",
        "gil_held_share",
        "gil_wait_p99_us",
        "loop_lag_p99_us",
        "stage_check",
        "probes_missing",
    ]
]

# %%
ok = usable_cells(cells, NOTEBOOK)
ok = ok.assign(
    native_hold_share=ok["native_hold_s"] / ok["duration_s"],
    native_wait_share=ok["native_wait_s"] / ok["duration_s"],
)
# throughput cells (no probe inside the gateway) and view cells (the probes on), both by mode
tput = ok[ok["probes"] == "off"].assign(label=lambda d: d["mode"])
view = ok[ok["probes"] == "on"].assign(label=lambda d: d["mode"])
views = [
    ("rps", "throughput (2xx/s)", "exact, throughput cells", tput),
    ("cpu_cores", "gateway CPU (cores)", "exact, /proc, throughput cells", tput),
    ("gil_held_share", "1 · GIL held share", "sampled, py-spy, view cells", view),
    (
        "native_hold_share",
        "2 · Rust entry points: GIL held (s/s)",
        "exact, extension counters, view cells",
        view,
    ),
    ("gil_wait_p99_us", "3 · GIL acquisition wait p99 (µs)", "exact, probe thread, view cells", view),
    ("loop_lag_p99_us", "4 · event-loop lag p99 (µs)", "exact, call_later, view cells", view),
]
fig_knee = make_subplots(
    rows=3,
    cols=2,
    subplot_titles=[f"{t}<br><sup>{how}</sup>" for _, t, how, _ in views],
    vertical_spacing=0.12,
)
palette = px.colors.qualitative.Plotly
for i, (col, _title, _how, src) in enumerate(views):
    a = agg(src, col)
    for j, (label, d) in enumerate(a.groupby("label", sort=False)):
        fig_knee.add_scatter(
            x=d["concurrency"],
            y=d["median"],
            name=label,
            legendgroup=label,
            showlegend=(i == 0),
            mode="lines+markers",
            line=dict(color=palette[j % 10]),
            error_y=error_bars(d),
            row=i // 2 + 1,
            col=i % 2 + 1,
        )
fig_knee.update_xaxes(type="log", tickvals=S["concurrency"])  # ticks at the measured c only
fig_knee.update_xaxes(title_text="concurrency c", row=3)
fig_knee.update_layout(
    height=950,
    margin_t=130,  # the subtitle above the first row's panel titles
    title=dict(
        text="Throughput and the four GIL views against concurrency",
        subtitle=dict(
            text=f"closed loop; median of {S['repeat']} repeat(s) per point, bars min–max; "
            "each panel says exact or sampled"
        ),
    ),
)
fig_knee

# %% [markdown]
# ## Where is the knee, and what do the GIL views say there?
#
# The knee is the smallest c at which throughput reaches 90% of its maximum. At the knee and
# at the top concurrency the table puts throughput beside CPU and the GIL views. If the GIL
# were the cause (threads contending for it), the probe's wait and the share held by
# threads *other* than the event loop would climb at the knee while CPU stays below one
# core; if instead one core is saturated by the event-loop thread, the knee is CPU
# saturation of a single interpreter thread, and the GIL is merely held by the only thread
# that has work.

# %%
rows = []
for label, d in agg(tput, "rps").groupby("label", sort=False):
    top = d["median"].max()
    knee = int(d.loc[d["median"] >= 0.9 * top, "concurrency"].min())  # first c within 10% of the top
    for c in sorted({int(d["concurrency"].min()), knee, int(d["concurrency"].max())}):
        tc = tput[(tput["label"] == label) & (tput["concurrency"] == c)]
        cc = view[(view["label"] == label) & (view["concurrency"] == c)]
        rows.append(
            {
                "label": label,
                "c": c,
                "knee": c == knee,
                "rps": fmt_si(spread_of(tc["rps"])) if len(tc) else "not measured",
                "CPU cores": fmt(spread_of(tc["cpu_cores"])) if len(tc) else "not measured",
                "GIL held (sampled)": fmt(spread_of(cc["gil_held_share"]))
                if cc["gil_held_share"].notna().any()
                else "n/a",
                "held by other threads (sampled)": fmt(spread_of(cc["gil_other_share"]))
                if cc["gil_other_share"].notna().any()
                else "n/a",
                "GIL wait p99 µs (exact)": fmt_si(spread_of(cc["gil_wait_p99_us"]))
                if cc["gil_wait_p99_us"].notna().any()
                else "n/a",
                "loop lag p99 µs (exact)": fmt_si(spread_of(cc["loop_lag_p99_us"]))
                if cc["loop_lag_p99_us"].notna().any()
                else "n/a",
            }
        )
knee_table = pd.DataFrame(rows)
knee_table


# %%
def med(src, label, c, col):
    v = src[(src["label"] == label) & (src["concurrency"] == c)][col].dropna()
    return float(v.median()) if len(v) else float("nan")


lines = []
c_lo, c_hi = min(S["concurrency"]), max(S["concurrency"])
for label in tput["label"].unique():
    cpu, held, other = (
        med(tput, label, c_hi, "cpu_cores"),
        med(view, label, c_hi, "gil_held_share"),
        med(view, label, c_hi, "gil_other_share"),
    )
    w_lo, w_hi = med(view, label, c_lo, "gil_wait_p99_us"), med(view, label, c_hi, "gil_wait_p99_us")
    cores = run.meta.get("cores_used") or 1
    if cpu >= 0.85 and (other != other or other < 0.25):
        verdict = (
            "one interpreter thread is saturated: the knee is CPU saturation of the event-loop thread; "
            "the GIL is held because that thread always has work, not because threads fight over it"
        )
    elif other == other and other >= 0.25:
        verdict = "threads other than the event loop hold the GIL a large share of the time: contention is real here"
    else:
        verdict = "the gateway is not CPU-bound at the top concurrency: the limit is elsewhere (upstream, load, I/O)"
    lines.append(
        f"- **{label}** at c={c_hi}: CPU {cpu:.2f} cores, GIL held {held:.0%} (other threads {other:.0%}), "
        f"GIL wait p99 {w_lo:.0f} → {w_hi:.0f} µs from c={c_lo}: {verdict}."
    )
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## What crossing from asyncio into Rust and back costs, per request
#
# On `py+rs` the forwarder's call returns an asyncio awaitable made by pyo3-async-runtimes: one
# asyncio future per call, the task's context copied, and a thread-safe callback per
# completion. On `rs-core` the shell creates a plain future, `RsCore.submit` hands the request
# to Tokio (detached from the GIL while the worker is woken), and completions come back
# through one eventfd: the loop's reader drains every completion waiting in one call. The
# extension's own counters (**exact**) give the GIL time per request on each side of the
# crossing: `forwarder.send` on `py+rs`; `rs_core.submit` plus `rs_core.drain` (one drain per
# wake-up, shared by the completions it hands over) on `rs-core`.

# %%
entries = pd.read_parquet(res.dir / "gil_entries.parquet")  # view cells only: the counters are a probe
requests_by_cell = view.groupby(["cell", "repeat"])["requests"].first()
CROSSING = {"py+rs": ["forwarder.send"], "rs-core": ["rs_core.submit", "rs_core.drain"]}
rows = []
for (cell, rep, mode, c), d in entries.groupby(["cell", "repeat", "mode", "concurrency"]):
    if mode not in CROSSING or (cell, rep) not in requests_by_cell.index:
        continue
    n = requests_by_cell[(cell, rep)]
    sel = d[d["entry"].isin(CROSSING[mode])]
    drains = d.loc[d["entry"] == "rs_core.drain", "calls"].sum()
    rows.append(
        {
            "mode": mode,
            "c": int(c),
            "repeat": int(rep),
            "GIL µs per request (exact)": sel["hold_us"].sum() / n,
            "completions per wake-up": (n / drains) if drains else float("nan"),
        }
    )
crossing = pd.DataFrame(rows)
crossing_table = (
    crossing.groupby(["mode", "c"])
    .agg(
        **{
            "GIL µs per request (exact)": ("GIL µs per request (exact)", lambda v: fmt(spread_of(v))),
            "completions per wake-up": (
                "completions per wake-up",
                lambda v: fmt(spread_of(v)) if v.notna().any() else "n/a",
            ),
        }
    )
    .reset_index()
)
crossing_table


# %%
def ratio(a, ca, b, cb, col, desc):
    """A ratio of two throughput cells' figures (label "py" etc.: the cells without probes)."""
    return metric(*ratio_spread(values_at(cells, a, ca, col), values_at(cells, b, cb, col)), desc=desc)


def crossing_ratio(c):
    sel = crossing[crossing["c"] == c] if len(crossing) else crossing
    a = sel.loc[sel["mode"] == "rs-core", "GIL µs per request (exact)"] if len(sel) else []
    b = sel.loc[sel["mode"] == "py+rs", "GIL µs per request (exact)"] if len(sel) else []
    if not (len(a) and len(b)):
        raise NotMeasured(f"no ok view cell of rs-core and py+rs at c={c} (the crossing's counters)")
    return metric(
        *ratio_spread(spread_of(a), spread_of(b)),
        desc=f"GIL µs per request at the asyncio/Rust crossing, rs-core / py+rs, c={c}",
    )


for c in (c_lo, c_hi):
    gated(METRICS, MISSING, f"rscore_over_pyrs_crossing_gil_c{c}", crossing_ratio, c)
    gated(
        METRICS,
        MISSING,
        f"rscore_over_pyrs_rps_c{c}",
        ratio,
        "rs-core",
        c,
        "py+rs",
        c,
        "rps",
        f"rs-core / py+rs throughput at c={c}",
    )
    gated(
        METRICS,
        MISSING,
        f"rscore_over_pyrs_cpu_c{c}",
        ratio,
        "rs-core",
        c,
        "py+rs",
        c,
        "cpu_us_per_req",
        f"rs-core / py+rs CPU µs per request at c={c}",
    )

# %%
for c in (c_lo, c_hi):
    gated(
        METRICS,
        MISSING,
        f"pyrs_over_py_rps_c{c}",
        ratio,
        "py+rs",
        c,
        "py",
        c,
        "rps",
        f"py+rs / py throughput at c={c}",
    )
gated(
    METRICS,
    MISSING,
    "py_rps_cmax_over_c1",
    ratio,
    "py",
    c_hi,
    "py",
    c_lo,
    "rps",
    f"py throughput at c={c_hi} / at c={c_lo} (how far concurrency helps)",
)
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
        "knee": (
            knee_table,
            "py, py+rs and rs-core at the first, knee and top concurrency: median [min–max] over repeats",
        ),
        "crossing": (
            crossing_table,
            "GIL time per request at the asyncio/Rust crossing (exact, extension counters): median [min–max] over repeats",
        ),
    },
    figures={
        "knee_gil_views": fig_knee,
    },
    profile=profile,
    meta=run.meta,
)
display(Markdown("\n".join(f"- `{p}`" for kind in written.values() for p in kind)))

# %%
# the ratios the CI regression check reads (data/baselines/<notebook>.json)
print(write_metrics(run.path, NOTEBOOK, profile, METRICS))
pd.DataFrame(METRICS).T[["value", "min", "max", "desc"]]
