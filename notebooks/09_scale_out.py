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
# # 09 · Scale out or scale up: N gateway workers against one
#
# **The seeds' advice (000/001).** From a throughput knee past c = 4 on a 4-core Xeon, the
# seeds conclude "scale out, not up per worker": several pinned workers with low
# concurrency each, rather than one process taking all the concurrency. Until `--workers N`
# existed the gateway was one process whatever the profile, so the advice could not be
# tested. Here every rung runs as 1, 2, ... worker processes on one port (one per gateway
# core, docs/workers.md) across concurrencies, and the knee of each curve is located.
#
# **What is measured**, per rung × workers × c: req/s (**exact**, completed 2xx per second
# over the window), added latency (gateway minus direct-to-mock, HDR, **exact**), gateway CPU
# (the process tree, /proc, **exact**) and per worker (the `workers` table), and inside each
# worker two GIL views: GIL acquisition latency (**exact**, a probe thread) and event-loop lag
# (**exact**). Then the cost of the sharded ledger per request: the same rung with the audit
# ledger on and off, for one process (one ledger) and for N workers (one ledger shard each).
#
# **Machine.** The profile asks for 4 gateway cores (`xeon-4c`). On a smaller machine it is
# clamped and the workers share cores: with 2 CPUs, worker 0 gets the gateway core and
# worker 1 the core the mock upstream and the load generator run on. Every figure and table
# below says so; the closing section says what would change on the named hardware.

# %% [markdown]
# **How it is measured.** `harness.infra.sweep.run_sweep(workers=...)`: the native mock upstream and
# the native load generator run as separate processes pinned to their cores; the gateway
# runs as one plain process (workers = 1) or as a unit of N workers sharing one listening
# socket, worker k pinned to the k-th core `harness.infra.profiles.place_workers` gives it. Each cell
# is a **closed-loop** window at fixed concurrency c after a warm-up; configurations alternate
# inside each repeat. The knee of a curve is the first c after which the next step of c
# adds less than 10% throughput (`knee()` below).

# %% tags=["parameters"]
# papermill parameters: "full" is the real study, "ci" a small fast run (make test)
profile = "full"
run_dir = None  # papermill passes a folder; None -> data/runs/<UTC time>-<notebook>/
live_panel = True  # the live sweep widget; headless runs turn it off (its JS would bloat the saved notebook)

# %%
# %load_ext lab_ext
import pandas as pd
import plotly.express as px
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from harness.infra.profiles import place_workers, resolve
from harness.notebooks import metric, write_metrics
from lab_ext.export import export, machine_line
from lab_ext.magics import run_sweep_with_panel
from lab_ext.nb import (
    agg,
    error_bars,
    fmt,
    fmt_si,
    label_cells,
    notebook_run,
    ok_cells,
    ratio_spread,
    spread_of,
    values_at,
)
from lab_ext.widgets import SweepPanel

NOTEBOOK = "09_scale_out"
SIZES = {
    "full": dict(
        rungs=["py", "py+rs", "rs-core", "rs-server"],
        workers=[1, 2, 4],
        concurrency=[1, 2, 4, 8, 16],
        hw_profile="xeon-4c",
        duration_s=5.0,
        warmup_s=1.0,
        repeat=3,
        ledger_rungs=["py", "rs-core"],
        ledger_concurrency=16,
        capacity=True,
    ),
    "ci": dict(
        rungs=["py", "rs-core"],
        workers=[1, 2],
        concurrency=[1, 16],
        hw_profile="xeon-4c",
        duration_s=0.5,
        warmup_s=0.2,
        repeat=1,
        ledger_rungs=["py"],
        ledger_concurrency=16,
        capacity=False,
    ),
}
assert profile in SIZES, f"profile must be one of {list(SIZES)}, got {profile!r}"
S = SIZES[profile]
assert S["ledger_concurrency"] in S["concurrency"] and set(S["ledger_rungs"]) <= set(S["rungs"])
run = notebook_run(NOTEBOOK, profile, run_dir, parameters=S)
MACHINE = machine_line(run.meta, profile)
METRICS = {}
hw = resolve(S["hw_profile"])
placements = {w: place_workers(hw, w) for w in S["workers"]}
CLAMPED = (not hw.profile_satisfied) or any(not p.satisfied for p in placements.values())
CLAMP = (
    (
        "CLAMPED on this machine: "
        + "; ".join(
            dict.fromkeys(
                [f"profile {hw.name}: {n}" for n in hw.notes]
                + [n for p in placements.values() for n in p.notes if not n.startswith("profile: ")]
            )
        )
    )
    if CLAMPED
    else f"profile {hw.name} satisfied"
)
print(MACHINE)
print(CLAMP)
for p in placements.values():
    print(p.line())
