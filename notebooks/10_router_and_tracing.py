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
# # 10 · The router (and tracing): what they cost, what they buy
#
# **The seeds' claim (002, 003).** A production gateway does more than forward: it balances
# load over several deployments of a model, retries, falls back and takes dead deployments
# out (LiteLLM's Router; tower retry/timeout layers and a governor limiter). Users ask what
# that costs per request, and what it buys, before moving it to Rust.
#
# **What is measured.** The router twins (`gateway/router.py`, `native/core/src/router.rs`,
# docs/router.md) on every rung, against a fleet of native mocks (`harness/fleet.py`):
# 1. the router's cost per request: one deployment with no router against a group of four
#    (four entries on the same mock, so only the router differs), per rung and per twin;
# 2. what latency-based routing buys when one deployment turns slow;
# 3. what retries do to p99 and to upstream load when a deployment fails at 5, 20 and 50%;
# 4. how quickly a cooldown takes a dead deployment out and brings it back.
#
# **How.** `harness.router_study`: the gateway pinned to its core, the mocks and the native
# load generator on the other(s); closed-loop windows after a warm-up; latency from the load
# generator's HDR histogram (**exact**, client side); gateway CPU µs per request from /proc
# over the window (process tree). Cases alternate inside each repeat; tables give the median
# [min–max] over repeats. This machine is shared: compare ratios inside one run.

# %% tags=["parameters"]
# papermill parameters: "full" is the real study, "ci" a small fast run (make test)
profile = "full"
run_dir = None  # papermill passes a folder; None -> data/runs/<UTC time>-<notebook>/

# %%
import pandas as pd
import plotly.express as px
from IPython.display import Markdown, display

from harness.notebooks import metric, write_metrics
from harness.studies import router_study
from lab_ext.export import export, machine_line
from lab_ext.nb import fmt, notebook_run, ratio_spread, spread_of

NOTEBOOK = "10_router_and_tracing"
SIZES = {
    "full": dict(
        rungs=["py", "py+rs", "rs-core", "rs-server"],
        concurrency=8,
        duration_s=3.0,
        warmup_s=0.5,
        repeat=3,
        study_rungs=["py", "rs-server"],
        strategies=["simple-shuffle", "least-busy", "latency-based"],
        fast_ms=1.0,
        slow_ms=25.0,
        rates=[0.05, 0.2, 0.5],
        retries=[0, 2],
        allowed_fails=3,
        cooldown_ms=500,
        dead_s=2.0,
        after_s=1.5,
        book_n=20000,
        trace_concurrency=8,
        trace_repeat=5,
    ),
    "ci": dict(
        rungs=["py", "py+rs", "rs-core", "rs-server"],
        concurrency=4,
        duration_s=0.3,
        warmup_s=0.1,
        repeat=1,
        study_rungs=["rs-server"],
        strategies=["simple-shuffle", "latency-based"],
        fast_ms=1.0,
        slow_ms=25.0,
        rates=[0.05, 0.2, 0.5],
        retries=[0, 2],
        allowed_fails=3,
        cooldown_ms=300,
        dead_s=0.6,
        after_s=0.6,
        book_n=2000,
        trace_concurrency=4,
        trace_repeat=1,
    ),
}
assert profile in SIZES, f"profile must be one of {list(SIZES)}, got {profile!r}"
S = SIZES[profile]
run = notebook_run(NOTEBOOK, profile, run_dir, parameters=S)
MACHINE = machine_line(run.meta, profile)
METRICS = {}
print(MACHINE)
print("run folder:", run.path)


def spread(df, col):
    return spread_of(df[col].tolist())


# %% [markdown]
# ## 1 · The router's cost per request
#
# The same rung, every stage and the ledger on: model `mock` on one upstream with no router
# (today's path), against `mock` as a group of four deployments routed by `simple-shuffle`
# with the default retry and cooldown settings (nothing fails here, so no retry happens: this
# is the bookkeeping alone). On `py` and `py+rs` the router twin is a component switch, so
# both twins are measured there (`--impl router=...`).

