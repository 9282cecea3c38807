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
# # 08 · Peers: our rungs beside the gateways people actually run
#
# **The seeds' claims.** Seed 002: LiteLLM's Python proxy does about 453 req/s at 50 concurrent
# clients with a 359 MB peak, and its Rust plans promise 15x the throughput at a tenth of the
# memory. Seed 004: on one machine, Rust and Go gateways stay under a 50 ms p95 at rates where
# Portkey and LiteLLM have long given up, and a *fast* upstream makes an interpreted gateway's
# overhead worse, not better (the "inverted catastrophe").
#
# **What is measured.** Every target -- our rungs and real peers installed from their own
# registries (`gatewaylab peers install`: LiteLLM with `LITELLM_RUST` off and on, Portkey, the
# Noveum Rust gateway from crates.io) -- runs as its own process tree pinned to the profile's
# gateway cores, pointed at the same native mock, driven by the same native load generator,
# with the same direct-to-mock baseline, windows, repeats and probes (CPU and peak RSS of the
# process tree, **exact** CPU from /proc, RSS **sampled** at 20 Hz):
#
# 1. closed loop at c = 1, 16 (and 50 in the full study): throughput, added p50, peak RSS;
# 2. seed 002's comparison on one route: LiteLLM's Python path against its own Rust bridge on
#    `/v1/messages` (the `x-litellm-rust` answer header is checked on both);
# 3. seed 004's open-loop rate ladders (latency from the intended send time, **CO-corrected**):
#    p50/p95/p99 per rate and the sustainable rate (p99 under 50 ms with < 1% errors);
# 4. fast vs slow upstream (mock latency 1, 50 and 500 ms) at a fixed open-loop rate;
# 5. streaming: time-to-first-byte overhead with an SSE upstream that has inter-token delays.
#
# **Like with like.** A peer runs as it ships, and the governance matrix says what that
# includes (auth, WAF, rate limit, fsynced ledger, tracing: from each adapter, the auth column
# checked against a request with a wrong key): none of them runs a WAF, a rate limit or an
# fsynced ledger here. So each peer is set beside a passthrough row of ours (`--stages none
# --audit off`: the smuggling guard and the forwarder only) on `rs-server` and `py+rs` as well
# as beside our fully governed rows, and a ratio is only formed on the same route
# (`/v1/chat/completions`): LiteLLM's `/v1/messages` targets are compared with each other only.
# No target carries a probe inside its process (`gil=False`); CPU per request is over
# successful answers; a cell with an error it did not set out to cause is not used.
#
# On this 2-core machine the profile is clamped (one gateway core, the mock and the load
# generator share the other): compare targets inside one run, as ratios.

# %% tags=["parameters"]
# papermill parameters: "full" is the real study, "ci" a small fast run (make test)
profile = "full"
run_dir = None  # papermill passes a folder; None -> data/runs/<UTC time>-<notebook>/
live_panel = True  # the live sweep widget; headless runs turn it off

# %%
# %load_ext lab_ext
import math

import pandas as pd
import plotly.graph_objects as go
from IPython.display import Markdown, display

from harness import peers
from harness.infra.targets import RUNGS
from harness.notebooks import metric, write_metrics
from harness.results.stats import sustainable_rates
from lab_ext.export import export, machine_line
from lab_ext.magics import run_sweep_with_panel
from lab_ext.nb import fmt, fmt_si, notebook_run, ratio_spread, spread_of, write_missing
from lab_ext.widgets import SweepPanel