print("run folder:", run.path)


# %%
def labelled(title: str) -> dict:
    """Every figure says whether the placement was clamped (the full note, CLAMP, is under every
    table: a figure's subtitle has room for one line) and how it was measured."""
    clamp = f"CLAMPED: this machine is smaller than profile {hw.name}" if CLAMPED else f"profile {hw.name}"
    return dict(
        text=title,
        subtitle=dict(
            text=f"{clamp}; closed loop; exact: 2xx counted, CPU from /proc; "
            f"median of {S['repeat']} repeat(s), bars min–max"
        ),
    )


def knee(cs, rps) -> int:
    """The first c after which the next concurrency step adds less than 10% throughput
    (the last c when every step still adds more)."""
    pts = sorted(zip(cs, rps))
    for (c0, r0), (_c1, r1) in zip(pts, pts[1:]):
        if r1 < 1.10 * r0:
            return int(c0)
    return int(pts[-1][0])


# %% [markdown]
# ## Throughput against concurrency, per rung and worker count

# %%
n_cells = len(S["rungs"]) * len(S["workers"]) * len(S["concurrency"]) * S["repeat"]
panel = SweepPanel(total=n_cells, title="rungs × workers × c") if live_panel else None
if panel is not None:
    display(panel.widget)
res = run_sweep_with_panel(
    panel,
    modes=S["rungs"],
    workers=S["workers"],
    concurrency=S["concurrency"],
    profile=S["hw_profile"],
    duration_s=S["duration_s"],
    warmup_s=S["warmup_s"],
    repeat=S["repeat"],
    gil=False,
    out=run.path,
    name="scaleout",
    capacity=S["capacity"],
    report=False,
)
cells = label_cells(res.table)
run.write_table("cells", cells)
ok = ok_cells(cells, NOTEBOOK)
wtab = pd.read_parquet(res.dir / "workers.parquet")
run.write_table("workers", wtab)
capacity = res.capacity
cap_rps = (
    float(capacity["rps"].iloc[0])
    if capacity is not None and len(capacity) and capacity["status"].iloc[0] == "ok"
    else float("nan")
)
print(
    f"load generator capacity against the mock: {cap_rps:,.0f} req/s"
    if cap_rps == cap_rps
    else "load generator capacity: not measured at this size"
)
ok[["label", "workers", "concurrency", "rps", "ovh_p50_us", "cpu_cores", "loop_lag_p99_us", "clamped"]]

# %%
palette = px.colors.qualitative.Plotly
fig_curves = make_subplots(rows=1, cols=len(S["rungs"]), subplot_titles=S["rungs"], shared_yaxes=True)
for i, rung in enumerate(S["rungs"]):
    for j, w in enumerate(S["workers"]):
        d = agg(ok[(ok["mode"] == rung) & (ok["workers"] == w)], "rps")
        fig_curves.add_scatter(
            x=d["concurrency"],
            y=d["median"],
            error_y=error_bars(d),
            mode="lines+markers",
            name=f"{w} worker(s)",
            legendgroup=str(w),
            showlegend=i == 0,
            line=dict(color=palette[j % 10]),
            row=1,
            col=i + 1,
        )
    fig_curves.update_xaxes(
        title_text="concurrency c", type="log", tickvals=S["concurrency"], row=1, col=i + 1
    )
