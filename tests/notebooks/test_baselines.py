"""The notebook gates (data/baselines/): the checker names everything when a gate fails, the
committed thresholds are the ones the recorded ci runs give under the documented rule, no
recorded run trips a gate, and every gate fails on the regression it guards against.

The injections here feed a recorded run's metrics through the checker with the guarded
metric degraded the way the regression would degrade it (a model stated beside each one);
tests/notebooks/test_gate_injection.py produces degraded *real* measurements. Nothing
here runs a notebook."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import notebooks as nbs
from harness.work_gates import GATED as WORK_METRICS  # the ratios the work gates read

README = nbs.BASELINE_DIR / "README.md"


def _baseline(dirpath: Path, notebook: str, checks: list[dict]) -> None:
    """A baseline file; a check without a tier is a timing gate (the file states it)."""
    dirpath.mkdir(parents=True, exist_ok=True)
    checks = [{"tier": "timing", **c} for c in checks]
    (dirpath / f"{notebook}.json").write_text(json.dumps({"notebook": notebook, "checks": checks}))


@pytest.fixture
def synthetic(tmp_path):
    results, baselines = tmp_path / "results", tmp_path / "baselines"
    nbs.write_metrics(
        results / "01_mmr_speedup",
        "01_mmr_speedup",
        "ci",
        {
            "mmr_batch_speedup": nbs.metric(12.5, 11.0, 13.0),
            "mmr_per_leaf_speedup": 3.2,
        },
    )
    nbs.write_metrics(
        results / "02_spawn_cost", "02_spawn_cost", "ci", {"spawn_over_create_task_p50": nbs.metric(1.8)}
    )
    _baseline(
        baselines,
        "01_mmr_speedup",
        [
            {"metric": "mmr_batch_speedup", "op": ">=", "threshold": 5.0},
            {"metric": "mmr_per_leaf_speedup", "op": ">=", "threshold": 1.5},
        ],
    )
    _baseline(
        baselines, "02_spawn_cost", [{"metric": "spawn_over_create_task_p50", "op": "<=", "threshold": 4.0}]
    )
    return results, baselines


def test_checker_passes_when_values_clear_thresholds(synthetic):
    results, baselines = synthetic
    checks = nbs.check_results(results, baselines)
    assert [(c.notebook, c.metric, c.ok) for c in checks] == [
        ("01_mmr_speedup", "mmr_batch_speedup", True),
        ("01_mmr_speedup", "mmr_per_leaf_speedup", True),
        ("02_spawn_cost", "spawn_over_create_task_p50", True),
    ]
    assert nbs.main(["--check-only", str(results), "--baselines", str(baselines)]) == 0


@pytest.mark.parametrize(
    "notebook,metric,op,threshold",
    [
        ("01_mmr_speedup", "mmr_batch_speedup", ">=", 12.6),  # floor just above 12.5
        ("02_spawn_cost", "spawn_over_create_task_p50", "<=", 1.79),  # ceiling just below 1.8
    ],
)
def test_a_failing_gate_names_everything(synthetic, capsys, notebook, metric, op, threshold):
    results, baselines = synthetic
    data = json.loads((baselines / f"{notebook}.json").read_text())
    for c in data["checks"]:
        if c["metric"] == metric:
            c["threshold"] = threshold
    (baselines / f"{notebook}.json").write_text(json.dumps(data))

    failed = [c for c in nbs.check_results(results, baselines) if not c.ok]
    assert [(c.notebook, c.metric) for c in failed] == [(notebook, metric)]
    assert nbs.main(["--check-only", str(results), "--baselines", str(baselines)]) == 1
    out = capsys.readouterr().out
    fail_lines = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fail_lines) == 1
    line = fail_lines[0]
    value = {"mmr_batch_speedup": "12.5", "spawn_over_create_task_p50": "1.8"}[metric]
    assert notebook in line and metric in line and value in line and f"{op} {threshold:.4g}" in line


def test_missing_metric_or_results_is_a_failure(synthetic):
    results, baselines = synthetic
    _baseline(
        baselines,
        "03_concurrency_knee",
        [{"metric": "pyrs_over_py_throughput_cmax", "op": ">=", "threshold": 0.9}],
    )
    data = json.loads((baselines / "01_mmr_speedup.json").read_text())
    data["checks"].append({"metric": "no_such_metric", "op": ">=", "threshold": 1, "tier": "timing"})
    (baselines / "01_mmr_speedup.json").write_text(json.dumps(data))

    failed = {(c.notebook, c.metric): c for c in nbs.check_results(results, baselines) if not c.ok}
    assert set(failed) == {
        ("01_mmr_speedup", "no_such_metric"),
        ("03_concurrency_knee", "pyrs_over_py_throughput_cmax"),
    }
    assert all(c.value is None for c in failed.values())
    assert "missing" in failed[("01_mmr_speedup", "no_such_metric")].message()


def test_bad_baseline_and_bad_metrics_are_rejected(tmp_path):
    _baseline(tmp_path / "b", "x", [{"metric": "m", "op": "~", "threshold": 1}])
    with pytest.raises(ValueError, match="op"):
        nbs.load_baselines(tmp_path / "b")
    _baseline(tmp_path / "c", "x", [{"metric": "m", "op": ">=", "threshold": 1, "rule": "guess"}])
    with pytest.raises(ValueError, match="rule"):
        nbs.load_baselines(tmp_path / "c")
    for tier in (None, "wall"):  # the tier is stated, and is one of TIERS
        _baseline(tmp_path / f"t{tier}", "x", [{"metric": "m", "op": ">=", "threshold": 1, "tier": tier}])
        with pytest.raises(ValueError, match="tier"):
            nbs.load_baselines(tmp_path / f"t{tier}")
    with pytest.raises(ValueError, match="finite"):
        nbs.write_metrics(tmp_path / "r", "x", "ci", {"m": float("nan")})


@pytest.mark.parametrize(
    "check,values,want",
    [
        # advantage, higher is better: half of the median advantage (median 3 -> 2) beats the noise floor (2.5 * 0.85)
        ({"metric": "m", "op": ">=", "rule": "advantage", "neutral": 1.0}, [2.5, 3.0, 3.5], 2.0),
        # ... unless the noise floor is lower: worst 1.5 * 0.85 = 1.275 < 2.0
        ({"metric": "m", "op": ">=", "rule": "advantage", "neutral": 1.0}, [1.5, 3.0, 3.5], 1.275),
        # lower is better: half of 1 - 0.6 is 0.8; the noise ceiling 0.7 * 1.15 = 0.805 is higher
        ({"metric": "m", "op": "<=", "rule": "advantage", "neutral": 1.0}, [0.5, 0.6, 0.7], 0.805),
        ({"metric": "m", "op": "<=", "rule": "cost"}, [1.1, 1.2], 1.38),
        ({"metric": "m", "op": ">=", "rule": "exact", "threshold": 1.0}, [1.0], 1.0),
    ],
)
def test_derivation_rule(check, values, want):
    assert nbs.derive_threshold(check, values) == pytest.approx(want, abs=1e-3)


# --- the committed gates and the recorded runs ----------------------------------------------

RUNS = nbs.load_recorded_runs()
GATES = [(nb, c) for nb, checks in nbs.load_baselines().items() for c in checks]
GATE_IDS = [f"{nb}:{c['metric']}" for nb, c in GATES]


def test_there_are_enough_recorded_runs():
    """Every gated notebook's thresholds come from at least four recorded ci runs that ran it
    (a recorded run may hold a subset of the notebooks: `--only NB ... --record`)."""
    gated = {nb for nb, _ in GATES}
    assert gated <= set(nbs.NOTEBOOKS)  # a notebook without gates (yet) needs no file here
    for nb in sorted(gated):
        having = [run["file"] for run in RUNS if nb in run["metrics"]]
        assert len(having) >= 4, f"{nb}: thresholds need at least four recorded ci runs of it, have {having}"


@pytest.mark.parametrize("notebook,check", GATES, ids=GATE_IDS)
def test_every_gate_has_its_tier(notebook, check):
    """Each gate says what it measures (harness.notebooks.TIERS): wall-clock ratios are
    `timing` gates, whose trips are confirmed by re-measuring before they fail; the ratios
    harness.work_gates measures (instruction counts) are `work` gates, which fail at once and
    take the advantage rule with a neutral point."""
    from harness import work_gates

    assert check["tier"] in nbs.TIERS
    work = notebook in work_gates.MEASURES and check["metric"] in WORK_METRICS[notebook]
    assert (check["tier"] == "work") == work, f"{notebook}/{check['metric']}: tier {check['tier']}"
    if work:
        assert check["rule"] == "advantage" and isinstance(check["neutral"], float)


@pytest.mark.parametrize("notebook,check", GATES, ids=GATE_IDS)
def test_enough_recorded_values(notebook, check):
    """A timing gate's values come from every recorded run of its notebook that ran the
    notebook (not a `--work-only` run); a work gate needs at least WORK_MIN_RUNS recorded values."""
    values = nbs.recorded_values(RUNS, notebook, check["metric"])
    if check["tier"] == "work":
        assert len(values) >= nbs.WORK_MIN_RUNS, (
            f"{notebook}/{check['metric']}: {len(values)} recorded values"
        )
    else:
        full = [r for r in _runs_of(notebook) if not r.get("work_only")]
        assert len(values) == len(full), (
            f"{notebook}/{check['metric']}: missing from some recorded runs of it"
        )


@pytest.mark.parametrize("notebook,check", GATES, ids=GATE_IDS)
def test_committed_threshold_is_the_one_the_recorded_runs_give(notebook, check):
    """A threshold is derived, not chosen: the rule applied to the recorded runs gives it."""
    assert check.get("why"), f"{notebook}/{check['metric']}: gate not explained"
    values = nbs.recorded_values(RUNS, notebook, check["metric"])
    if check.get("rule") == "exact":
        assert "margin" not in check
        return
    assert check["margin"] == nbs.derive_margin(check, values), "margin not the one the recorded runs give"
    assert check["threshold"] == pytest.approx(nbs.derive_threshold(check, values, check["margin"]), abs=1e-3)
    # the margin is the least that keeps every recorded run clear of the gate derived from the others
    assert nbs.loo_alarms(check, values, check["margin"]) == 0
    step = nbs.WORK_MARGIN_STEP if check["tier"] == "work" else 0.05
    if check["margin"] > nbs._min_margin(check):
        assert nbs.loo_alarms(check, values, round(check["margin"] - step, 3)) > 0


def test_no_recorded_run_trips_a_gate(tmp_path):
    """The in-sample false-alarm count is zero: every recorded run passes every gate."""
    for run in RUNS:
        results = _results_from_run(tmp_path / run["stamp"], run)
        checks = nbs.check_results(results, notebooks=run["metrics"])
        # a --work-only run holds the work metrics only: each run is checked on what it measured
        bad = [c.message() for c in checks if not c.ok and c.metric in run["metrics"][c.notebook]]
        assert not bad, run["file"] + "\n" + "\n".join(bad)


def test_readme_reports_each_gate_and_its_false_alarms():
    text = README.read_text()
    for r in nbs.derive_all():
        row = next((ln for ln in text.splitlines() if ln.startswith("|") and f"`{r['metric']}`" in ln), None)
        assert row, f"{r['metric']} is not in the README's gate table"
        assert f"{r['committed']:.4g}" in row, (r["metric"], r["committed"], row)
        assert f"{r['loo_at_min_margin']}/{r['runs']}" in row, (r["metric"], r["loo_at_min_margin"], row)
        if r["margin"] is not None:
            assert nbs.fmt_margin(r["margin"]) in row, (r["metric"], r["margin"], row)
    assert re.search(r"\b" + str(len(RUNS)) + r" recorded", text), (
        "the README must say how many runs are recorded"
    )


# --- injected regressions: every gate fails on the regression it guards ---------------------


def _results_from_run(root: Path, run: dict, override: dict | None = None) -> Path:
    for nb, metrics in run["metrics"].items():
        m = {k: nbs.metric(v["value"], v.get("min"), v.get("max")) for k, v in metrics.items()}
        m.update((override or {}).get(nb, {}))
        nbs.write_metrics(root / nb, nb, "ci", m)
    return root


def _runs_of(notebook: str) -> list[dict]:
    """The recorded runs that ran `notebook` (a run may hold a subset: `--only ... --record`)."""
    return [r for r in RUNS if notebook in r["metrics"]]


def _latest_with(notebook: str, name: str) -> dict:
    """The latest recorded run that holds `name` (a `--work-only` run holds the work metrics only)."""
    return [r for r in _runs_of(notebook) if name in r["metrics"][notebook]][-1]


def _latest_results(root: Path, notebook: str, override: dict) -> Path:
    """Results of every gated notebook, each metric from the latest recorded run holding it,
    with `override` applied to `notebook`'s metrics."""
    for nb in {n for n, _ in GATES}:
        m = {}
        for run in _runs_of(nb):  # oldest first: later runs overwrite
            m.update(
                {k: nbs.metric(v["value"], v.get("min"), v.get("max")) for k, v in run["metrics"][nb].items()}
            )
        m.update(override if nb == notebook else {})
        nbs.write_metrics(root / nb, nb, "ci", m)
    return root