NOTEBOOK = "08_peers"
SIZES = {
    "full": dict(
        targets=["py", "py+rs", "rs-server", "litellm", "litellm-rust", "litellm-chat", "portkey", "noveum"],
        concurrency=[1, 16, 50],
        seed002_c=50,
        hw_profile="xeon-4c",
        duration_s=3.0,
        warmup_s=1.0,
        repeat=3,
        side_repeat=2,  # ladders, upstream latencies and streaming: 2 repeats keep the study near 30 min
        side_targets=["py", "py+rs", "litellm", "litellm-rust", "litellm-chat", "portkey", "noveum"],
        rates=[250, 500, 1000, 2000, 4000, 8000, 12000, 16000],
        p99_cap_ms=50.0,
        fixed_rate=100,
        upstream_ms=[1, 50, 500],
        stream_rate=50,
        stream_upstream=dict(ttft_ms=50, itl_ms=10, tokens=20),
    ),
    # every target and figure of "full" at about a third of its cost (2 repeats, 2 s cells, one
    # repeat beside the closed loop): what a loaded 2-core box affords in about half an hour
    "medium": dict(
        targets=["py", "py+rs", "rs-server", "litellm", "litellm-rust", "litellm-chat", "portkey", "noveum"],
        side_targets=["py", "py+rs", "litellm", "litellm-rust", "portkey", "noveum"],
        concurrency=[1, 16, 50],
        seed002_c=50,
        hw_profile="xeon-4c",
        duration_s=2.0,
        warmup_s=0.5,
        repeat=2,
        side_repeat=1,
        rates=[250, 500, 1000, 2000, 4000, 8000],
        p99_cap_ms=50.0,
        fixed_rate=50,
        upstream_ms=[1, 50, 500],
        stream_rate=20,
        stream_upstream=dict(ttft_ms=50, itl_ms=10, tokens=20),
    ),
    "ci": dict(
        targets=["py+rs", "rs-server", "litellm", "litellm-rust", "portkey", "noveum"],
        # one LiteLLM target beside the closed loop: its ~15 s start-up dominates a CI run
        side_targets=["py+rs", "litellm-rust", "portkey", "noveum"],
        concurrency=[1, 16],
        seed002_c=16,
        hw_profile="ci-2c",
        duration_s=1.0,
        warmup_s=0.5,
        repeat=1,
        side_repeat=1,
        rates=[50, 200, 800],
        p99_cap_ms=50.0,
        fixed_rate=20,
        upstream_ms=[1, 50, 500],
        stream_rate=20,
        stream_upstream=dict(ttft_ms=20, itl_ms=5, tokens=8),
    ),
}
assert profile in SIZES, f"profile must be one of {list(SIZES)}, got {profile!r}"
S = SIZES[profile]
run = notebook_run(NOTEBOOK, profile, run_dir, parameters=S)
installed = {r["peer"]: r for r in peers.listing()}
needed = sorted({p for p in ("litellm", "portkey", "noveum") if any(t.startswith(p) for t in S["targets"])})
missing = [p for p in needed if installed[p]["status"] != "installed"]
assert not missing, f"peers not installed: {missing} (run `gatewaylab peers install`)"
PEERS = {p: peers.installed_version(p) for p in needed}  # from the install manifest
run.update_meta(peers=PEERS)  # every machine line of this run (tables, blog) names them
MACHINE = machine_line(run.meta, profile)
METRICS = {}
MISSING = {}  # metric -> why it is not measured (a cell behind it was not ok)
print(MACHINE)
print("run folder:", run.path)
pd.DataFrame(peers.listing())[["peer", "pinned", "installed", "status", "where"]]


# %%
def sweep(name, **kw):
    """One sweep into this run folder; every target of S unless `targets` is given."""
    kw = {
        "targets": S["targets"],
        "profile": S["hw_profile"],
        "duration_s": S["duration_s"],
        "warmup_s": S["warmup_s"],
        "repeat": S["repeat"],
        "gil": False,
        "capacity": False,
        "report": False,
        "out": run.path,
        "name": name,
        **kw,
    }
    points = len(kw.get("rates") or kw.get("concurrency") or [1])
    panel = SweepPanel(total=len(kw["targets"]) * points * kw["repeat"], title=name) if live_panel else None
    if panel is not None:
        display(panel.widget)
    return run_sweep_with_panel(panel, **kw)


