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
# # 07 · The Rust ladder: what each rung buys, with every governance stage on
#
# **The seed's claim (002).** A Rust gateway gives ~15x the throughput and uses ~11x less
# memory than a Python proxy. Here the claim is put on one gateway climbing four rungs with
# the same config, answers and ledger: `py` (everything Python), `py+rs` (every component a
# Rust twin behind the Python pipeline), `rs-core` (the whole hot path in one Rust call
# behind a Python server), `rs-server` (a standalone Rust binary, no interpreter at all).
#
# **What is measured**, per rung, in one run (rungs alternate inside each repeat): added
# p50 at c=1 (**exact**, HDR, **closed loop**, gateway minus direct-to-mock), req/s at
# c=16 and c=50, gateway CPU µs per request (**exact**, /proc), peak RSS of the gateway's
# process tree; then the cost of governance per rung (every stage and the audit ledger on,
# against `--stages none --audit off` on the same rung), and the cost of one Python
# `pre_call` plugin: in-process on `py`, in a sidecar process over a Unix socket on
# `rs-server`.
#
# **What the labels mean.** "Every stage on" is shown, not assumed: the key carries rpm/tpm
# limits far above the load (`harness.infra.targets.bench_config`), so the rate limiter does its
# bucket work on every request, and after each cell the gateway's own counters
# (`gateway_stage_runs_total`) must show every stage ran once per request, or the cell fails.
# CPU per request is over successful answers; a cell with any error it did not set out to cause
# is not ok and no figure below reads it (a metric that needs it is reported missing, with
# why). No probe runs inside any rung here (`gil=False`): the compared set is measured alike.

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

from harness import work_gates
from harness.bench import instructions
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
    shown,
    spread_of,
    usable_cells,
    values_at,
    write_missing,
)
from lab_ext.widgets import SweepPanel

