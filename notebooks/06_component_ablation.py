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
# # 06 · Component ablation: which component is worth moving to Rust?
#
# **What is measured.** Starting from `py` (every Python twin), one component at a time is
# switched to its Rust twin (`--impl COMPONENT=rust`), and finally all of them (`py+rs`), at
# one concurrency. Throughput (**closed loop**) and gateway CPU per request (**exact**,
# /proc) are compared with the all-Python baseline of the same run. CPU per request is the
# steadier attribution: it counts the work each request costs regardless of how the
# machine's other load moved throughput. Every configuration, `py+rs` and `rs-core`
# included, is one sweep: they alternate inside each repeat so drift spreads over all of
# them. Every stage runs (the rate limiter with limits far above the load; the gateway's
# counters show each stage ran), CPU per request is over successful answers, and a cell with
# an error it did not set out to cause is not used (a metric that needs it is reported missing).

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
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from harness import work_gates
from harness.bench import instructions
from harness.notebooks import metric, write_metrics
from lab_ext.export import export, machine_line
from lab_ext.magics import run_sweep_with_panel
from lab_ext.nb import (
    NotMeasured,
    fmt,
    fmt_si,
    gated,
    label_cells,
    notebook_run,
    ratio_spread,
    shown,
    spread_of,
    usable_cells,
    write_missing,
)
from lab_ext.widgets import SweepPanel