def _v(run, nb, name):
    return run["metrics"][nb][name]["value"]


# For each gate: the regression it guards against, and what that regression does to the
# metric, given one recorded run (the model is in the lambda and the text).
INJECTIONS = {
    ("01_mmr_speedup", "mmr_per_leaf_speedup"): (
        "the Python MMR twin loaded under the Rust label: Python over Python",
        lambda r: 1.0,
    ),
    ("01_mmr_speedup", "mmr_batch_speedup"): (
        "the Python MMR twin under the Rust label: its append_many is a Python loop",
        lambda r: 1.0,
    ),
    ("01_mmr_speedup", "mmr_batch_over_per_leaf"): (
        "the batch path removed (append_many loops over per-leaf appends): batch runs at the per-leaf speed",
        lambda r: 1.0,
    ),
    ("01_mmr_speedup", "mmr_batch_share_of_bound"): (
        "the Python MMR twin under the Rust label: the share of the bound falls to the Python twin's",
        lambda r: _v(r, "01_mmr_speedup", "mmr_python_share_of_bound"),
    ),
    ("02_spawn_cost", "spawn_over_create_task_p50_py"): (
        "a sleep in the hand-off: work as long again as a create_task done inline, p50 ratio + 1",
        lambda r: _v(r, "02_spawn_cost", "spawn_over_create_task_p50_py") + 1.0,
    ),
    ("02_spawn_cost", "spawn_over_create_task_p50_pyrs"): (
        "a sleep in the hand-off, py+rs",
        lambda r: _v(r, "02_spawn_cost", "spawn_over_create_task_p50_pyrs") + 1.0,
    ),
    ("03_concurrency_knee", "pyrs_over_py_rps_c16"): (
        "every Rust twin swapped for its Python twin while labelled Rust: py+rs is py",
        lambda r: 1.0,
    ),
    ("03_concurrency_knee", "pyrs_over_py_rps_c1"): ("same, at c=1", lambda r: 1.0),
    ("03_concurrency_knee", "py_rps_cmax_over_c1"): (
        "a blocking sleep in a stage that dominates the request: requests are served one at a time",
        lambda r: 1.0,
    ),
    ("04_flamegraphs", "flamegraph_coverage"): (
        "two of the four ci cells without one of their profiles (the perf graphs of rs-core and rs-server)",
        lambda r: 0.5,
    ),
    ("04_flamegraphs", "python_share_pyrs_over_py"): (
        "the Rust twins swapped for their Python twins while labelled Rust: the same share of Python samples",
        lambda r: 1.0,
    ),
    ("05_fast_vs_slow_upstream", "ovh_share_fast_over_slow_py_c2"): (
        "a 50 ms sleep in a stage: the gateway is ~all of the fast latency and half of the slow one -> ~2",
        lambda r: 2.0,
    ),
    ("05_fast_vs_slow_upstream", "ovh_share_fast_over_slow_pyrs_c2"): ("same, py+rs", lambda r: 2.0),
    ("06_component_ablation", "all_rust_over_py_cpu_per_req"): (
        "the Rust twins swapped for their Python twins while labelled Rust: the same CPU per request",
        lambda r: 1.0,
    ),
    ("06_component_ablation", "all_rust_over_py_rps"): ("same: the same throughput", lambda r: 1.0),
    ("07_rust_ladder", "cpu_per_req_py_over_rsserver_c16"): (
        "rs-server serving through a Python pipeline: py's CPU per request",
        lambda r: 1.0,
    ),
    ("07_rust_ladder", "cpu_per_req_py_over_rscore_c16"): (
        "rs-core falling back to the Python pipeline with the Rust twins (py+rs) per request: py over py+rs",
        lambda r: _v(r, "07_rust_ladder", "cpu_per_req_py_over_pyrs_c16"),
    ),
    ("07_rust_ladder", "rss_py_over_rsserver"): (
        "rs-server carrying an interpreter: a Python process's footprint",
        lambda r: 1.0,
    ),
    # work gates: each also fails on a real measurement of its regression where
    # tests/notebooks/test_work_gate_injection.py plants one (named in the README's table)
    ("01_mmr_speedup", "mmr_work_rust_over_python_per_leaf"): (
        "the Python MMR twin loaded under the Rust label: Python over Python",
        lambda r: 1.0,
    ),
    ("01_mmr_speedup", "mmr_work_batch_over_per_leaf"): (
        "the batch path removed (append_many loops over append): per leaf over per leaf",
        lambda r: 1.0,
    ),
    **{
        ("06_component_ablation", f"twin_work_{n}"): (
            "the Python twin loaded under the Rust label: Python over Python",
            lambda r: 1.0,
        )
        for n in ("auth", "waf_short", "waf_4k", "ratelimit", "record", "wal_record")
    },
    ("07_rust_ladder", "work_py_over_pyrs"): (
        "every Rust twin on py+rs swapped for its Python twin under the Rust label: py over py",
        lambda r: 1.0,
    ),
    ("07_rust_ladder", "work_pyrs_over_rscore"): (
        "rs-core running the py+rs pipeline (one FFI call per stage): py+rs over py+rs",
        lambda r: 1.0,
    ),
    ("07_rust_ladder", "work_rscore_over_rsserver"): (
        "rs-server carrying rs-core's Python server: rs-core over rs-core",
        lambda r: 1.0,
    ),
    ("07_rust_ladder", "work_rsserver_stages_over_passthrough"): (
        "four extra WAF scans per prompt (waf-extra:4): 4 x 3.25 k instructions over rs-server@off's 85 k, + 0.153",
        lambda r: _v(r, "07_rust_ladder", "work_rsserver_stages_over_passthrough") + 0.153,
    ),
    ("07_rust_ladder", "work_rsserver_over_passthrough"): (
        "a stage doing a tenth more of the governance work: m + 0.1 (m - 1)",
        lambda r: 1.1 * _v(r, "07_rust_ladder", "work_rsserver_over_passthrough") - 0.1,
    ),
}


