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
# # 11 · Interpreters: does a newer CPython shrink the case for Rust?
#
# **The question.** Every other figure in this workbench comes from one interpreter. CPython
# 3.12 and 3.13 changed the interpreter's speed, the GIL's switching and the cost of calling
# C; a faster interpreter makes each Python twin cheaper, so the Rust twins' advantage may
# shrink. By how much is a measurement, not a guess.
#
# **What is measured, per interpreter** (each in its own venv with the same project wheel:
# `harness.interpreters`, docs/interpreters.md):
# 1. the Python twins' cost per hot-path stage and the Rust twins' advantage over them
#    (`gatewaylab bench stages --pythons ...`, pyperf, µs per request);
# 2. the audit path's pieces: SHA-256 (`bench hash`), the MMR (`bench mmr`, the seed's table)
#    and the WAL (`bench wal`), Rust over Python;
# 3. the background hand-off's cost (`bench spawn`, exact per call);
# 4. the whole request: an interpreter-axis sweep of the rungs with an interpreter (`py`,
#    `py+rs`, `rs-core`) across c: gateway CPU µs per request (from /proc, **exact**) and the
#    knee. `rs-server` has no interpreter on its request path, so it is not on this axis.
#
# The conclusion is one table: for each component, the Rust advantage on each interpreter.
# Timings on a shared, loaded 2-core machine are noisy: compare ratios, with their spreads.

# %% tags=["parameters"]
# papermill parameters: "full" is the real study, "ci" a small fast run (make test)
profile = "full"
run_dir = None  # papermill passes a folder; None -> data/runs/<UTC time>-<notebook>/
live_panel = True  # the live sweep widget; headless runs turn it off (its JS would bloat the saved notebook)

# %%
import json
import time

import pandas as pd
import plotly.graph_objects as go
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from harness.infra import interpreters
from harness.notebooks import write_metrics
from harness.studies import interp_study as study
from lab_ext.export import export, machine_line, to_markdown
from lab_ext.magics import run_bench, run_sweep_with_panel
from lab_ext.nb import notebook_run
from lab_ext.widgets import SweepPanel

NOTEBOOK = "11_interpreters"
SIZES = {
    "full": dict(
        pythons="3.11,3.12,3.13",
        stages=None,  # every stage
        hash_sizes=[64, 1024, 65536],
        mmr_ns=[1000, 10000],
        wal=["--policy", "none", "--policy", "group"],
        spawn=["--rounds", "10", "--calls", "2000"],
        bench_quick=False,
        sweep=dict(
            modes=["py", "py+rs", "rs-core"],
            concurrency=list(range(1, 17)),
            hw_profile="xeon-4c",
            duration_s=3.0,
            warmup_s=0.5,
            repeat=2,
        ),
    ),
    # CI: the oldest and the newest interpreter, the stages with the most work, short cells
    "ci": dict(
        pythons="3.11,3.13",
        stages=["auth", "waf.short", "adapter.request"],
        hash_sizes=[1024],
        mmr_ns=[1000],
        wal=["--policy", "none", "--api", "per_record"],
        spawn=["--quick"],
        bench_quick=True,
        sweep=dict(
            modes=["py", "py+rs"],
            concurrency=[1, 4],
            hw_profile="ci-2c",
            duration_s=1.0,
            warmup_s=0.3,
            repeat=1,
        ),
    ),
}
assert profile in SIZES, f"profile must be one of {list(SIZES)}, got {profile!r}"
S = SIZES[profile]
run = notebook_run(NOTEBOOK, profile, run_dir, parameters=S)
MACHINE = machine_line(run.meta, profile)
print(MACHINE)
print("run folder:", run.path)

# %% [markdown]
# ## The interpreters, and one venv each
#
# Discovery looks at PATH and `pyenv versions` and says in one line what it found and what it
# cannot use. Each chosen interpreter gets a venv with the project's wheel (the extension is
# built once for the stable ABI, abi3, and installed into every venv), cached and reused
# while the source is unchanged. The table says what this run did and what the cold build
# took when the venv was made.

# %%
t0 = time.perf_counter()
found, ENVS = interpreters.from_spec(S["pythons"])
prep_s = time.perf_counter() - t0
PY = [(e.label, e.interp.tag) for e in ENVS]  # (label, tag), oldest first as given
venvs = pd.DataFrame(
    [
        {
            "python": e.label,
            "path": e.interp.path,
            "this run": e.action,
            "this run s": round(e.seconds, 2),
            "cold build s": (e.manifest.get("first_build") or {}).get("timings", {}).get("total_s"),
            "cold build steps s": json.dumps((e.manifest.get("first_build") or {}).get("timings")),
            "last reinstall s": e.manifest["timings"]["total_s"]
            if e.manifest["built_by"] == "reinstall"
            else None,
            "wheel": e.manifest["wheel"],
        }
        for e in ENVS
    ]
)
run.write_json("interpreters.json", {"discovery": found.to_dict(), "venvs": [e.to_dict() for e in ENVS]})
venvs