NOTEBOOK = "07_rust_ladder"
SIZES = {
    "full": dict(
        rungs=["py", "py+rs", "rs-core", "rs-server"],
        concurrency=[1, 16, 50],
        hw_profile="xeon-4c",
        duration_s=5.0,
        warmup_s=1.0,
        repeat=3,
        gov_concurrency=[16],
        plugin_concurrency=[1, 16],
        ack_rungs=["py", "py+rs", "rs-core", "rs-server"],
        ack_concurrency=[1, 16],
    ),
    "ci": dict(
        rungs=["py", "py+rs", "rs-core", "rs-server"],
        concurrency=[1, 16, 50],
        hw_profile="ci-2c",
        duration_s=1.5,
        warmup_s=0.5,
        repeat=1,
        gov_concurrency=[16],
        plugin_concurrency=[1],
        ack_rungs=["py+rs", "rs-server"],
        ack_concurrency=[1, 16],
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
# ## The seed 002 table on this machine
#
# Every stage on and the ledger appending, on every rung.

# %%
panel = (
    SweepPanel(total=len(S["rungs"]) * len(S["concurrency"]) * S["repeat"], title="the four rungs")
    if live_panel
    else None
)
if panel is not None:
    display(panel.widget)
res = run_sweep_with_panel(
    panel,
    modes=S["rungs"],
    concurrency=S["concurrency"],
    profile=S["hw_profile"],
    duration_s=S["duration_s"],
    warmup_s=S["warmup_s"],
    repeat=max(S["repeat"], confirm_rounds),
    order="alternate" if confirm_rounds else "fixed",  # a confirmation: A B C D, D C B A, ...
    gil=False,
    out=run.path,
    name="ladder",
    capacity=True,
    report=False,
)
cells = label_cells(res.table)
run.write_table("cells", cells)
ok = usable_cells(cells, NOTEBOOK)
capacity = res.capacity
cap_rps = (
    float(capacity["rps"].iloc[0])
    if capacity is not None and len(capacity) and capacity["status"].iloc[0] == "ok"
    else float("nan")
)
print(
    f"load generator capacity against the mock (c={int(capacity['concurrency'].iloc[0])}): {cap_rps:,.0f} req/s"
)
cells[["label", "concurrency", "repeat", "status", "rps", "ovh_p50_us", "cpu_us_per_req", "stage_check"]]

# %%
c_lo, c_mid, c_hi = min(S["concurrency"]), 16, max(S["concurrency"])


def at(rung, c, col):
    return values_at(ok, rung, c, col)


def at_si(rung, c, col):
    return fmt_si(at(rung, c, col))


def rss_of(rung):
    v = ok.loc[ok["label"] == rung, "rss_peak_mb"].dropna()
    if v.empty:
        raise NotMeasured(f"no ok cell for {rung} (rss_peak_mb)")
    return spread_of(v)


rows = []
for rung in S["rungs"]:
    rows.append(
        {
            "rung": rung,
            f"added p50 µs (c={c_lo})": shown(at_si, rung, c_lo, "ovh_p50_us"),
            f"req/s (c={c_mid})": shown(at_si, rung, c_mid, "rps"),
            f"req/s (c={c_hi})": shown(at_si, rung, c_hi, "rps"),
            f"CPU µs/req (c={c_mid})": shown(at_si, rung, c_mid, "cpu_us_per_req"),
            "peak RSS MB": shown(lambda r: fmt(rss_of(r)), rung),
            "stages shown to run": ", ".join(
                sorted(set(cells.loc[cells["label"] == rung, "claimed_stages"]))
            ),
        }
    )
ladder_table = pd.DataFrame(rows)
ladder_table

# %%
fig_ladder = make_subplots(rows=1, cols=3, subplot_titles=("req/s", "CPU µs per request", "peak RSS (MB)"))
palette = px.colors.qualitative.Plotly
for j, (label, d) in enumerate(agg(ok, "rps").groupby("label", sort=False)):
    fig_ladder.add_scatter(
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
    fig_ladder.add_scatter(
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
rss = ok.groupby("label", sort=False)["rss_peak_mb"].max().reset_index()
fig_ladder.add_bar(
    x=rss["label"], y=rss["rss_peak_mb"], marker_color=palette[: len(rss)], showlegend=False, row=1, col=3
)
fig_ladder.add_hline(y=cap_rps, line_dash="dot", annotation_text="load generator capacity", row=1, col=1)
fig_ladder.update_xaxes(title_text="concurrency c", type="log", tickvals=S["concurrency"], row=1, col=1)
fig_ladder.update_xaxes(title_text="concurrency c", type="log", tickvals=S["concurrency"], row=1, col=2)
fig_ladder.update_layout(
    height=450,
    margin_t=120,  # the subtitle above the panel titles
    title=dict(
        text="The Rust ladder, every stage and the audit ledger on",
        subtitle=dict(
            text="closed loop; exact: 2xx counted, CPU from /proc; RSS sampled; "
            f"median of {S['repeat']} repeat(s), bars min–max; RSS: the peak over every cell"
        ),
    ),
)
fig_ladder

# %% [markdown]
# ## The cost of governance per rung
#
# The same rung with `--stages none --audit off` (the guard still runs: it is what keeps
# a request from being split in two), at one concurrency.

# %%
gov = run_sweep_with_panel(
    None,
    modes=S["rungs"],
    concurrency=S["gov_concurrency"],
    profile=S["hw_profile"],
    duration_s=S["duration_s"],
    warmup_s=S["warmup_s"],
    repeat=S["repeat"],
    gil=False,
    out=run.path,
    name="governance",
    capacity=False,
    report=False,
    governance=["on", "off"],
)
gcells = gov.table.assign(label=gov.table["mode"])
run.write_table("governance", gcells)
gok = usable_cells(gcells.assign(label=gcells["mode"] + " gov=" + gcells["governance"]), NOTEBOOK)
c_g = max(S["gov_concurrency"])


def gov_row(rung):
    on_rps, off_rps = (
        values_at(gok, f"{rung} gov=on", c_g, "rps"),
        values_at(gok, f"{rung} gov=off", c_g, "rps"),
    )
    on_cpu, off_cpu = (
        values_at(gok, f"{rung} gov=on", c_g, "cpu_us_per_req"),
        values_at(gok, f"{rung} gov=off", c_g, "cpu_us_per_req"),
    )
    return {
        "rung": rung,
        f"req/s governance on (c={c_g})": fmt_si(on_rps),
        "req/s off": fmt_si(off_rps),
        "throughput kept with governance on": fmt(ratio_spread(on_rps, off_rps)),
        "CPU µs/req on": fmt_si(on_cpu),
        "CPU µs/req off": fmt_si(off_cpu),
        "governance CPU µs/req": f"{on_cpu[0] - off_cpu[0]:.0f}",
    }


rows = []
for rung in S["rungs"]:
    try:
        rows.append(gov_row(rung))
    except NotMeasured as e:
        rows.append({"rung": rung, f"req/s governance on (c={c_g})": f"not measured: {str(e)[:100]}"})
gov_table = pd.DataFrame(rows)
gov_table

# %% [markdown]
# ## The cost of one Python plugin
#
# `gateway.plugins:example_keyword_filter` as a `pre_call` hook (every request passes it).
# On `py` it runs in-process on the event loop; on `rs-server` in one sidecar Python process,
# one length-prefixed JSON message each way over a Unix socket. Gateways with and without
# the hook alternate; cost = (with − without) for added p50 and for gateway CPU per request
# (the sidecar's CPU counts: it is in the gateway's process tree).

# %%
from gateway.serving.launch import start_gateway
from harness.infra.native_procs import run_load, start_mock
from harness.infra.probes import TreeSampler
from harness.infra.profiles import resolve
from harness.infra.sweep import API_KEY, CHAT_BODY, ExpectedErrors, cell_verdict
from harness.infra.targets import write_bench_config

prof = resolve(S["hw_profile"])


def gw_config(mock_url, tag, ledger=None, **more):
    """The benchmark config against the mock (harness.infra.targets.bench_config: one passthrough
    model, the sweep's key with limits far above the load), its ledger under the run folder;
    `ledger` adds ledger keys, `more` top-level sections."""
    return write_bench_config(
        run.path / f"{tag}.yaml", mock_url, API_KEY, run.path / "ledgers" / tag, ledger=ledger, **more
    )


def verdict(r):
    """(status, error) of one measured window: ok only without an error it did not set out to cause."""
    meta = r.get("meta") or {}
    return cell_verdict(
        int(meta.get("ok") or 0), int(r.get("requests") or 0), r.get("errors") or {}, ExpectedErrors()
    )


def load(url, c, secs):
    return run_load(
        url + "/v1/chat/completions",
        concurrency=c,
        duration_s=secs,
        cpus=prof.load_cpus,
        body=CHAT_BODY,
        headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
    )


plugin_rows = []
with start_mock(port=0, cpus=prof.mock_cpus) as mock:
    for rep in range(S["repeat"]):
        for c in S["plugin_concurrency"]:
            direct = load(mock.url, c, S["duration_s"])["latency_us"]["p50"]
            for rung in ("py", "rs-server"):
                for hooked in (False, True):
                    tag = f"{rung}-{'hook' if hooked else 'none'}-c{c}-r{rep}".replace("+", "p")
                    cfg = gw_config(
                        mock.url,
                        f"plugin-{tag}",
                        plugins={"pre_call": ["gateway.plugins:example_keyword_filter"] if hooked else []},
                    )
                    with start_gateway(None, None, mode=rung, config=cfg, cpus=prof.gateway_cpus) as gw:
                        load(gw.url, c, S["warmup_s"])
                        sampler = TreeSampler(gw.pid).start()
                        r = load(gw.url, c, S["duration_s"])
                        cpu = sampler.stop()
                    n = int((r.get("meta") or {}).get("ok") or 0)  # CPU over successful answers
                    status, error = verdict(r)
                    plugin_rows.append(
                        {
                            "rung": rung,
                            "plugin": hooked,
                            "concurrency": c,
                            "repeat": rep,
                            "status": status,
                            "error": error,
                            "rps": r.get("rps"),
                            "ovh_p50_us": r["latency_us"]["p50"] - direct,
                            "cpu_us_per_req": (cpu["cpu_user_s"] + cpu["cpu_sys_s"]) / n * 1e6
                            if n
                            else float("nan"),
                            "rss_peak_mb": cpu["rss_peak_mb"],
                        }
                    )
plugins = pd.DataFrame(plugin_rows)
run.write_table("plugins", plugins)
# a pair (with and without the hook) is compared only when both windows are ok
pair_ok = plugins.groupby(["rung", "concurrency", "repeat"])["status"].transform(lambda v: (v == "ok").all())
display(plugins[~pair_ok])
rows = []
for (rung, c), d in plugins[pair_ok].groupby(["rung", "concurrency"], sort=False):
    on, off = d[d["plugin"]], d[~d["plugin"]]
    dp50 = spread_of(on["ovh_p50_us"].to_numpy() - off["ovh_p50_us"].to_numpy())
    dcpu = spread_of(on["cpu_us_per_req"].to_numpy() - off["cpu_us_per_req"].to_numpy())
    rows.append(
        {
            "rung": rung,
            "c": c,
            "added p50 µs without → with plugin": f"{spread_of(off['ovh_p50_us'])[0]:.0f} → {spread_of(on['ovh_p50_us'])[0]:.0f}",
            "plugin cost, p50 µs": fmt(dp50),
            "plugin cost, CPU µs/req": fmt(dcpu),
            "peak RSS MB with plugin": fmt(spread_of(on["rss_peak_mb"])),
        }
    )
plugin_table = pd.DataFrame(rows)
plugin_table

# %% [markdown]
# ## The cost of `ledger.ack: durable`
#
# Seeds 000/001 write the audit record after the answer (`ack: background`). With `ack:
# durable` the answer waits until its record is durable under the WAL's fsync policy
# (`group` here: one fsync per batch, shared by every request waiting on it). Per rung, the
# two alternate inside each repeat; c=1 p50 and c=16 req/s are the figures users ask about.

# %%
ack_rows = []
with start_mock(port=0, cpus=prof.mock_cpus) as mock:
    for rep in range(S["repeat"]):
        for c in S["ack_concurrency"]:
            for rung in S["ack_rungs"]:
                for ack in ("background", "durable"):
                    tag = f"{rung}-{ack}-c{c}-r{rep}".replace("+", "p")
                    cfg = gw_config(mock.url, f"ack-{tag}", ledger={"fsync": "group", "ack": ack})
                    with start_gateway(None, None, mode=rung, config=cfg, cpus=prof.gateway_cpus) as gw:
                        load(gw.url, c, S["warmup_s"])
                        r = load(gw.url, c, S["duration_s"])
                    status, error = verdict(r)
                    ack_rows.append(
                        {
                            "rung": rung,
                            "ack": ack,
                            "concurrency": c,
                            "repeat": rep,
                            "status": status,
                            "error": error,
                            "rps": r.get("rps"),
                            "lat_p50_us": r["latency_us"]["p50"],
                            "errors": sum((r.get("errors") or {}).values()),
                        }
                    )
acks = pd.DataFrame(ack_rows)
run.write_table("ack", acks)
ack_ok = acks.groupby(["rung", "concurrency", "repeat"])["status"].transform(lambda v: (v == "ok").all())
display(acks[~ack_ok])
acks = acks[ack_ok]
rows = []
for rung, d in acks.groupby("rung", sort=False):
    row = {"rung": rung}
    for c, col, what in (
        (min(S["ack_concurrency"]), "lat_p50_us", "p50 µs"),
        (max(S["ack_concurrency"]), "rps", "req/s"),
    ):
        bg = d[(d["ack"] == "background") & (d["concurrency"] == c)].sort_values("repeat")[col].to_numpy()
        du = d[(d["ack"] == "durable") & (d["concurrency"] == c)].sort_values("repeat")[col].to_numpy()
        if not len(bg):  # every window at this c had an error it did not set out to cause
            row[f"c={c} {what}"] = "not measured (see the windows above)"
            continue
        row[f"c={c} {what}, background"] = fmt(spread_of(bg))
        row[f"c={c} {what}, durable"] = fmt(spread_of(du))
        row[f"c={c} {what}, durable / background"] = fmt(spread_of(du / bg), 3)
    rows.append(row)
ack_table = pd.DataFrame(rows)
ack_table


# %% [markdown]
# ## The ladder in instructions per request (the work gates)
#
# Wall-clock ratios between rungs at ci size are set by this machine's load; the work each
# request costs is not. Each rung runs under Cachegrind (`harness.work_gates`, `gatewaylab
# bench instructions`) with every governance setting: all stages and the ledger (`on`),
# none (`off`: the passthrough), the stages alone (`stages-only`) and the ledger alone
# (`audit-only`), and Noveum as shipped beside them where it is installed. Instructions per
# request are user-space instructions of every gateway process and thread, the background
# audit included, by the difference of two sizes (closed loop, c = 1), so start-up cancels.
#
# The parts of a request, per rung: the **passthrough** floor is `rs-server@off` (the Rust
# server forwarding, nothing else); **shell and crossing** is what the rung's own
# passthrough costs above it (the Python server, the interpreter, the FFI crossings); the
# **stages** are `stages-only − off`, the **ledger** `audit-only − off`, and **both
# together** what `on` costs beyond the sum (negative when the two share work). The ci
# profile counts the Python rungs with everything on only (a configuration under Cachegrind
# takes most of a minute on a loaded machine): their bars are not split there; full splits all. What the
# count does not see: waits (GIL, idle loop), system calls, cache misses; valgrind's CPU
# hides SHA-NI, so the hashing (auth, the ledger) counts its portable path (the skew column
# says by how much). Each rung's advantage over the rung below and rs-server against its own
# passthrough are `work` gates: a confirmation (confirm_rounds > 0) re-measures timing only.

# %%
work = None if confirm_rounds else work_gates.measure(NOTEBOOK, profile)
instr_figures = {}
if work is not None:
    wrun = work.run
    run.write_json("instructions.json", wrun.to_json())
    METRICS.update(work.metrics)
    IR = {s["key"]: s for s in wrun.summary if s["status"] == "ok"}
    W = work_gates.SIZES[profile]
    WORK_HOW = (
        f"Cachegrind, exact: user-space instructions per request, closed loop c = 1, "
        f"n = {W['n2']} − {W['n1']} requests, median of {W['repeat']} repeat(s)"
    )

    def ir(name):
        if name not in IR:
            raise NotMeasured(f"{name}: not counted ({[u['reason'] for u in wrun.unfollowable] or 'failed'})")
        return IR[name]["median"]

    def counted(rung, setting="off"):
        """`rung` was counted with `setting` too (ci counts the settings for rs-server only)."""
        return f"{rung}@{setting}" in IR

    def parts(rung):
        """The parts of `rung`'s instructions per request, as far as its settings were counted."""
        floor, on = ir("rs-server@off"), ir(rung)
        out = {"passthrough (rs-server@off)": floor}
        if counted(rung):
            off = ir(f"{rung}@off")
            out["shell and crossing"] = off - floor
            if counted(rung, "stages-only"):
                out["stages"] = ir(f"{rung}@stages-only") - off
            if counted(rung, "audit-only"):
                out["ledger"] = ir(f"{rung}@audit-only") - off
        split = all(counted(rung, g) for g in ("off", "stages-only", "audit-only"))
        out["stages and ledger together" if split else "the rest (not split at this size)"] = on - sum(
            out.values()
        )
        return out

    part_rows = []
    for rung in S["rungs"]:
        try:
            for part, v in parts(rung).items():
                part_rows.append({"target": rung, "part": part, "instructions per request": v})
        except NotMeasured as e:
            print(f"{rung}: parts not shown: {e}")
    if "noveum" in IR:
        part_rows.append(
            {
                "target": "noveum (as shipped)",
                "part": "Noveum, as shipped",
                "instructions per request": ir("noveum"),
            }
        )
    instr_parts = pd.DataFrame(part_rows)
    fig_instr = px.bar(
        instr_parts,
        y="target",
        x="instructions per request",
        color="part",
        orientation="h",
        barmode="relative",
        category_orders={
            "part": [
                "passthrough (rs-server@off)",
                "shell and crossing",
                "stages",
                "ledger",
                "stages and ledger together",
                "the rest (not split at this size)",
                "Noveum, as shipped",
            ]
        },
        title="Where each rung's work goes, every stage and the ledger on",
    )
    fig_instr.update_layout(
        title_subtitle_text=WORK_HOW + "; SHA-256 at valgrind's portable path",
        height=480,
        margin_t=110,
        yaxis=dict(autorange="reversed", title=None),
        xaxis_title="instructions per request",
    )
    instr_figures["ladder_instructions"] = fig_instr

    tax_rows = []
    for rung in S["rungs"]:
        if not counted(rung):
            tax_rows.append(
                {
                    "rung": rung,
                    "Ir/request, governance on": shown(
                        lambda r: fmt_si((ir(r), IR[r]["min"], IR[r]["max"])), rung
                    ),
                    "off (passthrough)": f"not counted at profile {profile} (a Python rung's life under Cachegrind is slow)",
                }
            )
            continue
        on, off = ir(rung), ir(f"{rung}@off")
        sk = IR[rung].get("sha256_skew_share")
        tax_rows.append(
            {
                "rung": rung,
                "Ir/request, governance on": fmt_si((on, IR[rung]["min"], IR[rung]["max"])),
                "off (passthrough)": fmt_si((off, IR[f"{rung}@off"]["min"], IR[f"{rung}@off"]["max"])),
                "stages-only": fmt_si((ir(f"{rung}@stages-only"),) * 3)
                if counted(rung, "stages-only")
                else "–",
                "audit-only": fmt_si((ir(f"{rung}@audit-only"),) * 3) if counted(rung, "audit-only") else "–",
                "governance tax on/off": f"{on / off:.2f}x",
                "governance Ir/request": f"{(on - off) / 1e3:,.1f} k",
                "SHA-256 skew share (on)": "–" if sk is None else f"{sk:.1%}",
            }
        )
    if "noveum" in IR:
        nv = ir("noveum")
        tax_rows.append(
            {
                "rung": "noveum (as shipped: no key check, WAF, limiter or ledger)",
                "Ir/request, governance on": "–",
                "off (passthrough)": fmt_si((nv, IR["noveum"]["min"], IR["noveum"]["max"])),
                "governance tax on/off": f"{nv / ir('rs-server@off'):.2f}x rs-server@off, "
                f"{nv / ir('rs-server'):.2f}x rs-server (on)",
            }
        )
    instr_table = pd.DataFrame(tax_rows)
    fig_tax = px.bar(
        pd.DataFrame(
            [
                {"rung": r, "governance tax (on / off)": ir(r) / ir(f"{r}@off")}
                for r in S["rungs"]
                if r in IR and counted(r)
            ]
        ),
        x="rung",
        y="governance tax (on / off)",
        title="The governance tax per rung: instructions per request with everything on / passthrough",
    )
    fig_tax.update_layout(title_subtitle_text=WORK_HOW, height=420, yaxis_title="ratio on / off (x)")
    instr_figures["governance_tax_instructions"] = fig_tax
    display(Markdown(instructions.markdown(wrun)))
    display(instr_table)
    display(fig_instr)
    display(fig_tax)
    display(pd.DataFrame(work.metrics).T[["value", "min", "max", "desc"]])


# %%
def ratio(a, b, c, col, desc):
    return metric(*ratio_spread(at(a, c, col), at(b, c, col)), desc=desc)


for rung in S["rungs"]:
    tag = rung.replace("+", "").replace("-", "")
    if rung != "py":
        gated(
            METRICS,
            MISSING,
            f"rps_{tag}_over_py_c{c_mid}",
            ratio,
            rung,
            "py",
            c_mid,
            "rps",
            f"req/s {rung} / py at c={c_mid}, every stage on",
        )
        gated(
            METRICS,
            MISSING,
            f"cpu_per_req_py_over_{tag}_c{c_mid}",
            ratio,
            "py",
            rung,
            c_mid,
            "cpu_us_per_req",
            f"CPU µs/request py / {rung} at c={c_mid}",
        )
gated(
    METRICS,
    MISSING,
    f"rps_rsserver_over_pyrs_c{c_mid}",
    ratio,
    "rs-server",
    "py+rs",
    c_mid,
    "rps",
    f"req/s rs-server / py+rs at c={c_mid} (the issue's aim: >= 3x)",
)
gated(
    METRICS,
    MISSING,
    "rss_py_over_rsserver",
    lambda: metric(*ratio_spread(rss_of("py"), rss_of("rs-server")), desc="peak RSS py / rs-server"),
)
gated(
    METRICS,
    MISSING,
    "ovh_p50_py_over_rsserver_c1",
    ratio,
    "py",
    "rs-server",
    c_lo,
    "ovh_p50_us",
    f"added p50 py / rs-server at c={c_lo}",
)
display(write_missing(run.path, MISSING))
pd.DataFrame(METRICS).T


# %% [markdown]
# ## Which rung pays for which deployment
#
# Derived from the tables above, on this machine (the numbers change; the sentence is
# written from them each run).


# %%
def med(rung, c, col):
    return at(rung, c, col)[0]


c_a, c_b = min(S["ack_concurrency"]), max(S["ack_concurrency"])


def ladder_text():
    rss = {r: rss_of(r) for r in S["rungs"]}
    rs, pyrs, py = med("rs-server", c_mid, "rps"), med("py+rs", c_mid, "rps"), med("py", c_mid, "rps")
    # the gateway is the bottleneck only if it keeps its core(s) busy; rs-server's cores used = req/s x CPU s per request
    gw_cores = rs * med("rs-server", c_mid, "cpu_us_per_req") / 1e6
    saturated = gw_cores < 0.7
    plug = {(r["rung"], r["c"]): r["plugin cost, p50 µs"] for r in plugin_table.to_dict("records")}
    c_p = min(S["plugin_concurrency"])
    cpu = {r: med(r, c_mid, "cpu_us_per_req") for r in S["rungs"]}
    cheapest = min(S["rungs"], key=cpu.get)
    lowest_c1 = min(S["rungs"], key=lambda r: med(r, c_lo, "ovh_p50_us"))
    return (
        f"At c={c_mid} with every stage (the rate limiter doing its bucket work: limits far above the load) and the "
        f"ledger on, `rs-server` served **{rs:,.0f} req/s**, {rs / py:.1f}x `py` and {rs / pyrs:.1f}x `py+rs`"
        + (
            f" -- but that is not the gateway's ceiling: it kept only {gw_cores:.2f} of its core busy, while the mock and the "
            f"load generator share the other core (alone against the mock they reached {cap_rps:,.0f} req/s at "
            f"c={int(capacity['concurrency'].iloc[0])}) with the rest of this machine's load, so throughput ratios between rungs "
            f"are lower bounds and CPU per request is the figure that separates them. "
            if saturated
            else ". "
        )
        + f"Per successful request, `rs-server` spends {cpu['rs-server']:.0f} µs of gateway CPU against {cpu['py']:.0f} µs on `py` "
        f"({cpu['py'] / cpu['rs-server']:.1f}x less), `rs-core` {cpu['rs-core']:.0f} µs and `py+rs` {cpu['py+rs']:.0f} µs; "
        f"it peaks at {rss['rs-server'][0]:.0f} MB RSS against {rss['py'][0]:.0f} MB ({rss['py'][0] / rss['rs-server'][0]:.1f}x less). "
        f"At c={c_lo} the lowest added p50 was {lowest_c1}'s ({med(lowest_c1, c_lo, 'ovh_p50_us'):.0f} µs; `py` "
        f"{med('py', c_lo, 'ovh_p50_us'):.0f} µs, `rs-server` {med('rs-server', c_lo, 'ovh_p50_us'):.0f} µs): at one request in flight "
        f"on a shared core the rungs are within scheduling noise of each other. "
        f"So the rung pays where CPU and memory are the bill: `{cheapest}` for many replicas or high concurrency per core, "
        f"`rs-core` where the server must stay Python (ASGI middleware, in-process plugins) but the hot path should not, "
        f"and `py`/`py+rs` where the upstream is slow and the gateway's cost disappears in it. A Python plugin costs "
        f"{plug.get(('rs-server', c_p), '?')} µs p50 per request in `rs-server`'s sidecar and "
        f"{plug.get(('py', c_p), '?')} µs in-process on `py`."
    )


def ack_ratio(rung, c, col):
    d = acks[(acks["rung"] == rung) & (acks["concurrency"] == c)].sort_values("repeat")
    if d.empty:
        raise NotMeasured(f"no ok ack window for {rung} at c={c}")
    return spread_of(d[d["ack"] == "durable"][col].to_numpy() / d[d["ack"] == "background"][col].to_numpy())[
        0
    ]


def ack_text():
    return (
        " Waiting for the record to be durable before answering (`ack: durable`, fsync group) multiplies c="
        f"{c_a} p50 by "
        + ", ".join(f"{ack_ratio(r, c_a, 'lat_p50_us'):.2f}x on `{r}`" for r in S["ack_rungs"])
        + f" and c={c_b} req/s by "
        + ", ".join(f"{ack_ratio(r, c_b, 'rps'):.2f}x" for r in S["ack_rungs"])
        + " (same order): group commit shares one fsync among the requests in flight."
    )


text = shown(ladder_text) + shown(ack_text)
display(Markdown(text))
run.write_json("closing.json", {"text": text})

# %% [markdown]
# ## Blog export
#
# Markdown tables (each with its spread and the machine line under it), static PNG and
# SVG images, and standalone HTML figures, written to `blog/` in the run folder.

# %%
written = export(
    run.path,
    tables={
        "ladder": (
            ladder_table,
            "The Rust ladder with every stage and the audit ledger on: median [min–max] over repeats, closed loop",
        ),
        "governance": (
            gov_table,
            "Cost of governance per rung: all stages + ledger on vs --stages none --audit off",
        ),
        "plugins": (
            plugin_table,
            "One Python pre_call plugin: in-process on py, sidecar process on rs-server",
        ),
        "ack": (
            ack_table,
            "ledger.ack durable against background (fsync group): c=1 p50 and c=16 req/s, per rung",
        ),
        **(
            {
                "instructions": (
                    instr_table,
                    "Instructions per request per rung and governance setting (Cachegrind)",
                )
            }
            if work is not None
            else {}
        ),
    },
    figures={
        "ladder": fig_ladder,
        **instr_figures,
    },
    profile=profile,
    meta=run.meta,
)
display(Markdown("\n".join(f"- `{p}`" for kind in written.values() for p in kind)))

# %%
# the ratios the CI regression check reads (data/baselines/<notebook>.json)
print(write_metrics(run.path, NOTEBOOK, profile, METRICS))
pd.DataFrame(METRICS).T[["value", "min", "max", "desc"]]