# Gates that, at ci size on this loaded shared machine, cannot tell the regression above
# from noise: their noise bound lies beyond the neutral point (data/baselines/README.md,
# "Blind spots"). Each still fails on the severe form of its regression below. If a new
# derivation makes one of them catch its regression, test_blind_spots_are_the_documented_ones
# fails, and this list and the README are updated.
BLIND_SPOTS = {
    ("01_mmr_speedup", "mmr_batch_over_per_leaf"),
    ("03_concurrency_knee", "pyrs_over_py_rps_c16"),
    ("03_concurrency_knee", "pyrs_over_py_rps_c1"),
    ("06_component_ablation", "all_rust_over_py_cpu_per_req"),
    ("06_component_ablation", "all_rust_over_py_rps"),
    ("07_rust_ladder", "cpu_per_req_py_over_rscore_c16"),
}
SEVERE = {
    ("01_mmr_speedup", "mmr_batch_over_per_leaf"): (
        "append_many at half the per-leaf speed (a batch path that copies and converts every payload twice)",
        lambda r: 0.5,
    ),
    ("03_concurrency_knee", "pyrs_over_py_rps_c16"): (
        "a blocking sleep of three times the request's service time in a Rust-labelled stage: py+rs at a quarter of py",
        lambda r: 0.25,
    ),
    ("03_concurrency_knee", "pyrs_over_py_rps_c1"): (
        "a blocking sleep of nine times the service time in a Rust-labelled stage, at c=1: a tenth of py",
        lambda r: 0.1,
    ),
    ("06_component_ablation", "all_rust_over_py_cpu_per_req"): (
        "a busy-wait in a Rust-labelled stage as long as the rest of the request: CPU per request doubled",
        lambda r: 2 * _v(r, "06_component_ablation", "all_rust_over_py_cpu_per_req"),
    ),
    ("06_component_ablation", "all_rust_over_py_rps"): (
        "a blocking sleep of three times the service time in a Rust-labelled stage: a quarter of the throughput",
        lambda r: 0.25 * _v(r, "06_component_ablation", "all_rust_over_py_rps"),
    ),
    ("07_rust_ladder", "cpu_per_req_py_over_rscore_c16"): (
        "rs-core running the all-Python pipeline per request: py's CPU per request",
        lambda r: 1.0,
    ),
}