def why_failed(cells, target):
    """The first error of a target's cells, shortened for a table."""
    err = cells.loc[(cells["mode"] == target) & (cells["status"] != "ok"), "error"]
    return err.iloc[0][:120] if len(err) else "no cell"


def failed_cells(cells):
    bad = cells[cells["status"] == "failed"]
    return bad[["mode", "concurrency", "rate", "error"]] if len(bad) else None


# %% [markdown]
# ## 1 · Closed loop: throughput, added latency and memory per target
#
# Our rungs twice: with every stage and the ledger on, and as a passthrough (`--stages none
# --audit off`), the like-for-like row for a peer that runs no governance.

# %%
closed = sweep("closed", concurrency=S["concurrency"], governance=["on", "off"]).table
run.write_table("closed", closed)
display(failed_cells(closed))
ok = closed[closed["status"] == "ok"]
# the governance matrix: what each target ran besides forwarding (gov_* columns of every cell)
GOV = ["gov_auth", "gov_waf", "gov_ratelimit", "gov_ledger", "gov_tracing"]
matrix = (
    closed.drop_duplicates(["mode", "governance"])[["mode", "governance", "route", *GOV, "governance_notes"]]
    .rename(columns={"mode": "target", "governance": "as run"})
    .replace({True: "yes", False: "no"})
    .rename(columns={g: g.removeprefix("gov_") for g in GOV})
    .reset_index(drop=True)
)
display(matrix)


def spread_at(df, target, col, **where):
    sel = df[(df["mode"] == target) & df[col].notna()]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return spread_of(sel[col]) if len(sel) else (math.nan, math.nan, math.nan)


def rows_of(t):
    """(row label, governance) per row of a target: our rungs governed and passthrough."""
    if t in RUNGS:
        return [(t, "on"), (f"{t} passthrough", "off")]
    return [(t, "shipped")]


rows = []
for t in S["targets"]:
    for name, g in rows_of(t):
        sel = closed[(closed["mode"] == t) & (closed["governance"] == g)]
        row = {
            "target": name,
            "kind": "rung" if t in RUNGS else "peer",
            "version": (sel["peer_version"].iloc[0] if len(sel) else "") or "this repo",
            "route": sel["route"].iloc[0] if len(sel) else "",
            "governance": "+".join(x.removeprefix("gov_") for x in GOV if len(sel) and sel[x].iloc[0])
            or "none",
        }
        for c in S["concurrency"]:
            row[f"req/s c={c}"] = fmt_si(spread_at(ok, t, "rps", concurrency=c, governance=g))
        row["added p50 µs (c=1)"] = fmt_si(
            spread_at(ok, t, "ovh_p50_us", concurrency=min(S["concurrency"]), governance=g)
        )
        row["peak RSS MiB"] = fmt(spread_at(ok, t, "rss_peak_mb", governance=g))
        row["CPU µs/req (top c)"] = fmt_si(
            spread_at(ok, t, "cpu_us_per_req", concurrency=max(S["concurrency"]), governance=g)
        )
        rows.append(row)
closed_table = pd.DataFrame(rows)
closed_table

# %% [markdown]
# ## 2 · Seed 002 on this machine: LiteLLM's Python path against its own Rust bridge
#
# Same proxy, same config, same route (`/v1/messages`, Anthropic upstream); only
# `LITELLM_RUST` differs. The header check (`path_check`) shows which path answered.

# %%
c2 = S["seed002_c"]
lite = ok[ok["mode"].isin(["litellm", "litellm-rust"]) & (ok["concurrency"] == c2)]
display(
    closed[closed["mode"].isin(["litellm", "litellm-rust"])][
        ["mode", "concurrency", "path_check"]
    ].drop_duplicates()
)
py_rps, rs_rps = spread_at(lite, "litellm", "rps"), spread_at(lite, "litellm-rust", "rps")
py_mem, rs_mem = spread_at(ok, "litellm", "rss_peak_mb"), spread_at(ok, "litellm-rust", "rss_peak_mb")