# %%
cost = pd.DataFrame(
    router_study.router_cost(
        S["rungs"], S["concurrency"], S["duration_s"], S["warmup_s"], S["repeat"], tmp=str(run.path)
    )
)
run.write_table("router_cost", cost.drop(columns=[]))
rows = []
for rung in S["rungs"]:
    off = cost[(cost.rung == rung) & ~cost.group]
    for router, d in cost[(cost.rung == rung) & cost.group].groupby("router", sort=False):
        cpu = ratio_spread(spread(d, "cpu_us_per_req"), spread(off, "cpu_us_per_req"))
        rps = ratio_spread(spread(d, "rps"), spread(off, "rps"))
        rows.append(
            {
                "rung": rung,
                "router": router,
                "CPU µs/req, off": fmt(spread(off, "cpu_us_per_req")),
                "CPU µs/req, group": fmt(spread(d, "cpu_us_per_req")),
                "CPU ratio group/off": fmt(cpu),
                "req/s ratio group/off": fmt(rps),
                "p50 µs off": fmt(spread(off, "p50_us")),
                "p50 µs group": fmt(spread(d, "p50_us")),
            }
        )
        key = f"router_cpu_ratio_{rung}_{d['twin'].iloc[0]}".replace("+", "_")
        METRICS[key] = metric(
            *cpu,
            desc=f"{rung}: gateway CPU per request, group of 4 / one upstream without router "
            f"({d['twin'].iloc[0]} router twin)",
        )
cost_table = pd.DataFrame(rows)
cost_table

# %%
fig_cost = px.bar(
    cost[cost.group]
    .assign(case=lambda d: d.rung + " · " + d.twin)
    .groupby("case", sort=False)["cpu_us_per_req"]
    .median()
    .reset_index(),
    x="case",
    y="cpu_us_per_req",
    labels={"cpu_us_per_req": "gateway CPU per request (µs)", "case": "rung · router twin"},
    title="Gateway CPU µs per request with a group of four (median over repeats)",
)
MEASURED = (
    f"closed loop, c={S['concurrency']}; exact: 2xx counted, CPU from /proc, latencies in HDR histograms; "
    f"median of {S['repeat']} repeat(s)"
)
fig_cost.update_layout(title_subtitle_text=MEASURED + "; dash: the same rung without the router")
for rung in S["rungs"]:
    off = cost[(cost.rung == rung) & ~cost.group]["cpu_us_per_req"].median()
    fig_cost.add_scatter(
        x=[f"{rung} · " + t for t in cost[(cost.rung == rung) & cost.group].twin.unique()],
        y=[off] * cost[(cost.rung == rung) & cost.group].twin.nunique(),
        mode="markers",
        marker=dict(symbol="line-ew-open", size=30),
        name=f"{rung} without router",
        showlegend=False,
    )
fig_cost

# %% [markdown]
# The whole-gateway difference above sits inside this machine's noise on the Python rungs.
# The router's own bookkeeping per request (`begin` + `next` + `report`, a group of four) is
# measured here without the gateway, per twin and strategy; the Rust twin is called through
# the binding, so its figure bounds from above what `rs-core` and `rs-server` pay natively.

# %%
book = pd.DataFrame(
    [
        {"twin": impl, "strategy": st, "ns": ns}
        for impl in ("python", "rust")
        for st in S["strategies"]
        for ns in router_study.bookkeeping_ns(impl, st, n=S["book_n"], repeat=max(S["repeat"], 3))
    ]
)
run.write_table("router_bookkeeping", book)
book_table = pd.DataFrame(
    [
        {
            "strategy": st,
            "python twin, µs/request": fmt(tuple(x / 1000 for x in spread(d[d.twin == "python"], "ns"))),
            "rust twin (via the binding), µs/request": fmt(
                tuple(x / 1000 for x in spread(d[d.twin == "rust"], "ns"))
            ),
            "python / rust": fmt(
                ratio_spread(spread(d[d.twin == "python"], "ns"), spread(d[d.twin == "rust"], "ns"))
            ),
        }
        for st, d in book.groupby("strategy", sort=False)
    ]
)
for st, d in book.groupby("strategy", sort=False):
    METRICS[f"router_bookkeeping_py_over_rs_{st}".replace("-", "_")] = metric(
        *ratio_spread(spread(d[d.twin == "python"], "ns"), spread(d[d.twin == "rust"], "ns")),
        desc=f"router twin alone ({st}, 4 deployments): Python ns per request / Rust ns per request (via the binding)",
    )
book_table

# %% [markdown]
# ## 2 · One deployment turns slow
#
# Four deployments, three answering in ~1 ms and one in ~25 ms. `simple-shuffle` keeps
# sending it a quarter of the traffic; `latency-based` keeps a moving window of each
# deployment's latency and sends new requests to the lowest mean (a deployment with no answer
# yet counts as 0, so each is tried; a slow one is re-tried only if the others' means grow
# past it); `least-busy` follows the in-flight count, which a slow deployment keeps high.