# %% [markdown]
# ## The benchmarks on each interpreter
#
# One `gatewaylab bench NAME --pythons ...` per benchmark: each interpreter runs the whole
# benchmark in its venv, one after the other. Each result keeps its own pyperf JSON
# (`python -m pyperf compare_to` works across interpreters) beside the combined document.

# %%
quick = ["--quick"] if S["bench_quick"] else []
stage_args = quick + [a for s in (S["stages"] or []) for a in ("--stage", s)]
BENCH = {
    "stages": stage_args,
    "hash": quick + [a for n in S["hash_sizes"] for a in ("--size", str(n))],
    "mmr": quick + [a for n in S["mmr_ns"] for a in ("--n", str(n))],
    "wal": quick + S["wal"],
    "spawn": S["spawn"],
}
DOCS = {}
for name, args in BENCH.items():
    DOCS[name] = run_bench(
        name, args + ["--pythons", S["pythons"]], json_out=run.path / f"bench-{name}.json", quiet=True
    )
    print(
        f"bench {name}: {len(DOCS[name]['comparison'])} figures on {len(DOCS[name]['results'])} interpreters"
    )
BENCH_ROWS = pd.concat([study.bench_rows(d) for d in DOCS.values()], ignore_index=True)
run.write_table("bench_rows", BENCH_ROWS)

# %% [markdown]
# ### The Python twins' cost per stage, and the Rust twins' advantage
#
# µs per request of each stage alone, per twin (pyperf: median [fastest–slowest value]).
# `guard` and `parse` have no Rust twin behind the Python shell; `forward` includes the
# loopback round trip to the native mock.

# %%
stage_table = study.advantage_table(BENCH_ROWS[BENCH_ROWS["source"] == "bench stages"], PY)
stage_table

# %% [markdown]
# ### The MMR table, per interpreter (the seed's table: leaves/s, Rust over Python)

# %%
from harness.bench import mmr as mmr_bench  # noqa: E402

for label, res in DOCS["mmr"]["results"].items():
    display(Markdown(f"**{label}**\n\n" + mmr_bench.markdown(res)))

# %% [markdown]
# ### The spawn cost: the background hand-off per call

# %%
spawn_table = study.advantage_table(
    BENCH_ROWS[BENCH_ROWS["source"] == "bench spawn"], PY, measures=("python_cost", "over_create_task")
)
spawn_table

# %% [markdown]
# ## The whole request: the rungs with an interpreter across c
#
# One sweep with the interpreter as an axis: `py`, `py+rs` (and `rs-core` at full size) run
# once per interpreter, each in its venv, against the same native mock with the same load
# generator; repeats are the outer loop, so drift spreads over every interpreter. CPU µs per
# request is the gateway process tree's user+sys CPU over the window's requests (/proc, exact).

# %%
sw = S["sweep"]
n_cells = sw["repeat"] * len(sw["concurrency"]) * len(sw["modes"]) * len(ENVS)
panel = SweepPanel(total=n_cells, title=NOTEBOOK) if live_panel else None
if panel is not None:
    display(panel.widget)
res = run_sweep_with_panel(
    panel,
    modes=sw["modes"],
    pythons=S["pythons"],
    concurrency=sw["concurrency"],
    profile=sw["hw_profile"],
    duration_s=sw["duration_s"],
    warmup_s=sw["warmup_s"],
    repeat=sw["repeat"],
    gil=False,
    out=run.path,
    name="interpreters",
    progress=False,
    report=False,
)
cells = res.table
run.write_table("cells", cells)
bad = cells[cells["status"] != "ok"]
assert not len(bad), f"cells not ok: {bad[['cell', 'status', 'error']].to_dict('records')}"
print("sweep run folder:", res.dir)
SWEEP_ROWS = study.sweep_rows(cells, PY)
study.advantage_table(SWEEP_ROWS, PY)

# %% [markdown]
# ### The knee, per interpreter
#
# Median throughput against concurrency (error bars: min–max over repeats), one line per
# interpreter, one panel per rung.

# %%
knee = study.knee_table(cells, PY)
ok = cells[cells["status"] == "ok"]
fig_knee = make_subplots(rows=1, cols=len(sw["modes"]), subplot_titles=sw["modes"], shared_yaxes=True)
for j, (label, _tag) in enumerate(PY):
    for k, mode in enumerate(sw["modes"], start=1):
        d = ok[(ok["python"] == label) & (ok["mode"] == mode)].groupby("concurrency")["rps"]
        a = d.agg(["median", "min", "max"]).reset_index()
        fig_knee.add_scatter(
            x=a["concurrency"],
            y=a["median"],
            name=label,
            legendgroup=label,
            showlegend=(k == 1),
            mode="lines+markers",
            line=dict(color=["#636efa", "#ef553b", "#00cc96", "#ab63fa"][j % 4]),
            error_y=dict(
                type="data", symmetric=False, array=a["max"] - a["median"], arrayminus=a["median"] - a["min"]
            ),
            row=1,
            col=k,
        )