def put(name, triple, desc, why):
    """A metric only from ok cells: a side without one leaves it missing, with the reason."""
    if all(x == x for x in triple):
        METRICS[name] = metric(*triple, desc=desc)
    else:
        MISSING[name] = why


why_lite = "; ".join(f"{t}: {why_failed(closed, t)}" for t in ("litellm", "litellm-rust"))
put(
    "litellm_rust_over_python_rps",
    ratio_spread(rs_rps, py_rps),
    f"LiteLLM /v1/messages req/s, LITELLM_RUST=true / false, c={c2}",
    why_lite,
)
put(
    "litellm_rust_over_python_rss",
    ratio_spread(rs_mem, py_mem),
    "LiteLLM peak RSS, LITELLM_RUST=true / false",
    why_lite,
)
seed002 = pd.DataFrame(
    [
        {
            "": "seed 002 (their machine)",
            "LiteLLM Python req/s": "453",
            "Rust req/s": "6,782 (their Rust gateway)",
            "Python peak MB": "358.9",
            "Rust peak MB": "31.7",
        },
        {
            "": f"this run, c={c2}",
            "LiteLLM Python req/s": fmt_si(py_rps),
            "Rust req/s": fmt_si(rs_rps) + " (litellm-rust)",
            "Python peak MB": fmt(py_mem),
            "Rust peak MB": fmt(rs_mem),
        },
    ]
)
display(seed002)
r = METRICS.get("litellm_rust_over_python_rps")
display(
    Markdown(
        f"On `/v1/messages` LiteLLM's Rust bridge gives **{r['value']:.2f}x** the Python path's throughput "
        f"[{r['min']:.2f}–{r['max']:.2f}] at c={c2}: its stage 1 moves the transforms, while the proxy "
        "around them (FastAPI, routing, logging hooks) stays Python."
        if r
        else f"Not measured: {MISSING['litellm_rust_over_python_rps']}"
    )
)

# %% [markdown]
# ## 3 · Seed 004's open-loop rate ladders
#
# Each target is driven at increasing arrival rates; latency counts from each request's
# intended send time (coordinated omission corrected). A rate is sustained when p99 is at most
# the cap and errors stay under 1%; a target's ladder stops at its first unsustained rate.

# %%
ladder = sweep(
    "ladder", targets=S["side_targets"], rates=S["rates"], p99_cap_ms=S["p99_cap_ms"], repeat=S["side_repeat"]
).table
run.write_table("ladder", ladder)
sust = sustainable_rates(ladder, 1000 * S["p99_cap_ms"])
lok = ladder[ladder["status"] == "ok"]
p95_rows = []
for (t, rate), d in lok.groupby(["mode", "rate"], sort=False):
    p95_rows.append(
        {
            "target": t,
            "rate/s": int(rate),
            "p50 ms": fmt(spread_of(d["lat_p50_us"] / 1e3)),
            "p95 ms": fmt(spread_of(d["lat_p95_us"] / 1e3)),
            "p99 ms": fmt(spread_of(d["lat_p99_us"] / 1e3)),
            "errors %": fmt(spread_of(100 * d["error_share"].fillna(0))),
            "sustained": bool(d["sustained"].all()),
        }
    )
p95_table = pd.DataFrame(p95_rows)
fig_p95 = go.Figure()
for t, d in lok.groupby("mode", sort=False):
    m = d.groupby("rate")["lat_p95_us"].median() / 1e3
    fig_p95.add_scatter(x=m.index, y=m.values, name=t, mode="lines+markers")