if cap_rps == cap_rps:  # measured (not at ci size)
    fig_curves.add_hline(y=cap_rps, line_dash="dot", annotation_text="load generator capacity")
fig_curves.update_yaxes(title_text="req/s", row=1, col=1)
fig_curves.update_layout(
    height=430, margin_t=120, title=labelled("req/s against c, one line per worker count")
)
fig_curves

# %% [markdown]
# ## Where the knee is, and what CPU and the GIL views say there
#
# Per curve: the knee (the first c after which the next step of c adds < 10% req/s), req/s there,
# the gateway's CPU at the knee (cores busy, the whole process tree) and each worker's share,
# GIL acquisition latency p99 and event-loop lag p99 (worker 0's in the cells table; every
# worker's in the `workers` table, summarised as the worst worker here).

# %%
rows = []
for (rung, w), d in ok.groupby(["mode", "workers"], sort=False):
    a = agg(d, "rps")
    k = knee(a["concurrency"], a["median"])
    at = d[d["concurrency"] == k]
    wk = wtab[(wtab["mode"] == rung) & (wtab["workers"] == w) & (wtab["concurrency"] == k)]
    per_worker = wk.groupby("worker")["cpu_cores"].median()
    rows.append(
        {
            "rung": rung,
            "workers": int(w),
            "knee c": k,
            "req/s at knee": fmt_si(spread_of(at["rps"])),
            "peak req/s": fmt_si(
                spread_of(d[d["concurrency"] == a.loc[a["median"].idxmax(), "concurrency"]]["rps"])
            ),
            "gateway CPU cores at knee": fmt(spread_of(at["cpu_cores"])),
            "CPU per worker at knee": " / ".join(f"{v:.2f}" for v in per_worker) or "–",
            "GIL wait p99 µs (worst worker)": f"{wk['gil_wait_p99_us'].max():.0f}"
            if wk["gil_wait_p99_us"].notna().any()
            else "n/a (no interpreter)",
            "loop lag p99 µs (worst worker)": f"{wk['loop_lag_p99_us'].max():.0f}"
            if wk["loop_lag_p99_us"].notna().any()
            else "n/a (no interpreter)",
            "clamped": bool(d["clamped"].any()),
        }
    )
knee_table = pd.DataFrame(rows)
knee_table

# %%
fig_cpu = make_subplots(
    rows=1, cols=2, subplot_titles=("gateway CPU cores (process tree)", "CPU µs per request")
)
for j, (label, d) in enumerate(agg(ok, "cpu_cores").groupby("label", sort=False)):
    fig_cpu.add_scatter(
        x=d["concurrency"],
        y=d["median"],
        name=label,
        legendgroup=label,
        mode="lines+markers",
        line=dict(color=palette[j % 10]),
        error_y=error_bars(d),
        row=1,
        col=1,
    )
for j, (label, d) in enumerate(agg(ok, "cpu_us_per_req").groupby("label", sort=False)):
    fig_cpu.add_scatter(
        x=d["concurrency"],
        y=d["median"],
        name=label,
        legendgroup=label,
        showlegend=False,
        mode="lines+markers",
        line=dict(color=palette[j % 10]),
        error_y=error_bars(d),
        row=1,
        col=2,
    )
for col in (1, 2):
    fig_cpu.update_xaxes(title_text="concurrency c", type="log", tickvals=S["concurrency"], row=1, col=col)
fig_cpu.update_layout(
    height=430, margin_t=120, title=labelled("What the gateway's CPU does as workers are added")
)
fig_cpu

