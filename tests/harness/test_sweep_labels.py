"""Labels that tell the truth, end to end on the real gateway, mock and load generator:
the rate limiter runs in every cell (the gateway's own counters say so), throughput cells
carry no probe inside the gateway and view cells carry them all, two upstreams alternate in one
sweep with a baseline each, a run that reaches its limits gets 429s that fail its cells (and a
notebook metric that needs them is missing with the reason), CPU per request counts successful
answers only, and errors a cell sets out to cause (an injected upstream error rate) leave it ok."""

from __future__ import annotations

import json
import math

import pytest

from harness.infra import targets
from harness.infra.sweep import PROBES_OUTSIDE, run_sweep
from lab_ext.nb import NotMeasured, gated, label_cells, values_at

pytestmark = pytest.mark.slow

SMALL = dict(
    concurrency=(2,),
    duration_s=1.0,
    warmup_s=0.3,
    repeat=1,
    capacity=False,
    report=False,
    progress=False,
    profile="xeon-4c",
)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    out = tmp_path_factory.mktemp("labels")
    return run_sweep(
        modes=("py", "rs-server"),
        gil=True,
        upstreams={"fast": {"latency_ms": 0}, "slow": {"latency_ms": 20}},
        out=out,
        name="labels",
        **SMALL,
    )


def _cpu_per_ok(row) -> float:
    return (row["cpu_user_s"] + row["cpu_sys_s"]) / row["requests"] * 1e6


def test_every_cell_shows_its_claimed_stages_ran_the_limiter_included(labelled):
    t = labelled.table
    assert (t["status"] == "ok").all(), t[["cell", "status", "error"]].to_string()
    for row in t.to_dict("records"):
        runs = json.loads(row["stage_runs"])
        claimed = row["claimed_stages"].split(",")
        assert "ratelimit" in claimed and "audit" in claimed
        # every claimed stage ran once per request: no errors here, so exactly once per answer
        assert {s: runs[s] for s in claimed} == dict.fromkeys(claimed, row["requests"]), row["cell"]
        assert row["stage_check"] == ", ".join(f"{s}={row['requests']}" for s in claimed)
        assert row["gov_auth"] and row["gov_waf"] and row["gov_ratelimit"] and row["gov_ledger"]
        assert row["expected_errors"] == "none" and json.loads(row["errors_by_kind"]) == {}
        assert row["cpu_us_per_req"] == pytest.approx(_cpu_per_ok(row))
    meta = labelled.meta["parameters"]
    assert meta["key_limits"] == {"on": targets.unreachable_limits()}
    cfg = (labelled.dir / "configs").glob("*.yaml")
    assert all(f"rpm: {targets.UNREACHABLE_RPM}" in p.read_text() for p in cfg)


def test_probes_run_in_view_cells_only_and_the_cells_say_so(labelled):
    t = labelled.table
    tput, view = t[t["probes"] == "off"], t[t["probes"] == "on"]
    assert sorted(set(view["mode"])) == ["py"]  # rs-server has no interpreter: no view cells
    assert len(tput) == 4 and len(view) == 2
    assert (tput["probes_ran"] == PROBES_OUTSIDE).all()
    assert tput[["gil_wait_count", "loop_lag_p99_us", "gil_held_share", "native_calls"]].isna().all().all()
    py_tput = tput[tput["mode"] == "py"]
    assert py_tput["probes_missing"].str.contains("off in a throughput cell").all()
    assert view["probes_ran"].str.contains("GIL probe thread every 2 ms").all()
    assert view["probes_ran"].str.contains("py-spy").all()
    assert (view["gil_wait_count"] > 0).all() and (view["loop_lag_p99_us"] > 0).all()
    assert (view["pyspy_samples"] > 0).all()
    assert set(label_cells(t)["label"]) == {
        "py up=fast",
        "py up=fast probes=on",
        "py up=slow",
        "py up=slow probes=on",
        "rs-server up=fast",
        "rs-server up=slow",
    }
    assert "view cells" in " ".join(labelled.meta["parameters"]["probes"])


def test_two_upstreams_alternate_in_one_sweep_with_a_baseline_each(labelled):
    t = labelled.table.sort_values("started_at")
    assert list(t["upstream"])[:4] == ["fast", "fast", "slow", "slow"]  # py (off, on) per upstream
    assert list(t["mode"]) == ["py"] * 4 + ["rs-server"] * 2
    base = labelled.baseline.set_index("upstream")
    assert set(base.index) == {"fast", "slow"} and base.loc["slow", "lat_p50_us"] >= 20_000
    for row in t.to_dict("records"):
        assert row["base_p50_us"] == base.loc[row["upstream"], "lat_p50_us"]
        assert row["ovh_p50_us"] == pytest.approx(row["lat_p50_us"] - row["base_p50_us"])