# the cap's line; its label goes on separately: on a log axis plotly reads an annotation's y in
# log10 units (a label at y=50 sat at 10^50 and stretched the axis to 10^54), a shape's in data units
fig_p95.add_hline(y=S["p99_cap_ms"], line_dash="dot")
fig_p95.add_annotation(
    text=f"p99 cap {S['p99_cap_ms']:g} ms",
    x=1,
    xref="x domain",
    xanchor="right",
    y=math.log10(S["p99_cap_ms"]),
    yref="y",
    yanchor="bottom",
    showarrow=False,
)
fig_p95.update_layout(
    title=dict(
        text="p95 against open-loop arrival rate (CO-corrected)",
        subtitle=dict(
            text="open loop, latency from the intended send time; exact (every request in an HDR histogram); "
            f"median of {S['side_repeat']} repeat(s)"
        ),
    ),
    xaxis=dict(title="arrival rate, req/s", type="log", tickvals=S["rates"]),
    yaxis_title="p95 ms",
    yaxis_type="log",
    template="plotly_white",
    height=420,
)
display(sust)
fig_p95

# %% [markdown]
# ## 4 · Fast vs slow upstream at a fixed open-loop rate

# %%
frames = []
for ms in S["upstream_ms"]:
    t = sweep(
        f"upstream-{ms}ms",
        targets=S["side_targets"],
        rates=[S["fixed_rate"]],
        upstream=dict(latency_ms=ms),
        repeat=S["side_repeat"],
        duration_s=max(S["duration_s"], 4 * ms / 1000 + 1.0),
        p99_cap_ms=10 * ms + 1000,
    ).table
    frames.append(t.assign(upstream_ms=ms))
upstream = pd.concat(frames, ignore_index=True)
run.write_table("upstream", upstream)
uok = upstream[upstream["status"] == "ok"]
fs_rows = []
for t in S["side_targets"]:
    row = {"target": t}
    for ms in S["upstream_ms"]:
        d = uok[(uok["mode"] == t) & (uok["upstream_ms"] == ms)]
        why = "failed: " + why_failed(upstream[(upstream["upstream_ms"] == ms)], t)
        row[f"added p50 µs @ {ms} ms"] = fmt_si(spread_of(d["ovh_p50_us"])) if len(d) else why
        row[f"added p95 µs @ {ms} ms"] = fmt_si(spread_of(d["ovh_p95_us"])) if len(d) else why
    fs_rows.append(row)
fast_slow = pd.DataFrame(fs_rows)
fast_slow

# %% [markdown]
# ## 5 · Streaming: time-to-first-byte overhead with an SSE upstream

# %%
stream = sweep(
    "stream",
    targets=S["side_targets"],
    rates=[S["stream_rate"]],
    stream=True,
    upstream=dict(latency_ms=0, **S["stream_upstream"]),
    repeat=S["side_repeat"],
    p99_cap_ms=10_000,
).table
run.write_table("stream", stream)
sok = stream[stream["status"] == "ok"]
ttft = pd.DataFrame(
    [
        {
            "target": t,
            "TTFB p50 µs": fmt_si(spread_at(sok, t, "ttfb_p50_us")),
            "added TTFB p50 µs": fmt_si(spread_at(sok, t, "ovh_ttfb_p50_us")),
            "added TTFB p99 µs": fmt_si(spread_at(sok, t, "ovh_ttfb_p99_us")),
        }
        if (sok["mode"] == t).any()
        else {"target": t, "TTFB p50 µs": "failed: " + why_failed(stream, t)}
        for t in S["side_targets"]
    ]
)
ttft

# %% [markdown]
# ## The figures side by side


# %%
def fs_value(t, col):
    d = fast_slow.loc[fast_slow["target"] == t, col] if col in fast_slow else []
    return d.iloc[0] if len(d) else "not run"