# %%
slow = pd.concat(
    [
        pd.DataFrame(
            router_study.slow_deployment(
                rung,
                S["strategies"],
                S["slow_ms"],
                S["fast_ms"],
                S["concurrency"],
                S["duration_s"],
                S["warmup_s"],
                S["repeat"],
                tmp=str(run.path),
            )
        )
        for rung in S["study_rungs"]
    ]
)
run.write_table("slow_deployment", slow)
rows = []
for (rung, strategy), d in slow.groupby(["rung", "strategy"], sort=False):
    rows.append(
        {
            "rung": rung,
            "strategy": strategy,
            "share sent to the slow one": fmt(spread(d, "slow_share")),
            "p50 µs": fmt(spread(d, "p50_us")),
            "p99 µs": fmt(spread(d, "p99_us")),
            "req/s": fmt(spread(d, "rps")),
        }
    )
slow_table = pd.DataFrame(rows)
for rung in S["study_rungs"]:
    d = slow[slow.rung == rung]
    lat, shuf = d[d.strategy == "latency-based"], d[d.strategy == "simple-shuffle"]
    METRICS[f"latency_based_p99_gain_{rung}".replace("+", "_")] = metric(
        *ratio_spread(spread(shuf, "p99_us"), spread(lat, "p99_us")),
        desc=f"{rung}: p99 with simple-shuffle / p99 with latency-based, one of four deployments 25x slower",
    )
slow_table

# %%
fig_slow = px.bar(
    slow.groupby(["rung", "strategy"], sort=False)[["p50_us", "p99_us"]]
    .median()
    .reset_index()
    .rename(columns={"p50_us": "p50", "p99_us": "p99"})
    .melt(id_vars=["rung", "strategy"], var_name="quantile", value_name="µs"),
    x="strategy",
    y="µs",
    color="quantile",
    barmode="group",
    facet_col="rung",
    title="Client latency with one slow deployment of four",
)
fig_slow.update_layout(title_subtitle_text=MEASURED)
fig_slow

# %% [markdown]
# ## 3 · Retries when a deployment fails
#
# Four deployments; the first answers HTTP 500 to a share of requests (5%, 20%, 50%). Cooldown
# is switched off here (`allowed_fails` huge) so that only retries act: with `num_retries: 0`
# a client sees the 500 (as a 502), with 2 the router retries on another deployment after a
# 0.5–8 ms backoff. Upstream load is upstream requests per client request.

# %%
fail = pd.concat(
    [
        pd.DataFrame(
            router_study.failing_deployment(
                rung,
                S["rates"],
                S["retries"],
                S["concurrency"],
                S["duration_s"],
                S["warmup_s"],
                S["repeat"],
                tmp=str(run.path),
            )
        )
        for rung in S["study_rungs"]
    ]
)
run.write_table("failing_deployment", fail)
rows = []
for (rung, rate, n), d in fail.groupby(["rung", "fail_rate", "num_retries"], sort=False):
    rows.append(
        {
            "rung": rung,
            "deployment 0 fails": f"{rate:.0%}",
            "num_retries": n,
            "client error share": fmt(spread(d, "error_share")),
            "p99 µs": fmt(spread(d, "p99_us")),
            "upstream requests per request": fmt(spread(d, "upstream_per_request")),
        }
    )
fail_table = pd.DataFrame(rows)
fail_table

# %%
fig_fail = px.line(
    fail.groupby(["rung", "fail_rate", "num_retries"])[["p99_us", "upstream_per_request", "error_share"]]
    .median()
    .reset_index()
    # each panel its own quantity, named with its unit (the panel's title)
    .rename(
        columns={
            "p99_us": "p99 µs",
            "upstream_per_request": "upstream requests per request",
            "error_share": "client error share",
        }
    )
    .melt(id_vars=["rung", "fail_rate", "num_retries"]),
    x="fail_rate",
    y="value",
    color="num_retries",
    facet_col="variable",
    facet_row="rung",
    markers=True,
    labels={"fail_rate": "deployment 0's error rate", "num_retries": "num_retries"},
    title="Retries: p99, upstream load and client errors against the failing deployment's error rate",
)
fig_fail.update_yaxes(matches=None, showticklabels=True, title_text="")
fig_fail.update_xaxes(tickvals=S["rates"], tickformat=".0%")
fig_fail.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
fig_fail.update_layout(title_subtitle_text=MEASURED)
fig_fail