NOTEBOOK = "06_component_ablation"
SIZES = {
    "full": dict(
        components=None, concurrency=[8], hw_profile="xeon-4c", duration_s=5.0, warmup_s=1.0, repeat=3
    ),
    # CI: the components with the most work per request, to keep `make test` short; two
    # repeats so that one stalled cell on a loaded machine does not decide the throughput gate
    "ci": dict(
        components=["waf", "adapter", "mmr", "forwarder"],
        concurrency=[4],
        hw_profile="ci-2c",
        duration_s=1.5,
        warmup_s=0.5,
        repeat=2,
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
from gateway.twins import COMPONENTS

# the router works only on a model group and this sweep has one upstream per model, so its row
# would measure the router switched off: notebook 10 measures it, per twin, on a group of four
COMPONENTS = S["components"] or [c for c in COMPONENTS if c != "router"]
print("components:", ", ".join(COMPONENTS))

# %%
switch_sets = [{}] + [{c: "rust"} for c in COMPONENTS]
n_cfg = len(switch_sets) + 2  # + py+rs (every component) + rs-core (the whole pipeline in one call)
panel = (
    SweepPanel(total=n_cfg * len(S["concurrency"]) * max(S["repeat"], confirm_rounds), title=NOTEBOOK)
    if live_panel
    else None
)
if panel is not None:
    display(panel.widget)
# one sweep: py with each switch set, then py+rs and rs-core (a switch set gives py+rs nothing new).
# A confirmation (confirm_rounds > 0) measures that many repeats, reversing the order every other
# round, so that the gated py+rs / py ratios are measured interleaved.
res = run_sweep_with_panel(
    panel,
    modes=["py", "py+rs", "rs-core"],
    switches=switch_sets,
    concurrency=S["concurrency"],
    profile=S["hw_profile"],
    duration_s=S["duration_s"],
    warmup_s=S["warmup_s"],
    repeat=max(S["repeat"], confirm_rounds),
    order="alternate" if confirm_rounds else "fixed",
    gil=False,
    out=run.path,
    name="ablation",
    capacity=False,
    report=False,
)
cells = label_cells(res.table)
run.write_table("cells", cells)
ok = usable_cells(cells, NOTEBOOK)
cells[["label", "concurrency", "repeat", "status", "rps", "cpu_us_per_req", "ovh_p50_us", "stage_check"]]


# %%
def label_spread(label, col):
    v = ok.loc[ok["label"] == label, col].dropna()
    if v.empty:
        why = "; ".join(cells.loc[cells["label"] == label, "error"]) or "no such cell"
        raise NotMeasured(f"no ok cell for {label} ({col}): {why[:500]}")
    return spread_of(v)


try:
    base_rps, base_cpu = label_spread("py", "rps"), label_spread("py", "cpu_us_per_req")
    base_missing = None
except NotMeasured as e:  # no all-Python baseline: nothing below can be compared with it
    base_missing = e
rows = []
for label, d in ok.groupby("label", sort=False):
    if base_missing is not None:
        break
    rps, cpu = spread_of(d["rps"]), spread_of(d["cpu_us_per_req"])
    comp = (
        label[len("py[") : -1].replace("=rust", "")
        if label.startswith("py[")
        else {"py": "(none)", "py+rs": "all (py+rs)", "rs-core": "whole pipeline, one call (rs-core)"}[label]
    )
    rows.append(
        {
            "Rust component": comp,
            "label": label,
            "rps": rps[0],
            "rps_lo": rps[1],
            "rps_hi": rps[2],
            "speedup": ratio_spread(rps, base_rps)[0],
            "speedup_lo": ratio_spread(rps, base_rps)[1],
            "speedup_hi": ratio_spread(rps, base_rps)[2],
            "cpu_us_per_req": cpu[0],
            "cpu_saved_us": base_cpu[0] - cpu[0],
        }
    )
abl = pd.DataFrame(
    rows,
    columns=[
        "Rust component",
        "label",
        "rps",
        "rps_lo",
        "rps_hi",
        "speedup",
        "speedup_lo",
        "speedup_hi",
        "cpu_us_per_req",
        "cpu_saved_us",
    ],
).sort_values("speedup", ascending=False)
single = abl[~abl["label"].isin(["py", "py+rs", "rs-core"])]


def row_of(label):
    """The ablation row of `label`: NotMeasured when it (or the py baseline) has no ok cell."""
    if base_missing is not None:
        raise base_missing
    d = abl[abl["label"] == label]
    if d.empty:
        label_spread(label, "rps")  # raises, naming the cells and why they are not ok
    return d.iloc[0]


try:
    total_saved = float(row_of("py+rs")["cpu_saved_us"])
except NotMeasured:
    total_saved = float("nan")
abl["share of all-Rust CPU saving"] = abl["cpu_saved_us"] / total_saved if total_saved else float("nan")
abl_table = pd.DataFrame(
    {
        "Rust component": abl["Rust component"],
        "throughput req/s": [fmt_si((a, b, c)) for a, b, c in zip(abl["rps"], abl["rps_lo"], abl["rps_hi"])],
        "speedup vs py": [
            fmt((a, b, c), unit="x") for a, b, c in zip(abl["speedup"], abl["speedup_lo"], abl["speedup_hi"])
        ],
        "CPU µs/request": abl["cpu_us_per_req"].round(1),
        "CPU µs saved/request": abl["cpu_saved_us"].round(1),
        "share of all-Rust saving": abl["share of all-Rust CPU saving"].map(
            lambda x: f"{x:.0%}" if x == x else "n/a"
        ),
    }
)
abl_table

# %%
fig_abl = make_subplots(
    rows=1,
    cols=2,
    subplot_titles=("throughput vs py (x)", "gateway CPU saved per request (µs)"),
    shared_yaxes=True,
    horizontal_spacing=0.04,
)
# horizontal bars: the component names read level, beside their bars
fig_abl.add_bar(
    y=abl["Rust component"],
    x=abl["speedup"],
    orientation="h",
    showlegend=False,
    error_x=dict(
        type="data",
        symmetric=False,
        array=(abl["speedup_hi"] - abl["speedup"]).tolist(),
        arrayminus=(abl["speedup"] - abl["speedup_lo"]).tolist(),
    ),
    row=1,
    col=1,
)
fig_abl.add_vline(x=1.0, line_dash="dot", row=1, col=1)
fig_abl.add_bar(
    y=abl["Rust component"], x=abl["cpu_saved_us"], orientation="h", showlegend=False, row=1, col=2
)
fig_abl.update_yaxes(autorange="reversed")
fig_abl.update_layout(
    height=450,
    margin_t=120,  # the subtitle above the panel titles
    title=dict(
        text=f"One component at a time in Rust (c={S['concurrency'][0]})",
        subtitle=dict(
            text=f"closed loop; exact: 2xx counted, CPU from /proc; median of {S['repeat']} repeats, "
            "bars min–max"
        ),
    ),
)
fig_abl

# %%
c_a = S["concurrency"][0]


def speedup(label, desc):
    r = row_of(label)
    return metric(r["speedup"], r["speedup_lo"], r["speedup_hi"], desc=desc)


def best_single():
    """The best single component: only when every single component's cells are ok (the best
    could be the one that is not)."""
    for comp in COMPONENTS:
        row_of(f"py[{comp}=rust]")
    best = single.iloc[0]
    return metric(
        best["speedup"],
        best["speedup_lo"],
        best["speedup_hi"],
        desc=f"best single Rust component ({best['Rust component']}) / py throughput",
    )


def cpu_ratio():
    return metric(
        float(row_of("py+rs")["cpu_us_per_req"]) / float(row_of("py")["cpu_us_per_req"]),
        desc="py+rs / py gateway CPU µs per successful request (lower is better)",
    )


gated(METRICS, MISSING, "all_rust_over_py_rps", speedup, "py+rs", f"py+rs / py throughput at c={c_a}")
gated(METRICS, MISSING, "rscore_over_py_rps", speedup, "rs-core", f"rs-core / py throughput at c={c_a}")
gated(METRICS, MISSING, "best_single_component_over_py_rps", best_single)
gated(METRICS, MISSING, "all_rust_over_py_cpu_per_req", cpu_ratio)


def summary_text():
    best = row_of(single.iloc[0]["label"]) if len(single) else row_of("py[none=rust]")
    summed = single["cpu_saved_us"].clip(lower=0).sum()
    return (
        f"Switching everything to Rust saves **{float(row_of('py+rs')['cpu_saved_us']):.0f} µs** of gateway CPU per "
        f"request; the single components, one at a time, save {summed:.0f} µs in total. "
        f"The biggest single win is **{best['Rust component']}** "
        f"({fmt((best['speedup'], best['speedup_lo'], best['speedup_hi']), unit='x')} throughput)."
    )


display(Markdown(shown(summary_text)))
display(write_missing(run.path, MISSING))
pd.DataFrame(METRICS).T

# %% [markdown]
# ## Each twin's advantage in instructions (the work gates)
#
# Timing at ci size cannot tell a Rust twin from its Python twin inside a whole request (the
# Python shell dominates, and the machine's load moves the rest). Cachegrind can
# (`harness.work_gates`, `gatewaylab bench instructions --components`): user-space
# instructions per call of each stage twin (auth, the WAF on a short prompt and on 4 KiB, the
# rate limiter), per audit record (entropy, canonical record, hashes, ledger append) and per
# WAL record, by the difference of two sizes. Each ratio Python / Rust is a `work` gate
# (data/baselines/README.md): a count does not move with load, so the gate sits a few percent
# from its recorded value. SHA-256 runs its portable path under valgrind (the skew column).
# A confirmation (confirm_rounds > 0) re-measures timing only: a work gate is never confirmed.

# %%
if not confirm_rounds:
    work = work_gates.measure(NOTEBOOK, profile)
    run.write_json("instructions.json", work.run.to_json())
    METRICS.update(work.metrics)
    display(Markdown(instructions.markdown(work.run)))
    display(pd.DataFrame(work.metrics).T[["value", "min", "max", "desc"]])

# %% [markdown]
# ## Blog export
#
# Markdown tables (each with its spread and the machine line under it), static PNG and
# SVG images, and standalone HTML figures, written to `blog/` in the run folder.

# %%
written = export(
    run.path,
    tables={
        "ablation": (
            abl_table,
            "One Rust component at a time on top of py: throughput median [min–max] and CPU per request",
        ),
    },
    figures={
        "ablation": fig_abl,
    },
    profile=profile,
    meta=run.meta,
)
display(Markdown("\n".join(f"- `{p}`" for kind in written.values() for p in kind)))

# %%
# the ratios the CI regression check reads (data/baselines/<notebook>.json)
print(write_metrics(run.path, NOTEBOOK, profile, METRICS))
pd.DataFrame(METRICS).T[["value", "min", "max", "desc"]]
