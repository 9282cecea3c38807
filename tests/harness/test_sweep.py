"""The sweep harness end to end, on the real gateway, mock and load generator: a tiny sweep
(two modes, c in {1, 4}, short cells) produces every column, throughput cells without probes
and GIL view cells with figures or an explicit reason, a report, and leaves no process behind; `compare` of a run with itself flags
nothing, and one repeat never flags (not even an injected slowdown); a
failing configuration and an interrupted sweep leave consistent run folders."""

from __future__ import annotations

import json

import psutil
import pytest

from harness.cli import main as cli_main
from harness.commands.compare import compare_runs
from harness.infra.profiles import resolve
from harness.infra.sweep import run_sweep
from harness.results import schema

pytestmark = pytest.mark.slow

TINY = dict(
    modes=("py", "py+rs"),
    concurrency=(1, 4),
    duration_s=1.5,
    warmup_s=0.3,
    repeat=1,
    progress=False,
    report_images=False,
)


def _children() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    before = {p.pid for p in _children()}
    base = run_sweep(profile="xeon-4c", out=out, name="tiny", **TINY)
    slow = run_sweep(
        profile="xeon-4c",
        out=out,
        name="slow",
        gil=False,
        capacity=False,
        report=False,
        env={"GATEWAYLAB_INJECT_DELAY_US": "3000"},
        **TINY,
    )
    leftovers = [p for p in _children() if p.pid not in before]
    return {"base": base, "slow": slow, "leftovers": leftovers}


def test_tiny_sweep_has_every_column_and_row(runs):
    r = runs["base"]
    t = r.table
    assert list(t.columns) == list(schema.CELLS)
    assert schema.validate("cells", t) == []
    assert len(t) == 8  # a throughput cell and a view cell (gil=True) per mode and c
    assert sorted(set(t["mode"])) == ["py", "py+rs"] and sorted(set(t["concurrency"])) == [1, 4]
    assert sorted(t["probes"]) == ["off"] * 4 + ["on"] * 4
    assert (t["status"] == "ok").all(), t[["cell", "status", "error"]].to_string()
    for col in (
        "rps",
        "lat_p50_us",
        "lat_p99_us",
        "ovh_p50_us",
        "ovh_p99_us",
        "base_p50_us",
        "cpu_cores",
        "rss_peak_mb",
        "requests",
    ):
        assert t[col].notna().all() and (t[col].abs() > 0).all(), col
    assert (t["lat_p99_us"] >= t["lat_p50_us"]).all()
    assert len(r.baseline) == 2 and (r.baseline["status"] == "ok").all()
    assert len(r.capacity) == 1 and r.capacity["headroom"].iloc[0] > 0
    assert not r.partial and r.meta["partial"] is False


def test_every_gil_view_has_figures(runs):
    """All four views run in the view cells (py-spy can attach on this machine: notebook 04
    profiles every cell), so a view that comes back as a "missing" reason is a broken probe,
    not an acceptable outcome; the throughput cells run none of them."""
    t = runs["base"].table
    tput = t[t["probes"] == "off"]
    assert tput[["gil_wait_count", "loop_lag_p99_us", "pyspy_samples", "native_calls"]].isna().all().all()
    t = t[t["probes"] == "on"]
    views = {
        "gil_wait": ["gil_wait_p50_us", "gil_wait_p99_us", "gil_wait_count"],
        "loop_lag": ["loop_lag_p50_us", "loop_lag_p99_us"],
        "gil_ownership": ["gil_held_share", "gil_main_share", "pyspy_samples"],
        "native_gil": ["native_calls", "native_hold_s"],
    }
    for _, row in t.iterrows():
        for view, cols in views.items():
            missing = [c for c in cols if row[c] != row[c]]  # NaN
            assert not missing, (row["cell"], view, missing, row["probes_missing"])
        assert row["probes_missing"] == "", (row["cell"], row["probes_missing"])
        assert row["gil_wait_count"] > 0 and row["loop_lag_p99_us"] > 0 and row["pyspy_samples"] > 0
        assert 0 <= row["gil_held_share"] <= 1
    # the Rust twins' entry points are counted exactly in py+rs mode, and never in py
    rs, py = t[t["mode"] == "py+rs"], t[t["mode"] == "py"]
    assert (rs["native_calls"] > 0).all() and (rs["native_hold_s"] > 0).all()
    assert (py["native_calls"] == 0).all(), py[["cell", "native_calls"]]
    ent = runs["base"].dir / "gil_entries.parquet"
    assert ent.exists()