# %% [markdown]
# ## The sharded ledger's cost per request
#
# The same rung with the audit ledger on and off (`governance` on against stages-only: every
# hot-path stage runs in both), for one process writing one ledger and for N workers writing
# one shard each. The ledger-on cells are the sweep's above (same run, same c); this sweep
# adds the ledger-off ones. Cost = CPU µs per request with the ledger minus without, and the share of
# throughput the ledger keeps. The single-writer design (workers hand records to one ledger
# process) is issue-13b's and is not measured here.

# %%
lw = [w for w in S["workers"] if w > 1][:1]
led = run_sweep_with_panel(
    None,
    modes=S["ledger_rungs"],
    workers=[1, *lw],
    concurrency=[S["ledger_concurrency"]],
    profile=S["hw_profile"],
    duration_s=S["duration_s"],
    warmup_s=S["warmup_s"],
    repeat=S["repeat"],
    gil=False,
    out=run.path,
    name="ledger",
    capacity=False,
    report=False,
    governance=["stages-only"],
)
lcells = label_cells(led.table)
run.write_table("ledger_cost", lcells)
lok = pd.concat([ok_cells(lcells, NOTEBOOK), ok[ok["mode"].isin(S["ledger_rungs"])]], ignore_index=True)
c_l = S["ledger_concurrency"]
rows = []
for rung in S["ledger_rungs"]:
    for w in [1, *lw]:
        base = rung + (f" w={w}" if w > 1 else "")
        on_cpu = values_at(lok, base, c_l, "cpu_us_per_req")
        off_cpu = values_at(lok, base.replace(rung, f"{rung} gov=stages-only", 1), c_l, "cpu_us_per_req")
        on_rps = values_at(lok, base, c_l, "rps")
        off_rps = values_at(lok, base.replace(rung, f"{rung} gov=stages-only", 1), c_l, "rps")
        cost = spread_of([a - b for a, b in zip(on_cpu, off_cpu)])
        rows.append(
            {
                "rung": rung,
                "workers": w,
                "ledger": "single" if w == 1 else f"sharded ({w} shards)",
                f"CPU µs/req ledger on (c={c_l})": fmt(on_cpu),
                "ledger off": fmt(off_cpu),
                "ledger cost, CPU µs/req": f"{on_cpu[0] - off_cpu[0]:.0f}",
                "req/s kept with the ledger": fmt(ratio_spread(on_rps, off_rps)),
                "clamped": CLAMPED,
            }
        )
        METRICS[f"ledger_cpu_us_per_req_{rung.replace('+', '').replace('-', '')}_w{w}"] = metric(
            on_cpu[0] - off_cpu[0],
            unit="µs",
            desc=f"{rung}, {w} worker(s): CPU µs/req ledger on - off at c={c_l}",
        )
ledger_table = pd.DataFrame(rows)
ledger_table

# %% [markdown]
# ## The seeds' advice against the data

# %%
c_hi = max(S["concurrency"])
w_hi = max(S["workers"])
verdict = []
for rung in S["rungs"]:
    tag = rung.replace("+", "").replace("-", "")
    one = values_at(ok, rung, c_hi, "rps")
    many = values_at(ok, f"{rung} w={w_hi}", c_hi, "rps") if w_hi > 1 else one
    r = ratio_spread(many, one)
    METRICS[f"rps_w{w_hi}_over_w1_{tag}_c{c_hi}"] = metric(
        *r, desc=f"req/s {w_hi} workers / 1 at c={c_hi}, {rung}"
    )
    cpu1 = values_at(ok, rung, c_hi, "cpu_us_per_req")[0]
    cpun = values_at(ok, f"{rung} w={w_hi}", c_hi, "cpu_us_per_req")[0] if w_hi > 1 else cpu1
    verdict.append(
        {
            "rung": rung,
            f"req/s 1 worker (c={c_hi})": fmt_si(one),
            f"req/s {w_hi} workers": fmt_si(many),
            f"{w_hi} workers / 1": fmt(r),
            "CPU µs/req 1 → N": f"{cpu1:.0f} → {cpun:.0f}",
            "scale out pays here": bool(r[1] > 1.0),
            "clamped": CLAMPED,
        }
    )