def test_every_gate_has_an_injection():
    assert set(INJECTIONS) == {(nb, c["metric"]) for nb, c in GATES}
    assert set(SEVERE) == BLIND_SPOTS


def test_blind_spots_are_the_documented_ones():
    blind = {
        (nb, c["metric"])
        for nb, c in GATES
        if nbs.OPS[c["op"]](
            INJECTIONS[(nb, c["metric"])][1](_latest_with(nb, c["metric"])), float(c["threshold"])
        )
    }
    assert blind == BLIND_SPOTS
    text = README.read_text()
    for _nb, name in BLIND_SPOTS:
        assert f"`{name}`" in text.split("### Blind spots", 1)[-1], (
            f"{name}: blind spot not explained in the README"
        )


def _injected_fails(tmp_path, capsys, notebook, check, bad, what):
    name = check["metric"]
    runs = [r for r in _runs_of(notebook) if name in r["metrics"][notebook]]
    results = _latest_results(tmp_path / "results", notebook, {name: nbs.metric(bad)})
    checks = nbs.check_results(results)
    failed = [c for c in checks if not c.ok]
    assert [(c.notebook, c.metric) for c in failed] == [(notebook, name)], (
        what,
        bad,
        [c.message() for c in checks],
    )
    assert nbs.main(["--check-only", str(results)]) == 1
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FAIL"))
    assert notebook in line and name in line and f"{bad:.4g}" in line
    assert f"{check['op']} {check['threshold']:.4g}" in line
    assert "compared with" in line and "recorded ci runs" in line and runs[0]["stamp"] in line