summary_rows = []
for t in S["targets"]:
    s = sust[sust["mode"] == t]
    held = s["sustainable_rate"].iloc[0] if len(s) else None
    for name, g in rows_of(t):
        summary_rows.append(
            {
                "target": name,
                "route": closed.loc[closed["mode"] == t, "route"].iloc[0],
                "governance": matrix.loc[
                    (matrix["target"] == t) & (matrix["as run"] == g), ["auth", "waf", "ratelimit", "ledger"]
                ]
                .apply(lambda r: "+".join(k for k, v in r.items() if v == "yes") or "none", axis=1)
                .iloc[0],
                f"req/s c={min(S['concurrency'])}": fmt_si(
                    spread_at(ok, t, "rps", concurrency=min(S["concurrency"]), governance=g)
                ),
                "req/s c=16": fmt_si(spread_at(ok, t, "rps", concurrency=16, governance=g)),
                "added p50 µs": fmt_si(
                    spread_at(ok, t, "ovh_p50_us", concurrency=min(S["concurrency"]), governance=g)
                ),
                "peak RSS MiB": fmt(spread_at(ok, t, "rss_peak_mb", governance=g)),
                "sustainable req/s": "not run"
                if held is None or g == "off"
                else (f"< {min(S['rates'])}" if math.isnan(held) else f"{held:g}"),
                "added p50 µs @ 50 ms upstream": fs_value(t, "added p50 µs @ 50 ms")
                if g != "off"
                else "not run",
                "added p50 µs @ 500 ms upstream": fs_value(t, "added p50 µs @ 500 ms")
                if g != "off"
                else "not run",
            }
        )
summary = pd.DataFrame(summary_rows)
# ratios only like with like: the same route (chat completions), the peer (which runs no WAF,
# rate limit or ledger here) against our passthrough rows; LiteLLM's /v1/messages targets are
# compared with each other only (section 2)
for t in ("noveum", "portkey", "litellm-chat"):
    for ours in ("py+rs", "rs-server"):
        if t in S["targets"] and ours in S["targets"]:
            r = ratio_spread(
                spread_at(ok, t, "rps", concurrency=16),
                spread_at(ok, ours, "rps", concurrency=16, governance="off"),
            )
            put(  # only from ok cells on both sides (a not-ok cell is never read)
                f"{t.replace('-', '_')}_over_{ours.replace('+', '').replace('-', '')}_passthrough_rps_c16",
                r,
                f"{t} as shipped / {ours} --stages none --audit off, req/s on /v1/chat/completions, "
                "closed loop c=16",
                f"{t}: {why_failed(closed, t)}; {ours} passthrough: "
                + why_failed(closed[closed["governance"] == "off"], ours),
            )
summary

# %% [markdown]
# ## Blog export
#
# Markdown tables (each with its spread and the machine line, peers' versions included, under
# it), static PNG and SVG images, and standalone HTML figures, written to `blog/` in the run folder.

# %%
written = export(
    run.path,
    tables={
        "peers_summary": (summary, "Every target on one machine: median [min–max] over repeats"),
        "closed_loop": (
            closed_table,
            "Closed loop: req/s, added p50 over the direct baseline, peak RSS of the process tree",
        ),
        "seed002_litellm": (
            seed002,
            "Seed 002's LiteLLM figures against this run (same route, LITELLM_RUST off / on)",
        ),
        "p95_vs_rate": (p95_table, "Open-loop ladders (CO-corrected): p50/p95/p99 per rate"),
        "sustainable_rate": (sust, f"Highest rate with p99 <= {S['p99_cap_ms']:g} ms and < 1% errors"),
        "fast_vs_slow": (
            fast_slow,
            f"Added latency at {S['fixed_rate']} req/s open loop, by upstream latency",
        ),
        "streaming_ttfb": (
            ttft,
            "Streaming: time to first byte and its overhead over the direct SSE baseline",
        ),
    },
    figures={"p95_vs_rate": fig_p95},
    profile=profile,
    meta=run.meta,
)
display(Markdown("\n".join(f"- `{p}`" for kind in written.values() for p in kind)))

# %%
# the ratios the CI regression check reads (data/baselines/<notebook>.json, when one exists)
display(write_missing(run.path, MISSING))
print(write_metrics(run.path, NOTEBOOK, profile, METRICS))
pd.DataFrame(METRICS).T[["value", "min", "max", "desc"]]
