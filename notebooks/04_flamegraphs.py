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
# **What is measured.** For each target and for a low and a high concurrency, the gateway
# process is sampled under load (**sampled**, ~100 Hz), by the profiler that can see it:
#
# - **py-spy** `record --native` on a process with an interpreter: its Python threads, with
#   Python frames and the native frames under them (the Rust twins show up by name);
# - **perf** `record -e cpu-clock --call-graph dwarf` on every thread of a process, folded and
#   drawn by inferno: the one view of a process without an interpreter (`rs-server`, the Noveum
#   and Portkey peers) and of the native threads beside one (the Tokio runtimes and the ledger
#   thread of `py+rs` and `rs-core`, which py-spy cannot see). Each graph's roots are the
#   threads' names; kernel frames end in `_[k]`, JIT frames (node) in `_[j]`.
#
# So `py+rs` and `rs-core` get both graphs, labelled by what each covers. The SVGs are shown
# inline; the speedscope JSON files (open them at speedscope.app or any speedscope viewer) are
# linked. From them the notebook also computes where the samples land, by innermost frame:
# Python code, our Rust crates, the kernel (perf only: py-spy does not sample it), JIT code,
# or other native code (the interpreter, libc, the runtimes; py-spy also samples idle threads),
# and the top frames by self time. Each profile runs over a window of its own right after the
# cell's measured window, so no profiler ever runs while throughput is measured.

# %% [markdown]
# **How it is measured.** `harness.infra.sweep.run_sweep`: the native mock upstream and the native
# load generator run as separate processes pinned to their own cores (the hardware profile is
# clamped to this machine and says so in `meta.json`); the gateway runs pinned to the gateway
# cores. Each cell is a **closed-loop** window at fixed concurrency c after a warm-up; latency
# comes from the load generator's HDR histogram (**exact**), overhead is gateway pXX minus
# direct-to-mock pXX at the same c in the same run. The load generator's capacity against the
# mock is measured beside the sweep so it is never the bottleneck unnoticed. Which profiler a
# target gets is `harness.infra.targets.flamegraph_tools`; perf and inferno are installed by
# `make flame-tools` (a missing one is one line in `probes_missing`).

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