# %% [markdown]
# ## 4 · Cooldown: how quickly a dead deployment is out, and back
#
# Two deployments, a paced sequential client. Deployment 0's mock is killed (connections
# refused): each request that meets it is retried on the other after a 10–20 ms backoff, which
# is how the client timeline shows it; after `allowed_fails` failures it cools down for
# `cooldown_ms`, then takes one half-open probe at a time (each failed probe cools it down
# again). A retried request waits 25–50 ms, which is how the timeline tells it from the
# others (on a loaded machine a request can be that slow for other reasons: `failed_probes`
# is an upper bound). Then the mock is started again on its port, and the first request it
# serves marks it back.

# %%
cool = [
    router_study.cooldown_reaction(
        rung, S["allowed_fails"], S["cooldown_ms"], S["dead_s"], S["after_s"], tmp=str(run.path)
    )
    for rung in S["study_rungs"]
]
run.write_json("cooldown.json", cool)
cool_table = pd.DataFrame([{k: v for k, v in c.items() if k != "timeline"} for c in cool])
for c in cool:
    if c["out_after_s"] is not None:
        METRICS[f"cooldown_out_s_{c['rung']}".replace("+", "_")] = metric(
            c["out_after_s"],
            unit="s",
            desc=f"{c['rung']}: seconds from the kill to the failure that cooled it down "
            f"(allowed_fails={c['allowed_fails']})",
        )
cool_table

# %%
tl = pd.concat(
    [
        pd.DataFrame(c["timeline"], columns=["t_s", "status", "latency_s", "phase"]).assign(rung=c["rung"])
        for c in cool
    ]
)
fig_cool = px.scatter(
    tl.assign(latency_ms=tl.latency_s * 1000),
    x="t_s",
    y="latency_ms",
    color="phase",
    facet_row="rung",
    labels={"t_s": "time since the kill (s)", "latency_ms": "client latency (ms)"},
    title="Client latency around a killed (t=0) and restarted deployment; retried requests stand out",
)
fig_cool.update_layout(
    title_subtitle_text="one paced client, closed loop (c=1); exact: every request's latency; one run"
)
fig_cool

# %% [markdown]
# ## Tracing
#
# What OpenTelemetry spans cost per request on each rung (`--tracing off`, `sampled:0.1`,
# `on`), against the same rung untraced in the same repeat. The Python rungs use the
# OpenTelemetry SDK, the Rust rungs `tracing` with an OTLP exporter (docs/tracing.md); spans go
# over OTLP/HTTP to the harness's local receiver (`harness.otlp`), which counts them. **Closed
# loop**, CPU **exact** (/proc); ratios per repeat, median [min–max].

# %%
from harness.studies.tracing_study import tracing_cost

tstudy = tracing_cost(
    modes=S["rungs"],
    tracing=("off", "sampled:0.1", "on"),
    concurrency=S["trace_concurrency"],
    profile="xeon-4c",
    duration_s=S["duration_s"],
    warmup_s=S["warmup_s"],
    repeat=S["trace_repeat"],
    out=run.path,
    name="tracing",
)
run.write_table("tracing_cells", tstudy.run.table)
run.write_table("tracing", tstudy.table)
display(Markdown(tstudy.markdown()))

# %%
fig_tracing = tstudy.figure("cpu_us_per_req")
fig_tracing

# %%
for rung in S["rungs"]:
    for mode in ("sampled:0.1", "on"):
        r = tstudy.table[(tstudy.table["mode"] == rung) & (tstudy.table["tracing"] == mode)]
        if len(r):
            r = r.iloc[0]
            tag = rung.replace("+", "").replace("-", "")
            METRICS[f"tracing_{mode.split(':')[0]}_cpu_ratio_{tag}"] = metric(
                r["cpu_us_per_req_ratio"],
                r["cpu_us_per_req_ratio_min"],
                r["cpu_us_per_req_ratio_max"],
                desc=f"CPU µs/request with tracing {mode} / off on {rung}",
            )

# %% [markdown]
# ## What this says
#
# Derived from the tables above, on this machine (the numbers change; the sentence is
# written from them each run).


# %%
def med(df, col):
    return float(df[col].median())