def test_report_and_clamping_recorded(runs):
    r = runs["base"]
    md = (r.dir / "report.md").read_text()
    html = (r.dir / "report.html").read_text()
    assert "Where throughput peaks" in md and "py+rs asgi" in md and "profile_satisfied" in md
    assert "closed loop" in md and "sampled" in md and "exact" in md
    assert "plotly" in html.lower()
    want = resolve("xeon-4c")
    meta = r.meta
    assert meta["profile_satisfied"] is want.profile_satisfied
    assert meta["profile"]["gateway_cpus"] == want.gateway_cpus
    assert meta["cores_used"] == len(set(want.gateway_cpus) | set(want.mock_cpus) | set(want.load_cpus))
    # the report states the verdict in its own words, with the reasons when clamped
    assert f"profile_satisfied: **{str(want.profile_satisfied).lower()}**" in md
    if not want.profile_satisfied:
        assert all(note in md for note in want.notes), want.notes


def test_no_leftover_processes(runs):
    assert runs["leftovers"] == []


def test_compare_needs_repeats_before_it_flags(runs, capsys):
    """One repeat per cell cannot tell a change from noise: compare flags nothing, even against
    the injected slowdown, and says why per cell (tests/peers/test_compare_aa.py has the
    3-repeat A/A and A/B checks)."""
    a, slow = runs["base"].dir, runs["slow"].dir
    verdicts, _ = compare_runs(a, a)
    assert [v.metric for v in verdicts if v.flagged] == []
    verdicts, per_cell = compare_runs(a, slow)
    by = {v.metric: v for v in verdicts}
    # a lower bound that follows from the injection: every task of the slow gateway waits 3 ms
    slow_t = runs["slow"].table
    assert (slow_t["lat_p50_us"] >= 3000).all(), slow_t[["cell", "lat_p50_us"]]
    assert by["rps"].verdict == "n/a" and not any(v.flagged for v in verdicts)
    assert set(per_cell["flag"]) == {"n/a: <3 repeats"}
    assert by["rps"].cells == 0
    assert cli_main(["compare", str(a), str(slow), "--fail-on-regression"]) == 0
    assert "0 metric(s) flagged" in capsys.readouterr().out


def test_report_command_rewrites_markdown(runs, capsys):
    d = runs["slow"].dir
    assert not (d / "report.md").exists()
    assert cli_main(["report", str(d), "--format", "md"]) == 0
    assert (d / "report.md").exists() and "md:" in capsys.readouterr().out


def test_failed_config_is_recorded_and_the_sweep_goes_on(tmp_path):
    r = run_sweep(
        modes=("py",),
        switches=["mmr=python"],
        shells=("asgi", "no-such-shell"),
        concurrency=(1,),
        duration_s=1.0,
        warmup_s=0,
        repeat=1,
        gil=False,
        capacity=False,
        progress=False,
        out=tmp_path,
        report_images=False,
    )
    t = r.table.set_index("shell")
    assert t.loc["asgi", "status"] == "ok" and t.loc["asgi", "switches"] == "mmr=python"
    assert t.loc["no-such-shell", "status"] == "failed"
    assert "gateway did not start" in t.loc["no-such-shell", "error"]
    assert r.meta["cells_failed"] == 1 and r.meta["partial"] is False
    assert "Failed or interrupted cells" in (r.dir / "report.md").read_text()


def test_interrupted_sweep_is_a_consistent_partial_run(tmp_path):
    seen = []

    def on_cell(row):
        seen.append(row)
        raise KeyboardInterrupt  # what Ctrl-C does mid-sweep

    before = {p.pid for p in _children()}
    r = run_sweep(
        modes=("py",),
        concurrency=(1, 2),
        duration_s=1.0,
        warmup_s=0,
        repeat=1,
        gil=False,
        capacity=False,
        progress=False,
        out=tmp_path,
        on_cell=on_cell,
        report_images=False,
    )
    assert r.partial is True
    meta = json.loads((r.dir / "meta.json").read_text())
    assert meta["partial"] is True and meta["interrupted"] is True
    assert len(seen) == 1 and len(r.table) == 1 and r.table["status"].iloc[0] == "ok"
    assert [p for p in _children() if p.pid not in before] == []


def test_flamegraph_on_request(tmp_path):
    r = run_sweep(
        modes=("py",),
        concurrency=(2,),
        duration_s=1.0,
        warmup_s=0,
        repeat=1,
        gil=False,
        capacity=False,
        flamegraph=True,
        progress=False,
        out=tmp_path,
        report_images=False,
    )
    row = r.table.iloc[0]
    assert row["status"] == "ok"
    # py-spy can attach here (notebook 04 depends on it): both files must be written
    assert "flamegraph:" not in row["probes_missing"], row["probes_missing"]
    for col in ("flamegraph_svg", "speedscope_json"):
        assert row[col], (col, row["probes_missing"])
        assert (r.dir / row[col]).stat().st_size > 0
    assert "<svg" in (r.dir / row["flamegraph_svg"]).read_text()[:2000]
    assert "speedscope" in (r.dir / row["speedscope_json"]).read_text()[:200]
