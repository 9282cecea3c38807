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
# # 04 · Flamegraphs: where does the time go, per mode, at low and high concurrency?
#
# **What is measured.** For each mode and for a low and a high concurrency, `py-spy record
# --native` samples the gateway process during the cell's window (**sampled**, ~100 Hz,
# Python and native frames: the Rust twins show up by name). The SVG flamegraphs are shown
# inline; the speedscope JSON files (open them at speedscope.app or any speedscope viewer)
# are linked. From the speedscope files the notebook also computes where the samples land:
# the share of samples whose innermost frame is Python code, the Rust extension, or other
# native code (the interpreter, libc, system calls and idle waits: py-spy samples idle
# threads too), and the top frames by self time.

# %% [markdown]
# **How it is measured.** `harness.sweep.run_sweep`: the native mock upstream and the native
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
import json

import pandas as pd
import plotly.express as px
from IPython.display import SVG, Markdown, display

from harness.notebooks import metric, write_metrics
from lab_ext.export import export, machine_line
from lab_ext.magics import run_sweep_with_panel
from lab_ext.nb import (
    label_cells,
    notebook_run,
    ok_cells,
    ratio_spread,
    spread_of,
)
from lab_ext.widgets import SweepPanel

NOTEBOOK = "04_flamegraphs"
SIZES = {
    "full": dict(
        modes=["py", "py+rs"],
        concurrency=[1, 16],
        hw_profile="xeon-4c",
        duration_s=8.0,
        warmup_s=1.0,
        pyspy_rate=100,
    ),
    "ci": dict(
        modes=["py", "py+rs"],
        concurrency=[8],
        hw_profile="ci-2c",
        duration_s=1.5,
        warmup_s=0.5,
        pyspy_rate=100,
    ),
}
assert profile in SIZES, f"profile must be one of {list(SIZES)}, got {profile!r}"
S = SIZES[profile]
run = notebook_run(NOTEBOOK, profile, run_dir, parameters=S)
MACHINE = machine_line(run.meta, profile)
METRICS = {}
print(MACHINE)
print("run folder:", run.path)

# %%
panel = SweepPanel(total=len(S["modes"]) * len(S["concurrency"]), title=NOTEBOOK) if live_panel else None
if panel is not None:
    display(panel.widget)
res = run_sweep_with_panel(
    panel,
    modes=S["modes"],
    concurrency=S["concurrency"],
    profile=S["hw_profile"],
    duration_s=S["duration_s"],
    warmup_s=S["warmup_s"],
    repeat=max(1, confirm_rounds),
    order="alternate" if confirm_rounds else "fixed",  # a confirmation: A B, B A, ...
    gil=False,
    flamegraph=True,
    pyspy_rate=S["pyspy_rate"],
    out=run.path,
    name="flamegraphs",
    capacity=False,
    report=False,
)
cells = label_cells(res.table)
run.write_table("cells", cells)
ok = ok_cells(cells, NOTEBOOK)
ok[["label", "concurrency", "rps", "flamegraph_svg", "speedscope_json", "probes_missing"]]

# %% [markdown]
# ## The flamegraphs (inline) and their speedscope files

# %%
import os
from pathlib import Path

for r in ok.to_dict("records"):
    svg = Path(res.dir) / r["flamegraph_svg"] if r.get("flamegraph_svg") else None
    ss = Path(res.dir) / r["speedscope_json"] if r.get("speedscope_json") else None
    rel = lambda p: os.path.relpath(p, Path.cwd())
    display(
        Markdown(
            f"### {r['label']} at c={r['concurrency']} ({r['rps']:.0f} req/s)\n"
            + (
                f"[speedscope JSON]({rel(ss)}) · [SVG]({rel(svg)})"
                if ss and svg
                else "no profile: " + str(r.get("probes_missing"))
            )
        )
    )
    if svg and svg.exists():
        display(SVG(filename=str(svg)))


# %% [markdown]
# ## Where the samples land
#
# Each sample is attributed to its innermost frame: **Python** (a `.py` file), **Rust
# extension** (frames from `gateway._native` / the gatewaylab crates), or **other native**
# (the interpreter, libc, system calls, idle waits).


# %%
def classify(frame):
    name, file = frame.get("name", ""), frame.get("file", "") or ""
    if file.endswith(".py"):
        return "Python"
    if "_native" in file or "gatewaylab" in name or "gatewaylab" in file:
        return "Rust extension"
    return "other native"


def attribution(path):
    d = json.loads(Path(path).read_text())
    frames = d["shared"]["frames"]
    kinds, selfs = {}, {}
    for prof in d["profiles"]:
        for stack, w in zip(prof["samples"], prof["weights"]):
            if not stack:
                continue
            leaf = frames[stack[-1]]
            k = classify(leaf)
            kinds[k] = kinds.get(k, 0) + w
            key = f"{leaf.get('name')} ({Path(leaf.get('file') or '?').name})"
            selfs[key] = selfs.get(key, 0) + w
    total = sum(kinds.values()) or 1
    return {k: v / total for k, v in kinds.items()}, sorted(
        ((v / total, k) for k, v in selfs.items()), reverse=True
    )[:8]


shares, tops = [], []
for r in ok.to_dict("records"):
    if not r.get("speedscope_json"):
        continue
    kinds, top = attribution(Path(res.dir) / r["speedscope_json"])
    shares.append(
        {
            "label": r["label"],
            "c": r["concurrency"],
            **{k: kinds.get(k, 0.0) for k in ("Python", "Rust extension", "other native")},
        }
    )
    tops += [{"label": r["label"], "c": r["concurrency"], "frame": k, "self share": v} for v, k in top]
shares, tops = pd.DataFrame(shares), pd.DataFrame(tops)
fig_share = px.bar(
    shares.melt(id_vars=["label", "c"], var_name="where", value_name="share"),
    x=shares.melt(id_vars=["label", "c"])["label"]
    + " c="
    + shares.melt(id_vars=["label", "c"])["c"].astype(str),
    y="share",
    color="where",
    title="Where the samples land (innermost frame)",
)
fig_share.update_layout(
    xaxis_title="",
    yaxis_tickformat=".0%",
    title_subtitle_text=f"sampled: py-spy --native at {S['pyspy_rate']} Hz over {S['duration_s']:g} s, "
    "closed loop, 1 repeat per cell",
)
display(shares)
display(tops)
fig_share

# %%
profiled = ok["speedscope_json"].fillna("").astype(bool).sum()
METRICS["flamegraph_coverage"] = metric(profiled / len(ok), desc="share of sweep cells with a py-spy profile")
pyrs_py = shares[shares["label"] == "py+rs"]["Python"]
py_py = shares[shares["label"] == "py"]["Python"]
METRICS["python_share_pyrs_over_py"] = metric(
    *ratio_spread(spread_of(pyrs_py), spread_of(py_py)), desc="share of samples in Python frames, py+rs / py"
)
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
        "sample_attribution": (
            shares.round(3),
            "Share of py-spy samples by innermost frame, per mode and concurrency (sampled)",
        ),
        "top_frames": (tops.round(3), "Top frames by self time (sampled, py-spy --native)"),
    },
    figures={
        "sample_attribution": fig_share,
    },
    profile=profile,
    meta=run.meta,
)
display(Markdown("\n".join(f"- `{p}`" for kind in written.values() for p in kind)))

# %%
# the ratios the CI regression check reads (data/baselines/<notebook>.json)
print(write_metrics(run.path, NOTEBOOK, profile, METRICS))
pd.DataFrame(METRICS).T[["value", "min", "max", "desc"]]
