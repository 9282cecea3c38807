"""Sweep reports: `report.md` (markdown tables with spread), `report.html` (plotly figures)
and static images for a blog post (`figures/*.png` via kaleido, SVG fallback).

    write_report(run_dir, formats=("md", "html"), images=True) -> {"md", "html", "images", "notes"}
    summary(cells) -> DataFrame       median/min/max per line (config) and concurrency
    peaks(cells) -> DataFrame         where throughput peaks, per line

Every figure is plotted against concurrency with one line per configuration (mode, switches,
shell); the spread over repeats is the error bar (min..max). Labels (exact / sampled) and the
loop kind (closed / open) are printed beside the figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.results import schema

# (column, title, unit) — the figures, in order.
FIGURES: list[tuple[str, str, str]] = [
    ("rps", "Throughput", "req/s"),
    ("lat_p50_us", "Latency p50", "µs"),
    ("lat_p99_us", "Latency p99", "µs"),
    ("ovh_p50_us", "Overhead p50 (gateway − direct)", "µs"),
    ("ovh_p99_us", "Overhead p99 (gateway − direct)", "µs"),
    ("cpu_cores", "Gateway CPU (user+sys s/s)", "cores"),
    ("cpu_us_per_req", "Gateway CPU per request", "µs"),
    ("rss_peak_mb", "Peak RSS (process tree)", "MiB"),
    ("gil_wait_p99_us", "GIL acquisition wait p99 (probe thread, exact)", "µs"),
    ("gil_wait_p50_us", "GIL acquisition wait p50 (probe thread, exact)", "µs"),
    ("loop_lag_p99_us", "Event-loop lag p99 (exact)", "µs"),
    ("gil_held_share", "GIL held share (py-spy, sampled)", "share"),
    ("native_wait_s", "Rust entry points: GIL re-acquire wait (exact)", "s per window"),
]

TABLE_COLS = [
    "rps",
    "lat_p50_us",
    "lat_p99_us",
    "ovh_p50_us",
    "ovh_p99_us",
    "cpu_cores",
    "rss_peak_mb",
    "gil_wait_p99_us",
    "loop_lag_p99_us",
    "gil_held_share",
    "gil_main_share",
]


def xcol(cells) -> str:
    """The x axis of a sweep: `rate` for open-loop ladders, else `concurrency`."""
    return (
        "rate"
        if "loop" in cells.columns and len(cells) and (cells["loop"] == "open").all()
        else "concurrency"
    )


def line_label(row) -> str:
    if row.get("target_kind") == "peer":
        return row["mode"]
    lab = row["mode"]
    if row.get("switches"):
        lab += f"[{row['switches']}]"
    gov = row.get("governance")
    if isinstance(gov, str) and gov not in ("", "on"):
        lab += f" gov={gov}"
    w = row.get("workers")
    if isinstance(w, (int, float)) and w > 1:  # the worker axis; a clamped placement says so on every figure
        lab += f" w={int(w)}" + (" (clamped)" if row.get("clamped") else "")
    tr = row.get("tracing")
    if isinstance(tr, str) and tr not in ("", "off"):
        lab += f" trace={tr}"
    up = row.get("upstream")
    if isinstance(up, str) and up:
        lab += f" up={up}"
    if row.get("probes") == "on":  # a GIL/loop view cell (probes inside the gateway)
        lab += " probes=on"
    if "|py=" in str(row.get("cell") or ""):  # the interpreter axis: every line names its interpreter
        return f"{lab} {row['shell']} · {row['python']}"
    return f"{lab} {row['shell']}"


def _ok(cells):
    df = cells[cells["status"] == "ok"].copy()
    df["line"] = [line_label(r) for _, r in df.iterrows()]
    return df


def summary(cells, cols: Sequence[str] = TABLE_COLS):
    """Median/min/max over repeats per (line, concurrency): columns `<col>_median/_min/_max`, `n`."""
    import pandas as pd

    df = _ok(cells)
    if not len(df):
        return pd.DataFrame()
    cols = [c for c in cols if c in df.columns]
    g = df.groupby(["line", xcol(cells)])
    parts = {"n": g.size()}
    for c in cols:
        parts[f"{c}_median"] = g[c].median()
        parts[f"{c}_min"] = g[c].min()
        parts[f"{c}_max"] = g[c].max()
    return pd.DataFrame(parts).reset_index()


def peaks(cells):
    """Per line: the concurrency where median throughput peaks, and that throughput."""
    import pandas as pd

    s = summary(cells, ["rps", "lat_p99_us"])
    if not len(s) or "concurrency" not in s.columns:
        return pd.DataFrame(columns=["line", "peak_concurrency", "peak_rps", "rps_at_c1", "p99_at_peak_us"])
    out = []
    for line, g in s.groupby("line"):
        i = g["rps_median"].idxmax()
        c1 = g[g["concurrency"] == g["concurrency"].min()]["rps_median"]
        out.append(
            {
                "line": line,
                "peak_concurrency": int(g.loc[i, "concurrency"]),
                "peak_rps": g.loc[i, "rps_median"],
                "rps_at_c1": float(c1.iloc[0]) if len(c1) else math.nan,
                "p99_at_peak_us": g.loc[i, "lat_p99_us_median"],
            }
        )
    return pd.DataFrame(out)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.{max(digits - 1, 1)}f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def _spread(med, lo, hi) -> str:
    if med is None or (isinstance(med, float) and math.isnan(med)):
        return "–"
    if lo == hi or lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return _fmt(med)
    return f"{_fmt(med)} [{_fmt(lo)}–{_fmt(hi)}]"


def _md_table(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _load(run_dir: Path):
    from harness.results.runs import load_table, open_run

    run = open_run(run_dir)
    tables = {}
    for name in ("cells", "baseline", "capacity", "gil_threads", "gil_entries"):
        try:
            tables[name] = load_table(run_dir, name)
        except FileNotFoundError:
            tables[name] = None
    return run, tables


def _header(meta: dict[str, Any]) -> list[str]:
    from harness.results.meta import describe

    prof = meta.get("profile") or {}
    lines = [f"- machine: {describe(meta)}"]
    if prof:
        sat = prof.get("profile_satisfied")
        lines.append(
            f"- profile: **{prof.get('name')}** — gateway cpus {prof.get('gateway_cpus')}, mock cpus "
            f"{prof.get('mock_cpus')}, load cpus {prof.get('load_cpus')} of {prof.get('available_cpus')}; "
            f"profile_satisfied: **{str(sat).lower()}**"
            + (f" ({'; '.join(prof.get('notes') or [])})" if not sat else "")
        )
    p = meta.get("parameters") or {}
    loop = meta.get("loop", "closed")
    how = (
        (
            f"fixed arrival rate, CO-corrected; sustained = p99 <= {p.get('p99_cap_ms')} ms and errors < "
            f"{100 * (p.get('max_error_share') or 0.01):g}%"
        )
        if loop == "open"
        else "fixed concurrency"
    )
    if meta.get("peers"):
        lines.append("- peers: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["peers"].items())))
    lines.append(
        f"- load: {loop} loop ({how}), {p.get('duration_s')} s cells after "
        f"{p.get('warmup_s')} s warm-up, {p.get('repeat')} repeat(s); upstream {p.get('upstream')}; "
        f"server {p.get('server')}"
    )
    for w, pl in sorted(((int(k), v) for k, v in (p.get("worker_placement") or {}).items())):
        if w > 1:
            lines.append(
                f"- workers {w}: cpus {pl['cpus']}"
                + ("" if pl["satisfied"] else " — **clamped**: " + "; ".join(pl["notes"]))
            )
    if meta.get("partial"):
        lines.append(
            "- **partial run** (interrupted or failed before the end): tables hold the cells that finished"
        )
    return lines


def write_markdown(run_dir: Path, run, t) -> Path:
    meta = run.meta
    cells = t["cells"]
    md = [f"# Sweep report — {run.name}", ""] + _header(meta) + [""]
    md += ["Measurement labels: " + "; ".join(f"{k}: **{v}**" for k, v in schema.LABELS.items()), ""]
    cap = t.get("capacity")
    if cap is not None and len(cap):
        md += ["## Load generator capacity vs the mock", ""]
        md.append(
            _md_table(
                [
                    [str(r.concurrency), r.status, _fmt(r.rps), _fmt(r.max_gateway_rps), _fmt(r.headroom)]
                    for r in cap.itertuples()
                ],
                ["c", "status", "load→mock req/s", "max gateway req/s", "headroom (×)"],
            )
        )
        md.append("")
    base = t.get("baseline")
    if base is not None and len(base):
        from harness.results.stats import summarize

        md += ["## Direct baseline (load → mock)", ""]
        rows = []
        bx = (
            "rate"
            if "loop" in base.columns and len(base) and (base["loop"] == "open").all()
            else "concurrency"
        )
        route = base["route"].replace("", "chat")  # runs from before routes were recorded: chat
        for (r, c), g in base[base["status"] == "ok"].groupby([route, bx]):
            s = {k: summarize(g[k]) for k in ("rps", "lat_p50_us", "lat_p99_us")}
            rows.append([r, _fmt(c)] + [_spread(s[k]["median"], s[k]["min"], s[k]["max"]) for k in s])
        md.append(_md_table(rows, ["route", "rate/s" if bx == "rate" else "c", "req/s", "p50 µs", "p99 µs"]))
        md.append("")
    if cells is None or not len(cells):
        md.append("No cells recorded.")
    else:
        pk = peaks(cells)
        if len(pk):
            md += ["## Where throughput peaks", ""]
            md.append(
                _md_table(
                    [
                        [
                            r.line,
                            str(r.peak_concurrency),
                            _fmt(r.peak_rps),
                            _fmt(r.rps_at_c1),
                            _fmt(r.peak_rps / r.rps_at_c1 if r.rps_at_c1 else math.nan),
                            _fmt(r.p99_at_peak_us),
                        ]
                        for r in pk.itertuples()
                    ],
                    [
                        "line",
                        "peak c",
                        "peak req/s",
                        "req/s at lowest c",
                        "peak / lowest-c",
                        "p99 at peak µs",
                    ],
                )
            )
            md.append("")
        s = summary(cells)
        md += ["## Cells (median [min–max] over repeats)", ""]
        titles = {
            "rps": "req/s",
            "lat_p50_us": "p50 µs",
            "lat_p99_us": "p99 µs",
            "ovh_p50_us": "ovh p50 µs",
            "ovh_p99_us": "ovh p99 µs",
            "cpu_cores": "CPU cores",
            "rss_peak_mb": "RSS MiB",
            "gil_wait_p99_us": "GIL wait p99 µs (exact)",
            "loop_lag_p99_us": "loop lag p99 µs (exact)",
            "gil_held_share": "GIL held (sampled)",
            "gil_main_share": "GIL main thread (sampled)",
        }
        cols = [c for c in TABLE_COLS if f"{c}_median" in s.columns]
        x = xcol(cells)
        if x == "rate":
            from harness.results.stats import sustainable_rates

            p = meta.get("parameters") or {}
            sr = sustainable_rates(
                cells, 1000.0 * (p.get("p99_cap_ms") or 50.0), p.get("max_error_share") or 0.01
            )
            md += ["## Sustainable open-loop rate", ""]
            md.append(
                _md_table(
                    [
                        [r.mode, _fmt(r.sustainable_rate), _fmt(r.first_failed_rate), str(r.rates_tried)]
                        for r in sr.itertuples()
                    ],
                    ["target", "sustainable req/s", "first failed req/s", "rates tried"],
                )
            )
            md.append("")
        nogil = set(no_gil_lines(_ok(cells)))
        for line, g in s.groupby("line"):
            md += [f"### {line}", ""]
            rows = [
                [_fmt(r[x]) if x == "rate" else str(r[x]), str(r["n"])]
                + [
                    "no GIL"
                    if line in nogil and c in NO_GIL_COLS
                    else _spread(r[f"{c}_median"], r[f"{c}_min"], r[f"{c}_max"])
                    for c in cols
                ]
                for _, r in g.iterrows()
            ]
            md.append(
                _md_table(rows, ["rate/s" if x == "rate" else "c", "n"] + [titles.get(c, c) for c in cols])
            )
            md.append("")
        md += _gil_views_md(cells)
        ent = t.get("gil_entries")
        if ent is not None and len(ent):
            md += ["## Rust entry points (exact GIL counters, summed over the sweep)", ""]
            agg = ent.groupby(["mode", "entry"])[
                ["calls", "hold_us", "detached_us", "reacquire_wait_us"]
            ].sum()
            agg["max_reacquire_wait_us"] = ent.groupby(["mode", "entry"])["max_reacquire_wait_us"].max()
            rows = [
                [
                    m,
                    e,
                    _fmt(float(r.calls)),
                    _fmt(r.hold_us / r.calls if r.calls else math.nan),
                    _fmt(r.detached_us / r.calls if r.calls else math.nan),
                    _fmt(r.reacquire_wait_us / r.calls if r.calls else math.nan),
                    _fmt(r.max_reacquire_wait_us),
                ]
                for (m, e), r in agg.iterrows()
            ]
            md.append(
                _md_table(
                    rows,
                    [
                        "mode",
                        "entry",
                        "calls",
                        "hold µs/call",
                        "detached µs/call",
                        "re-acquire wait µs/call",
                        "max wait µs",
                    ],
                )
            )
            md.append("")
        md += _flamegraphs_md(cells)
        bad = cells[cells["status"] != "ok"]
        if len(bad):
            md += ["## Failed or interrupted cells", ""]
            md.append(
                _md_table(
                    [[r.cell, str(r.repeat), r.status, str(r.error)[:200]] for r in bad.itertuples()],
                    ["cell", "repeat", "status", "error"],
                )
            )
            md.append("")
        miss = sorted(
            {m.strip() for v in cells["probes_missing"].fillna("") for m in str(v).split(";") if m.strip()}
        )
        if miss:
            md += ["## Probes that could not run", ""] + [f"- {m}" for m in miss] + [""]
    p = run_dir / "report.md"
    p.write_text("\n".join(md) + "\n")
    return p


def _flamegraphs_md(cells) -> list[str]:
    """The flamegraphs of the run (`--flamegraph`), by path in the run folder, with their labels."""
    rows = []
    for r in cells.to_dict("records"):
        for tool, svg, label in (
            ("py-spy", "flamegraph_svg", "flamegraph_label"),
            ("perf", "perf_flamegraph_svg", "perf_flamegraph_label"),
        ):
            if r.get(svg):
                how = str(r.get(label) or "")[:300]
                rows.append([r["cell"].replace("|", "\\|"), str(r["repeat"]), tool, f"`{r[svg]}`", how])
    if not rows:
        return []
    return ["## Flamegraphs (sampled)", "", _md_table(rows, ["cell", "repeat", "tool", "SVG", "how"]), ""]


GIL_VIEW_COLS = [
    ("rps", "req/s"),
    ("cpu_cores", "CPU cores"),
    ("gil_held_share", "1: held (sampled)"),
    ("gil_main_share", "1: loop thread (sampled)"),
    ("gil_other_share", "1: other threads (sampled)"),
    ("native_wait_share", "2: Rust re-acquire wait, share of window (exact)"),
    ("gil_wait_p50_us", "3: acquire wait p50 µs (exact)"),
    ("gil_wait_p99_us", "3: p99 µs"),
    ("loop_lag_p50_us", "4: loop lag p50 µs (exact)"),
    ("loop_lag_p99_us", "4: p99 µs"),
]


def _gil_views_md(cells) -> list[str]:
    """The four GIL views side by side per line and concurrency (medians over repeats); views
    1-3 of a line that ran without a GIL read "no GIL"."""
    from gateway.probes import NO_GIL

    df = _ok(cells)
    if not len(df):
        return []
    df = df.copy()
    df["native_wait_share"] = df["native_wait_s"] / df["duration_s"]
    nogil = df["probes_missing"].fillna("").str.contains(NO_GIL, regex=False)
    cols = [(c, h) for c, h in GIL_VIEW_COLS if c in df.columns and (df[c].notna().any() or nogil.any())]
    out = [
        "## The four GIL views against concurrency (medians over repeats)",
        "",
        "1 = py-spy ownership (sampled), 2 = Rust entry-point counters (exact), "
        "3 = probe-thread acquisition latency (exact; idle calibration p50 "
        f"{_fmt(float(df['gil_wait_cal_p50_us'].median()))} µs), 4 = event-loop lag (exact).",
        "",
    ]
    for line, g in df.groupby("line"):
        med = g.groupby("concurrency")[[c for c, _ in cols]].median()
        # a free-threaded interpreter with the GIL off: its GIL views say so, never zeros or gaps
        no_gil = g["probes_missing"].fillna("").str.contains(NO_GIL, regex=False).all()

        def cell(k, r):
            return "no GIL" if no_gil and k in NO_GIL_COLS else _fmt(float(r[k]))

        out += [f"### {line}", ""]
        out.append(
            _md_table(
                [[str(c)] + [cell(k, r) for k, _ in cols] for c, r in med.iterrows()],
                ["c"] + [h for _, h in cols],
            )
        )
        out.append("")
    return out


# The columns of GIL views 1-3, which have nothing to show without a GIL (view 4, loop lag, has).
NO_GIL_COLS = {
    "gil_held_share",
    "gil_main_share",
    "gil_other_share",
    "native_wait_share",
    "native_wait_s",
    "gil_wait_p50_us",
    "gil_wait_p99_us",
}


def no_gil_lines(df) -> list[str]:
    """The lines (of `_ok` cells) that ran without a GIL: every cell of theirs says so."""
    from gateway.probes import NO_GIL

    if "probes_missing" not in df.columns:  # a table without probe notes has no no-GIL line
        return []
    flag = df["probes_missing"].fillna("").str.contains(NO_GIL, regex=False)
    return sorted(line for line, f in flag.groupby(df["line"]) if f.all())


# how each figure's values were taken (schema.LABELS); the rest are exact counts and timings
_SAMPLED = {"gil_held_share": "sampled (py-spy)", "rss_peak_mb": "sampled (20 Hz)"}


def figures(
    cells, cols: Iterable[tuple[str, str, str]] = FIGURES, meta: dict | None = None
) -> list[tuple[str, Any]]:
    """One plotly figure per metric: value against concurrency (or arrival rate), one line per
    configuration. Each names its load, whether its values are exact or sampled and the repeats
    (subtitle), has ticks at the measured x values, and with `meta` the machine and build
    (footer): what harness.results.figcheck asks of every figure."""
    import plotly.graph_objects as go

    df = _ok(cells)
    out = []
    x = xcol(cells)
    xs = sorted(float(v) for v in df[x].dropna().unique()) if x in df.columns else []
    repeats = int(df.groupby(["line", x]).size().max()) if len(df) else 0
    clamped = "clamped" in df.columns and bool(df["clamped"].any())
    for col, title, unit in cols:
        if col not in df.columns or df[col].isna().all():
            continue
        fig = go.Figure()
        for line, g in df.groupby("line"):
            agg = g.groupby(x)[col].agg(["median", "min", "max"]).reset_index()
            fig.add_trace(
                go.Scatter(
                    x=agg[x],
                    y=agg["median"],
                    mode="lines+markers",
                    name=line,
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=agg["max"] - agg["median"],
                        arrayminus=agg["median"] - agg["min"],
                        thickness=1,
                    ),
                )
            )
        how = [
            "open loop (CO-corrected)" if x == "rate" else "closed loop",
            _SAMPLED.get(col, "sampled" if "sampled" in title else "exact"),
            f"median of {repeats} repeat(s), bars min–max",
        ]
        if clamped:
            how.insert(0, "CLAMPED: the machine is smaller than the profile (clamp_notes)")
        nogil = no_gil_lines(df) if col in NO_GIL_COLS else []
        if nogil:  # not zeros, not a silent gap: those lines had no GIL to measure
            how.append("no GIL: " + ", ".join(nogil))
        fig.update_layout(
            title=dict(text=title, subtitle=dict(text="; ".join(how))),
            xaxis=dict(
                title="arrival rate, req/s (open loop)" if x == "rate" else "concurrency c (closed loop)",
                tickvals=xs if len(xs) <= 12 else None,  # ticks at the measured values
            ),
            yaxis_title=unit,
            template="plotly_white",
            width=900,
            height=440,  # the static image's size too: what the check measures is what is written
            margin=dict(l=60, r=20, t=80, b=50),
        )
        if meta is not None:
            _footer(fig, meta)
        out.append((col, fig))
    return out


def _footer(fig, meta: dict) -> None:
    """The machine and build under the plot (harness.results.meta.describe's first fields)."""
    sha = (meta.get("git_sha") or "nogit")[:10] + ("+dirty" if meta.get("git_dirty") else "")
    text = (
        f"{meta.get('cpu_model') or 'unknown CPU'} · {meta.get('cores_used')}/{meta.get('cores_available')} "
        f"cores · {meta.get('build_profile') or 'no'} build · {sha}"
    )
    fig.update_layout(margin_b=fig.layout.margin.b + 22)
    fig.add_annotation(
        text=text,
        xref="paper",
        yref="paper",
        x=0,
        y=0,
        xanchor="left",
        yanchor="top",
        yshift=-(fig.layout.margin.b - 22),
        showarrow=False,
        font=dict(size=10, color="#666"),
    )


def write_html(run_dir: Path, run, t, images: bool = True) -> tuple[Path, list[str], list[str]]:
    import plotly.io as pio

    meta = run.meta
    figs = figures(t["cells"], meta=meta) if t["cells"] is not None and len(t["cells"]) else []
    notes: list[str] = []
    body = [f"<h1>Sweep report — {run.name}</h1>", "<ul>"]
    body += [f"<li>{_html_escape(line[2:])}</li>" for line in _header(meta)]
    body += [
        "<li>labels: " + "; ".join(f"{k}: <b>{v}</b>" for k, v in schema.LABELS.items()) + "</li>",
        "</ul>",
    ]
    first = True
    for _, fig in figs:
        body.append(pio.to_html(fig, full_html=False, include_plotlyjs="cdn" if first else False))
        first = False
    md = run_dir / "report.md"
    if md.exists():
        body.append(
            "<h2>Tables</h2><pre style='white-space:pre-wrap'>" + _html_escape(md.read_text()) + "</pre>"
        )
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + _html_escape(run.name)
        + "</title></head><body style='font-family:sans-serif;max-width:1100px;margin:auto'>"
        + "\n".join(body)
        + "</body></html>"
    )
    p = run_dir / "report.html"
    p.write_text(html)
    imgs: list[str] = []
    if images and figs:
        outdir = run_dir / "figures"
        outdir.mkdir(exist_ok=True)
        paths = [str(outdir / f"{col}.png") for col, _ in figs]
        try:
            # one browser session for every figure (kaleido >= 1); one call per figure is ~4 s each
            pio.write_images(fig=[f for _, f in figs], file=paths, width=900, height=440)
            imgs = paths
        except Exception as e:  # noqa: BLE001 - older plotly/kaleido: one by one, SVG as the fallback
            try:
                for (_col, fig), path in zip(figs, paths):
                    fig.write_image(path, width=900, height=440)
                    imgs.append(path)
            except Exception:  # noqa: BLE001
                notes.append(
                    f"static images not written ({type(e).__name__}: {e}); report.html has the figures"
                )
    return p, imgs, notes


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_report(run_dir, formats: Sequence[str] = ("md", "html"), images: bool = True) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run, t = _load(run_dir)
    if t["cells"] is None:
        raise FileNotFoundError(f"{run_dir} has no cells table: not a sweep run")
    out: dict[str, Any] = {"md": None, "html": None, "images": [], "notes": []}
    # the HTML embeds the markdown tables, so md is always written first
    out["md"] = str(write_markdown(run_dir, run, t))
    if "html" in formats:
        p, imgs, notes = write_html(run_dir, run, t, images=images)
        out.update(html=str(p), images=imgs, notes=notes)
    run.update_meta(
        report={
            "md": "report.md",
            "html": "report.html" if out["html"] else None,
            "images": [str(Path(i).relative_to(run_dir)) for i in out["images"]],
        }
    )
    return out