from harness.infra.targets import PERF, PYSPY, flamegraph_tools
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
        # our four rungs, then a peer of each kind: a Rust binary, node, Python
        targets=["py", "py+rs", "rs-core", "rs-server", "noveum", "portkey", "litellm-chat"],
        concurrency=[1, 16],
        hw_profile="xeon-4c",
        duration_s=8.0,
        warmup_s=1.0,
        sample_rate=100,
    ),
    "ci": dict(
        targets=["py", "py+rs", "rs-core", "rs-server"],
        concurrency=[8],
        hw_profile="ci-2c",
        duration_s=1.5,
        warmup_s=0.5,
        sample_rate=100,
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
panel = SweepPanel(total=len(S["targets"]) * len(S["concurrency"]), title=NOTEBOOK) if live_panel else None
if panel is not None:
    display(panel.widget)
res = run_sweep_with_panel(
    panel,
    targets=S["targets"],
    concurrency=S["concurrency"],
    profile=S["hw_profile"],
    duration_s=S["duration_s"],
    warmup_s=S["warmup_s"],
    repeat=max(1, confirm_rounds),
    order="alternate" if confirm_rounds else "fixed",  # a confirmation: A B, B A, ...
    gil=False,
    flamegraph=True,
    pyspy_rate=S["sample_rate"],  # the sampling rate of both profilers
    out=run.path,
    name="flamegraphs",
    capacity=False,
    report=False,
)
cells = label_cells(res.table)
run.write_table("cells", cells)
ok = ok_cells(cells, NOTEBOOK)
ok[["label", "concurrency", "rps", "flamegraph_label", "perf_flamegraph_label", "probes_missing"]]

# %% [markdown]
# ## The flamegraphs (inline), with their labels and speedscope files
#
# Per cell: the py-spy graph (the Python threads) where the process has an interpreter, and
# the perf graph (every thread) where it has native threads or no interpreter at all.

# %%
import os
from pathlib import Path

TOOLS = {
    PYSPY: ("flamegraph_svg", "speedscope_json", "flamegraph_label"),
    PERF: ("perf_flamegraph_svg", "perf_speedscope_json", "perf_flamegraph_label"),
}
rel = lambda p: os.path.relpath(p, Path.cwd())  # noqa: E731
graphs = []  # one row per flamegraph: the table the export carries
for r in ok.to_dict("records"):
    display(Markdown(f"### {r['label']} at c={r['concurrency']} ({r['rps']:.0f} req/s)"))
    for tool in flamegraph_tools(r["mode"]):
        svg_col, ss_col, label_col = TOOLS[tool]
        svg = Path(res.dir) / r[svg_col] if r.get(svg_col) else None
        ss = Path(res.dir) / r[ss_col] if r.get(ss_col) else None
        if svg and ss:
            display(
                Markdown(f"**{tool}**: {r[label_col]}  \n[speedscope JSON]({rel(ss)}) · [SVG]({rel(svg)})")
            )
            display(SVG(filename=str(svg)))
            graphs.append(
                {
                    "label": r["label"],
                    "c": r["concurrency"],
                    "tool": tool,
                    "how": r[label_col],
                    "svg": os.path.relpath(svg, run.path),
                }
            )
        else:
            display(Markdown(f"**{tool}**: no profile: {r.get('probes_missing')}"))
graphs = pd.DataFrame(graphs)


# %% [markdown]
# ## Where the samples land
#
# Each sample is attributed to its innermost frame: **Python** (a `.py` file, py-spy),
# **our Rust crates** (frames from `gateway._native` or a `gatewaylab` crate), **kernel**
# (perf's `_[k]` frames), **JIT** (node's compiled JavaScript, `_[j]`), or **other native**
# (the interpreter, libc, the runtimes, idle waits: py-spy samples idle threads too).

# %%
WHERE = ["Python", "our Rust crates", "kernel", "JIT", "other native"]


def classify(frame):
    name, file = frame.get("name", ""), frame.get("file", "") or ""
    if file.endswith(".py"):
        return "Python"
    if "_native" in file or "gatewaylab" in name or "gatewaylab" in file or name.startswith("_native::"):
        return "our Rust crates"
    if name.endswith("_[k]"):
        return "kernel"
    if name.endswith("_[j]"):
        return "JIT"
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
            where = f" ({Path(leaf['file']).name})" if leaf.get("file") else ""
            key = f"{leaf.get('name')}{where}"
            selfs[key] = selfs.get(key, 0) + w
    total = sum(kinds.values()) or 1
    return {k: v / total for k, v in kinds.items()}, sorted(
        ((v / total, k) for k, v in selfs.items()), reverse=True
    )[:8]


shares, tops = [], []
for r in ok.to_dict("records"):
    for tool in flamegraph_tools(r["mode"]):
        ss_col = TOOLS[tool][1]
        if not r.get(ss_col):
            continue
        kinds, top = attribution(Path(res.dir) / r[ss_col])
        shares.append(
            {
                "label": r["label"],
                "c": r["concurrency"],
                "tool": tool,
                **{k: kinds.get(k, 0.0) for k in WHERE},
            }
        )
        tops += [
            {"label": r["label"], "c": r["concurrency"], "tool": tool, "frame": k, "self share": v}
            for v, k in top
        ]
shares, tops = pd.DataFrame(shares), pd.DataFrame(tops)
long = shares.melt(id_vars=["label", "c", "tool"], value_vars=WHERE, var_name="where", value_name="share")
long["cell"] = long["label"] + " c=" + long["c"].astype(str) + " · " + long["tool"]
fig_share = px.bar(
    long,
    x="cell",
    y="share",
    color="where",
    category_orders={"where": WHERE},
    title="Where the samples land (innermost frame), per target and profiler",
)
fig_share.update_layout(
    xaxis_title="",
    yaxis_title="share of samples",
    yaxis_tickformat=".0%",
    title_subtitle_text=f"sampled: py-spy --native (Python threads) and perf cpu-clock (every thread), "
    f"{S['sample_rate']} Hz over {max(1.0, S['duration_s']):g} s; closed loop, 1 repeat per cell",
)
display(shares)
display(tops)
fig_share

# %%
# a cell is profiled when every profiler its target calls for wrote its profile
expected = ok.apply(lambda r: all(r.get(TOOLS[t][1]) for t in flamegraph_tools(r["mode"])), axis=1)
METRICS["flamegraph_coverage"] = metric(
    expected.sum() / len(ok),
    desc="share of sweep cells with every profile their target calls for (py-spy, perf or both)",
)
pyspy_shares = shares[shares["tool"] == PYSPY]
pyrs_py = pyspy_shares[pyspy_shares["label"] == "py+rs"]["Python"]
py_py = pyspy_shares[pyspy_shares["label"] == "py"]["Python"]
METRICS["python_share_pyrs_over_py"] = metric(
    *ratio_spread(spread_of(pyrs_py), spread_of(py_py)),
    desc="share of py-spy samples in Python frames, py+rs / py",
)
pd.DataFrame(METRICS).T

# %% [markdown]
# ## Blog export
#
# Markdown tables (each with its spread and the machine line under it), static PNG and
# SVG images, and standalone HTML figures, written to `blog/` in the run folder. The
# flamegraphs themselves stay in the run folder's `flamegraphs/`; the `flamegraphs` table
# names each one with its label.

# %%
written = export(
    run.path,
    tables={
        "sample_attribution": (
            shares.round(3),
            "Share of samples by innermost frame, per target, concurrency and profiler (sampled)",
        ),
        "top_frames": (tops.round(3), "Top frames by self time (sampled: py-spy --native, perf cpu-clock)"),
        "flamegraphs": (
            graphs,
            "The flamegraphs of this run (paths in the run folder) and how each was made",
        ),
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
