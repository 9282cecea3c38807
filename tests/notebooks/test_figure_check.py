"""The figure check (lab_ext/figcheck.py) in headless Chromium: it fails on the defects the
notebooks' exports had (rebuilt here as the notebooks built them before their fixes), passes a
figure a post could publish, and stops an export that holds a broken figure."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from harness.results.figcheck import FigureCheckError, check_figures
from lab_ext.export import BlogExport, figure_stamp, stamped

pytestmark = pytest.mark.browser

META = {
    "cpu_model": "Test CPU @ 2.0GHz",
    "cores_used": 2,
    "cores_available": 2,
    "build_profile": "release",
    "git_sha": "0123456789abcdef",
    "git_dirty": False,
}
STAMP = figure_stamp(META, "ci")
MEASURED = "closed loop, exact (/proc), median of 3 repeats"
# The clamping note notebook 09 put under every title on a 2-core machine, cut at 220 characters
CLAMP = (
    "CLAMPED on this machine: profile ci-2c: gateway cpus [0] share the machine's 2 cpus with the "
    "mock and the load generator; workers 2: 2 worker(s) need 2 gateway cpus, the profile has 1; "
    "worker k is pinned to cpu k mod 1"
)


def p95_vs_rate_before():
    """08_peers' p95 figure as the notebook built it: `add_hline` with an annotation on a log y
    axis. plotly places the line at y=50 but the annotation at 10^50 (annotations on a log axis
    are in log10 units), and autorange stretches the axis to hold the label: 1 .. 10^54."""
    fig = go.Figure()
    for t, ys in {"py+rs": [1.3, 2.1, 9.0], "noveum": [0.9, 1.0, 1.4], "portkey": [2.2, 3.5, 48.0]}.items():
        fig.add_scatter(x=[50, 200, 800], y=ys, name=t, mode="lines+markers")
    fig.add_hline(y=50, line_dash="dot", annotation_text="50 ms")
    fig.update_layout(
        title="p95 against open-loop arrival rate (CO-corrected)",
        xaxis_title="req/s",
        xaxis_type="log",
        yaxis_title="p95 ms",
        yaxis_type="log",
        template="plotly_white",
        height=420,
    )
    return fig


def log_concurrency_before(cs):
    """03/07/09: throughput against c on a log x axis with plotly's own ticks, which label
    every minor tick on a short log range ('9 1 2 3 4 5 6 7 8 9 10 2')."""
    fig = go.Figure(go.Scatter(x=cs, y=[400 * c**0.5 for c in cs], mode="lines+markers", name="py"))
    fig.update_xaxes(title_text="concurrency c", type="log")
    fig.update_yaxes(title_text="req/s")
    fig.update_layout(title="req/s against c", height=430)
    return fig


def curves_before():
    """09_scale_out's curves: the clamping note cut at 220 characters as a second title line,
    wider than the canvas."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["py", "rs-core"], shared_yaxes=True)
    for i in (1, 2):
        for w in (1, 2):
            fig.add_scatter(x=[1, 16], y=[500.0 * w * i, 1900.0 * w * i], name=f"{w} worker(s)", row=1, col=i)
        fig.update_xaxes(title_text="concurrency c", type="log", row=1, col=i)
    fig.update_yaxes(title_text="req/s", row=1, col=1)
    fig.update_layout(
        height=430, title=f"req/s against c, one line per worker count<br><sup>{CLAMP[:220]}</sup>"
    )
    return fig


def publishable():
    """What the fixed notebooks draw: ticks at the measured c, units, what was measured, the
    machine and build (the export's footer)."""
    cs = [1, 4, 16]
    fig = go.Figure()
    for name, k in (("py", 1.0), ("rs-core", 1.6)):
        fig.add_scatter(
            x=cs,
            y=[k * 400 * c**0.5 for c in cs],
            error_y=dict(type="data", array=[20, 30, 40]),
            name=name,
            mode="lines+markers",
        )
    fig.update_xaxes(title_text="concurrency c", type="log", tickvals=cs, ticktext=[str(c) for c in cs])
    fig.update_yaxes(title_text="req/s")
    fig.update_layout(title=dict(text="Throughput against c", subtitle=dict(text=MEASURED)), height=430)
    return stamped(fig, STAMP, 1100, 430)


@pytest.fixture(scope="module")
def findings():
    figs = {
        "p95_vs_rate": stamped(p95_vs_rate_before(), STAMP, 1100, 420),
        "knee_03": log_concurrency_before([1, 4, 16]),
        "ladder_07": log_concurrency_before([1, 16, 50]),
        "curves_09": stamped(curves_before(), STAMP, 1100, 430),
        "publishable": publishable(),
        "bare": go.Figure(go.Scatter(x=[0.5, 1.5, 2.5], y=[3, 1, 2])),
    }
    out: dict[str, list] = {name: [] for name in figs}
    for f in check_figures(figs):
        out[f.figure].append(f)
    return out


def _rules(fs):
    return {f.rule for f in fs}


def test_the_cap_annotation_that_stretched_08s_log_axis_fails_the_range_rule(findings):
    rng = [f for f in findings["p95_vs_rate"] if f.rule == "range"]
    assert rng and "yaxis" in rng[0].message, findings["p95_vs_rate"]
    # ... and the same figure with the cap's label placed in log10 units passes that rule
    fig = p95_vs_rate_before()
    fig.layout.annotations = ()
    fig.add_annotation(text="50 ms", x=1, xref="x domain", y=math.log10(50), yref="y", showarrow=False)
    assert "range" not in _rules(check_figures({"fixed": fig}))


@pytest.mark.parametrize("name", ["knee_03", "ladder_07"])
def test_minor_ticks_on_a_log_concurrency_axis_fail_the_ticks_rule(findings, name):
    ticks = [f for f in findings[name] if f.rule == "ticks"]
    assert ticks and "xaxis" in ticks[0].message, findings[name]


def test_09s_clamping_subtitle_runs_off_the_canvas(findings):
    fs = findings["curves_09"]
    assert any(f.rule == "canvas" and f.message.startswith("title") for f in fs), fs
    assert any(f.rule == "ticks" for f in fs), fs  # and its c axes had the minor ticks too


def test_a_publishable_figure_passes(findings):
    assert findings["publishable"] == []


def test_a_figure_without_context_names_every_missing_piece(findings):
    rules = {f.message for f in findings["bare"]}
    assert _rules(findings["bare"]) >= {"units", "measured", "machine"}, rules
    assert any("exact or sampled" in m for m in rules)
    assert any("repeats" in m for m in rules)
    assert any("open or closed loop" in m for m in rules)


def test_the_export_refuses_a_broken_figure_and_writes_nothing(tmp_path):
    blog = BlogExport(tmp_path, profile="ci", meta=META)
    blog.figure("p95_vs_rate", p95_vs_rate_before())
    with pytest.raises(FigureCheckError) as e:
        blog.write()
    assert any(f.rule == "range" for f in e.value.findings)
    assert not (tmp_path / "blog").exists()