verdict_table = pd.DataFrame(verdict)
verdict_table

# %%
pays = [v["rung"] for v in verdict if v["scale out pays here"]]
mixed = [v["rung"] for v in verdict if not v["scale out pays here"]]
kn = {(r["rung"], r["workers"]): r["knee c"] for r in knee_table.to_dict("records")}
beyond = "beyond the spread of the repeats" if S["repeat"] > 1 else "(one repeat: no spread to judge by)"
rise = (
    (
        f"throughput rose {beyond} on {', '.join(f'`{r}`' for r in pays)}"
        + (f" and did not on {', '.join(f'`{r}`' for r in mixed)}" if mixed else "")
    )
    if pays
    else f"throughput did not rise {beyond} on any rung ({', '.join(f'`{r}`' for r in mixed)})"
)
text = (
    f"With {w_hi} workers at c={c_hi}, {rise}. Knees (1 → {w_hi} workers): "
    + "; ".join(f"`{r}` c={kn.get((r, 1), '?')} → c={kn.get((r, w_hi), '?')}" for r in S["rungs"])
    + ". "
    + (
        f"**This machine is smaller than the profile** ({CLAMP}): the extra workers run on the core the mock "
        f"and the load generator use, so every worker added takes CPU from the load that measures it; a gain here "
        f"understates what a dedicated core gives, and a loss can be the load generator's, not the gateway's. "
        f"On `xeon-4c` (4 gateway cores, mock and load on their own cores) each worker would own a core, so the "
        f"same sweep would measure the gateway's scaling rather than its contention with the load generator, up to "
        f"the mock's or the load generator's own limit"
        + (f" (capacity here: {cap_rps:,.0f} req/s)" if cap_rps == cap_rps else "")
        + "; only there can the seeds' recipe (pinned workers, low concurrency each) be confirmed or refuted, "
        "and `rs-server` be compared fairly as one process of N threads against N processes of one thread. "
        if CLAMPED
        else "The profile is satisfied: each worker owned its core. "
    )
    + "The audit ledger costs "
    + "; ".join(
        f"{r['ledger cost, CPU µs/req']} µs of gateway CPU per request on `{r['rung']}` as "
        + (
            "one ledger (one process)"
            if r["workers"] == 1
            else f"{r['workers']} shards ({r['workers']} workers)"
        )
        for r in ledger_table.to_dict("records")
    )
    + " (ledger on minus off, same rung, same run"
    + (", one repeat: indicative only" if S["repeat"] == 1 else "")
    + ")."
)
display(Markdown(text))
run.write_json("closing.json", {"text": text, "clamped": CLAMPED, "clamp": CLAMP})

# %% [markdown]
# ## Blog export
#
# Markdown tables (each with its spread, the machine line and the clamping under it), static
# PNG and SVG images, and standalone HTML figures, written to `blog/` in the run folder.

# %%
written = export(
    run.path,
    tables={
        "knees": (knee_table, f"Knee per rung and worker count, with CPU and GIL views there. {CLAMP}"),
        "ledger": (
            ledger_table,
            f"The sharded ledger's cost per request (ledger on - off, same rung). {CLAMP}",
        ),
        "verdict": (verdict_table, f"Scale out against up: N workers / 1 at c={c_hi}. {CLAMP}"),
    },
    figures={"curves": fig_curves, "cpu": fig_cpu},
    profile=profile,
    meta=run.meta,
)
display(Markdown("\n".join(f"- `{p}`" for kind in written.values() for p in kind)))

# %%
# the ratios of this study (no regression gate: data/baselines/ has no file for 09)
print(write_metrics(run.path, NOTEBOOK, profile, METRICS))
pd.DataFrame(METRICS).T[["value", "min", "max", "desc"]]