fig_knee.update_xaxes(title_text="concurrency c (closed loop)", tickvals=sw["concurrency"])
fig_knee.update_yaxes(title_text="2xx req/s (exact, median)", row=1, col=1)
fig_knee.update_layout(
    title=dict(
        text="Throughput against c, per interpreter",
        subtitle=dict(text=f"closed loop; exact; median of {sw['repeat']} repeats (bars: min–max)"),
    ),
    height=420,
)
display(knee)
fig_knee

# %% [markdown]
# ## Instructions per request (Cachegrind): to be added
#
# Not measured in this notebook yet. `gatewaylab bench instructions` (deterministic
# instruction counts per request under Cachegrind) is being built beside this notebook; once
# it takes `--pythons`, its rows join `SOURCES` below in the same long format
# (`harness.interp_study`: component, measure, python, tag, value, min, max, unit, desc,
# source), and the conclusion table and metrics pick them up unchanged.

# %%
SOURCES = {"bench": BENCH_ROWS, "sweep": SWEEP_ROWS}

# %% [markdown]
# ## Conclusion: the Rust advantage on each interpreter
#
# For each component, Python cost ÷ Rust cost (>1: Rust is cheaper), median [min–max] on each
# interpreter; the last column is the newest interpreter's median over the oldest's (< 1: a
# newer CPython shrank the case for Rust). The Python cost rows (µs per request of the py rung
# and per stage) show the interpreter's own speed-up.

# %%
ROWS = pd.concat(SOURCES.values(), ignore_index=True)
run.write_table("rows", ROWS)
conclusion = study.advantage_table(ROWS, PY)
display(Markdown(to_markdown(conclusion, "Rust advantage per component and interpreter", MACHINE)))

adv = ROWS[ROWS["measure"] == "rust_advantage"]
fig_adv = go.Figure()
for label, _tag in PY:
    d = adv[adv["python"] == label]
    fig_adv.add_bar(
        x=d["component"],
        y=d["value"],
        name=label,
        error_y=dict(
            type="data", symmetric=False, array=d["max"] - d["value"], arrayminus=d["value"] - d["min"]
        ),
    )
fig_adv.add_hline(y=1.0, line_dash="dot", annotation_text="no advantage")
fig_adv.update_yaxes(
    type="log",
    title_text="Python cost ÷ Rust cost, × (median, min–max)",
    tickvals=[0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100],  # 1-2-5 steps: log minor ticks crowd
)
fig_adv.update_layout(
    title=dict(
        text="Rust advantage per component, per interpreter",
        subtitle=dict(
            text="exact timings: each benchmark's own repeats, and closed-loop sweep cells, "
            f"median of {sw['repeat']} repeats"
        ),
    ),
    barmode="group",
    height=480,
)

first, last = PY[0][0], PY[-1][0]
pair = adv[adv["python"].isin([first, last])].pivot_table(index="component", columns="python", values="value")
if len(PY) > 1 and {first, last} <= set(pair.columns):
    change = (pair[last] / pair[first]).dropna().sort_values()
    rung = [c for c in change.index if c.startswith("request (")]
    display(
        Markdown(
            f"From **{first}** to **{last}**, the Rust advantage changes by a factor of "
            f"{change.min():.2f}–{change.max():.2f} across components (median {change.median():.2f}); "
            + (
                "for the whole request: " + ", ".join(f"{c} ×{change[c]:.2f}" for c in rung) + ". "
                if rung
                else ""
            )
            + "A factor below 1 means the newer interpreter shrank the case for Rust."
        )
    )
fig_adv

# %% [markdown]
# ## Blog export

# %%
written = export(
    run.path,
    tables={
        "rust_advantage_per_interpreter": (
            conclusion,
            "Rust advantage (Python ÷ Rust cost) per component and interpreter: median [min–max]",
        ),
        "stages_per_interpreter": (stage_table, "Hot-path stages: Python µs per request and Rust advantage"),
        "spawn_per_interpreter": (spawn_table, "Background hand-off per call, per interpreter"),
        "knee_per_interpreter": (knee, "Where throughput peaks, per interpreter and rung"),
        "venvs": (
            venvs[["python", "path", "this run", "this run s", "cold build s", "last reinstall s"]],
            "One venv per interpreter",
        ),
    },
    figures={"rust_advantage_per_interpreter": fig_adv, "knee_per_interpreter": fig_knee},
    profile=profile,
    meta=run.meta,
)
display(Markdown("\n".join(f"- `{p}`" for kind in written.values() for p in kind)))

# %%
# the ratios a gate would read (no gates yet: data/baselines/ has no file for this notebook)
METRICS = study.gate_metrics(ROWS, PY)
print(write_metrics(run.path, NOTEBOOK, profile, METRICS))
pd.DataFrame(METRICS).T[["value", "min", "max", "desc"]]