def test_reached_limits_fail_the_cell_and_the_metric_that_needs_it(tmp_path, monkeypatch):
    # the benchmark config with limits a short run does reach (the default is 10^12/min)
    monkeypatch.setattr(targets, "UNREACHABLE_RPM", 120)
    r = run_sweep(modes=("py",), gil=False, out=tmp_path, name="limited", **{**SMALL, "warmup_s": 0})
    row = r.table.iloc[0]
    assert row["status"] == "failed", row["error"]
    assert "unexpected errors" in row["error"] and "429 x" in row["error"], row["error"]
    kinds = json.loads(row["errors_by_kind"])
    assert kinds["status_4xx"] == row["errors"] > 0
    # CPU per request over the successful answers only, not every finished request
    assert row["requests"] > 0 and row["cpu_us_per_req"] == pytest.approx(_cpu_per_ok(row))
    finished = row["requests"] + row["errors"]
    assert row["cpu_us_per_req"] > (row["cpu_user_s"] + row["cpu_sys_s"]) / finished * 1e6
    # the limiter refused, and the counters say it ran for every request, refused or not
    runs = json.loads(row["stage_runs"])
    assert runs["ratelimit"] == runs["guard"] >= finished and runs["adapter"] == row["requests"]
    # a notebook never reads the cell: the metric is missing, with the reason
    cells = label_cells(r.table)
    with pytest.raises(NotMeasured, match="429"):
        values_at(cells, "py", 2, "rps")
    metrics, missing = {}, {}
    gated(metrics, missing, "py_rps_c2", lambda: values_at(cells, "py", 2, "rps"))
    assert metrics == {} and "unexpected errors" in missing["py_rps_c2"]


def test_errors_the_cell_set_out_to_cause_leave_it_ok(tmp_path):
    r = run_sweep(
        modes=("rs-server",),
        gil=False,
        upstream={"latency_ms": 0, "error_status": 500, "error_rate": 0.2, "seed": 3},
        out=tmp_path,
        name="injected",
        **SMALL,
    )
    row = r.table.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert "500 to 20%" in row["expected_errors"]
    assert 0.05 < row["error_share"] < 0.4 and set(json.loads(row["errors_by_kind"])) == {"status_5xx"}
    runs = json.loads(row["stage_runs"])
    finished = row["requests"] + row["errors"]
    # every request was decided, forwarded and answered (502 for the upstream's 500s), and audited
    assert runs["guard"] == runs["ratelimit"] == runs["forward"] == runs["audit"] == finished
    assert not math.isnan(row["cpu_us_per_req"])


def test_on_unlimited_runs_everything_but_the_limits_and_says_so(tmp_path):
    """`on-unlimited` is `on` with a key without rpm/tpm (how "on" ran before the limiter was
    made to run): labelled as not rate limiting, its config holds no limits, every claimed
    stage ran (the limiter is not claimed: it has no bucket to consult, and its counter stays
    at 0), and `gatewaylab verdicts` pairs it with the `on` cell of the same run."""
    from harness.results import verdicts as V

    res = run_sweep(
        modes=("rs-server",), governance=("on", "on-unlimited"), out=tmp_path, name="unlimited", **SMALL
    )
    t = res.table
    assert (t["status"] == "ok").all(), t[["cell", "status", "error"]].to_string()
    on, un = t[t["governance"] == "on"].iloc[0], t[t["governance"] == "on-unlimited"].iloc[0]
    assert on["gov_ratelimit"] and not un["gov_ratelimit"]
    assert "returns at once" in un["governance_notes"] and "never reached" in on["governance_notes"]
    # the limiter has no bucket to consult: not claimed, and its counter shows it did not run
    assert un["claimed_stages"].split(",") == [x for x in on["claimed_stages"].split(",") if x != "ratelimit"]
    assert json.loads(un["stage_runs"]).get("ratelimit", 0) == 0
    assert json.loads(on["stage_runs"])["ratelimit"] == on["requests"]
    assert res.meta["parameters"]["key_limits"] == {"on": targets.unreachable_limits(), "on-unlimited": {}}
    texts = {p.name: p.read_text() for p in (res.dir / "configs").glob("*.yaml")}
    assert [n for n, x in texts.items() if "rpm" in x] == [n for n in texts if "unlimited" not in n]
    pairs = V.limiter_pairs(V.cell_tables([res.dir]))
    assert len(pairs) == 1 and pairs.iloc[0]["rps_ratio"] > 0
    assert pairs.iloc[0]["gov_ratelimit_on"] and not pairs.iloc[0]["gov_ratelimit_unlimited"]
    assert not pairs.iloc[0]["on_label_holds_unlimited"]  # the old "on" label's claim fails