CAUGHT = [(nb, c) for nb, c in GATES if (nb, c["metric"]) not in BLIND_SPOTS]


@pytest.mark.parametrize("notebook,check", CAUGHT, ids=[f"{nb}:{c['metric']}" for nb, c in CAUGHT])
def test_injected_regression_fails_its_gate_and_names_everything(tmp_path, capsys, notebook, check):
    what, model = INJECTIONS[(notebook, check["metric"])]
    _injected_fails(tmp_path, capsys, notebook, check, model(_latest_with(notebook, check["metric"])), what)


BLIND = [(nb, c) for nb, c in GATES if (nb, c["metric"]) in BLIND_SPOTS]


@pytest.mark.parametrize("notebook,check", BLIND, ids=[f"{nb}:{c['metric']}" for nb, c in BLIND])
def test_severe_regression_fails_a_blind_spot_gate(tmp_path, capsys, notebook, check):
    what, model = SEVERE[(notebook, check["metric"])]
    _injected_fails(tmp_path, capsys, notebook, check, model(_latest_with(notebook, check["metric"])), what)


def test_a_run_with_an_injected_regression_is_never_recorded(monkeypatch, capsys):
    """GATEWAYLAB_INJECT (gateway/inject.py) is test-only: --record refuses a run that has it,
    before anything runs, and run metadata names it."""
    from harness.results.meta import collect

    monkeypatch.setenv("GATEWAYLAB_INJECT", "waf-twice")
    assert nbs.main(["--profile", "ci", "--only", "01_mmr_speedup", "--record"]) == 2
    assert "GATEWAYLAB_INJECT" in capsys.readouterr().err
    assert collect()["inject"] == ["waf-twice"]
    monkeypatch.delenv("GATEWAYLAB_INJECT")
    assert "inject" not in collect()
