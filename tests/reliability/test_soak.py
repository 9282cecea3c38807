"""`gatewaylab soak` and its scenarios at a small size: a 20-second steady soak that checks
the tool, one overload step, one chaos step and 1,000 slow connections, on every rung where
it is cheap enough (harness/infra/soak.py)."""

from __future__ import annotations

import json
import os

import pytest

from harness.infra import soak
from tests.reliability.rungs import RUNGS

pytestmark = pytest.mark.slow


def test_steady_soak_writes_a_run_with_its_figures(tmp_path):
    r = soak.run_steady(RUNGS[-1], duration_s=20, rate=80, warmup_s=5, out_root=str(tmp_path), images=False)
    run = r["run_dir"]
    for f in ("samples.parquet", "load_series.parquet", "summary.json", "soak.html", "meta.json"):
        assert os.path.exists(os.path.join(run, f)), f
    assert r["ok"] == r["requests"] > 0 and r["errors"] == {}
    assert isinstance(r["rss_growth"], float) and isinstance(r["p99_drift"], float)
    assert isinstance(r["rss_growth_second_half"], float) and r["rss_mb_halfway"] > 0
    assert r["rss_mb_after_warmup"] > 1 and r["cpu_cores_mean"] > 0  # measured (rs-server runs in ~8 MB)
    assert r["audit_lag_end"] is not None and r["audit_lag_end"] < 1000
    assert r["fds_after_warmup"] > 3 and r["fds_max"] < 4096, r  # counted, and bounded
    with open(os.path.join(run, "summary.json")) as f:
        assert json.load(f)["rate"] == 80
    import pandas as pd

    samples = pd.read_parquet(os.path.join(run, "samples.parquet"))
    assert len(samples) >= 15 and {"t", "rss_mb", "fds", "cpu_cores", "audit_lag"} <= set(samples.columns)


def test_overload_step_recovers_with_bounded_memory():
    r = soak.run_overload(RUNGS[-1], duration_s=5, factor=2.0, recovery_limit_s=45)
    assert r["requests"] > 0
    assert r["recovery_s"] is not None, r
    assert r["rss_peak_mb"] < max(4 * r["rss_mb_before"], 512), r


@pytest.mark.parametrize("mode", RUNGS)
def test_chaos_step_answers_502_504_and_audits_every_answer(mode):
    r = soak.run_chaos(mode, duration_s=5, rate=60)
    assert r["transport_failures"] == {}, r  # a client timeout would be a hang
    assert r["answered"] == r["requests"] > 0
    assert set(r["audited_by_status"]) <= {200, 502, 504}, r
    assert {502, 504} <= set(r["audited_by_status"]), r  # the chaos did happen
    assert r["audited"] == r["answered"], r
    assert r["wal_torn_bytes"] == 0


@pytest.mark.parametrize("mode", RUNGS)
def test_thousand_slow_connections_do_not_stop_good_requests(mode):
    r = soak.run_idle(mode, connections=1000, seconds=3)
    assert r["refused"] == 0
    assert r["good_requests"] > 0 and r["good_ok"] == r["good_requests"], r


def test_peak_scenario_reports_rss_after_each_phase():
    """The tool, not a figure: every phase answered, RSS and fds read after each, the deltas
    computed from them (docs/reliability.md gives the figures at 256 connections)."""
    r = soak.run_peak("py+rs", connections=32, seconds=1.0, rate=100.0)
    assert [p["phase"] for p in r["phases"]] == ["start", *soak.PEAK_PHASES]
    assert r["ok"] == r["requests"] > 0
    assert all(p["rss_mb"] > 0 and p["fds"] > 0 for p in r["phases"])
    rss = [p["rss_mb"] for p in r["phases"]]
    assert r["first_peak_mb"] == round(rss[3] - rss[2], 3)  # phases[3]: the first peak
    assert r["later_peaks_mb"] == round(rss[-1] - rss[3], 3)
    assert r["returned_after_peaks_mb"] >= 0
    with pytest.raises(soak.SoakError, match="above the 8"):
        soak.run_peak("py", connections=4)
    with pytest.raises(soak.SoakError, match="must be positive"):
        soak.run_peak("py", rate=0)