parts = []
for rung in S["rungs"]:
    off = cost[(cost.rung == rung) & ~cost.group]
    for twin, d in cost[(cost.rung == rung) & cost.group].groupby("twin"):
        parts.append(
            f"`{rung}` ({twin} twin) {med(d, 'cpu_us_per_req') - med(off, 'cpu_us_per_req'):+.0f} µs"
        )
bk = book[book.strategy == "simple-shuffle"]
r0 = S["study_rungs"][0]
f = fail[fail.rung == r0]
hi = max(S["rates"])
no, yes = (
    f[(f.fail_rate == hi) & (f.num_retries == 0)],
    f[(f.fail_rate == hi) & (f.num_retries == max(S["retries"]))],
)
s = slow[slow.rung == r0]
text = (
    "A group of four costs this much gateway CPU per request over one upstream without a router: "
    + ", ".join(parts)
    + " (windows on a shared machine: the spread in the table is the noise floor). "
    f"The router's own bookkeeping is {med(bk[bk.twin == 'python'], 'ns') / 1000:.1f} µs per request in the Python twin "
    f"and {med(bk[bk.twin == 'rust'], 'ns') / 1000:.1f} µs in the Rust twin through the binding. "
    f"With one of four deployments 25x slower, on `{r0}` `latency-based` sent it "
    f"{med(s[s.strategy == 'latency-based'], 'slow_share'):.1%} of requests against "
    f"{med(s[s.strategy == 'simple-shuffle'], 'slow_share'):.1%} for `simple-shuffle`, and p99 went from "
    f"{med(s[s.strategy == 'simple-shuffle'], 'p99_us'):,.0f} µs to {med(s[s.strategy == 'latency-based'], 'p99_us'):,.0f} µs. "
    f"With a deployment failing {hi:.0%} of the time, retries took the client error share from "
    f"{med(no, 'error_share'):.1%} to {med(yes, 'error_share'):.1%} for {med(yes, 'upstream_per_request'):.2f} upstream "
    f"requests per request (p99 {med(no, 'p99_us'):,.0f} -> {med(yes, 'p99_us'):,.0f} µs). "
    + " ".join(
        f"On `{c['rung']}` a killed deployment was out {c['out_after_s']:.3f} s after the kill "
        f"({c['allowed_fails']} failed attempts, every one retried: {c['client_errors']} client errors) and back "
        f"{c['back_after_restart_s']:.3f} s after its restart."
        for c in cool
        if c["out_after_s"] is not None and c["back_after_restart_s"] is not None
    )
    + " Tracing every request multiplies the gateway's CPU per request by "
    + ", ".join(
        f"{t.cpu_us_per_req_ratio:.2f}x on `{t.mode}`"
        for t in tstudy.table[tstudy.table["tracing"] == "on"].itertuples()
    )
    + "; sampling one request in ten, by "
    + ", ".join(
        f"{t.cpu_us_per_req_ratio:.2f}x"
        for t in tstudy.table[tstudy.table["tracing"] == "sampled:0.1"].itertuples()
    )
    + " (same order)."
)
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
        "router_cost": (
            cost_table,
            "Router cost per request: a group of four against one upstream without router, per rung and twin",
        ),
        "router_bookkeeping": (
            book_table,
            "The router twin alone: begin + next + report per request, a group of four",
        ),
        "slow_deployment": (
            slow_table,
            "One of four deployments turns slow: traffic share and client latency per strategy",
        ),
        "failing_deployment": (
            fail_table,
            "Retries against a deployment failing at 5/20/50%: client errors, p99, upstream load",
        ),
        "cooldown": (
            cool_table,
            "Cooldown: seconds from a kill until the deployment is out, and from its restart until it is back",
        ),
        "tracing_cost": (
            tstudy.table,
            "What tracing costs per request, per rung: off, sampled:0.1 and on, as ratios to off",
        ),
    },
    figures={
        "router_cost": fig_cost,
        "slow_deployment": fig_slow,
        "failing_deployment": fig_fail,
        "cooldown": fig_cool,
        "tracing_cost": fig_tracing,
    },
    profile=profile,
    meta=run.meta,
)
display(Markdown("\n".join(f"- `{p}`" for kind in written.values() for p in kind)))

# %%
# the ratios (ungated: no baseline file for this notebook yet)
print(write_metrics(run.path, NOTEBOOK, profile, METRICS))
pd.DataFrame(METRICS).T[["value", "min", "max", "desc"]]
