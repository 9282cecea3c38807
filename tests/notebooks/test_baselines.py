"""The baseline checker: passes on recorded results, fails loudly when a threshold is
tightened past the measured value. Works on small results folders; never runs notebooks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import notebooks as nbs

RECORDED = Path(__file__).parent / "recorded"


def _baseline(dirpath: Path, notebook: str, checks: list[dict]) -> None:
    dirpath.mkdir(parents=True, exist_ok=True)
    (dirpath / f"{notebook}.json").write_text(json.dumps({"notebook": notebook, "checks": checks}))


@pytest.fixture
def synthetic(tmp_path):
    results, baselines = tmp_path / "results", tmp_path / "baselines"
    nbs.write_metrics(results / "01_mmr_speedup", "01_mmr_speedup", "ci", {
        "mmr_batch_speedup": nbs.metric(12.5, 11.0, 13.0),
        "mmr_per_leaf_speedup": 3.2,
    })
    nbs.write_metrics(results / "02_spawn_cost", "02_spawn_cost", "ci", {"spawn_over_create_task_p50": nbs.metric(1.8)})
    _baseline(baselines, "01_mmr_speedup", [
        {"metric": "mmr_batch_speedup", "op": ">=", "threshold": 5.0},
        {"metric": "mmr_per_leaf_speedup", "op": ">=", "threshold": 1.5},
    ])
    _baseline(baselines, "02_spawn_cost", [{"metric": "spawn_over_create_task_p50", "op": "<=", "threshold": 4.0}])
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


@pytest.mark.parametrize("notebook,metric,op,threshold", [
    ("01_mmr_speedup", "mmr_batch_speedup", ">=", 12.6),        # floor just above 12.5
    ("02_spawn_cost", "spawn_over_create_task_p50", "<=", 1.79),  # ceiling just below 1.8
])
def test_tightened_threshold_fails_and_names_everything(synthetic, capsys, notebook, metric, op, threshold):
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


def test_missing_metric_or_results_is_a_failure(synthetic, capsys):
    results, baselines = synthetic
    _baseline(baselines, "03_concurrency_knee", [{"metric": "pyrs_over_py_throughput_cmax", "op": ">=", "threshold": 0.9}])
    data = json.loads((baselines / "01_mmr_speedup.json").read_text())
    data["checks"].append({"metric": "no_such_metric", "op": ">=", "threshold": 1})
    (baselines / "01_mmr_speedup.json").write_text(json.dumps(data))

    failed = {(c.notebook, c.metric): c for c in nbs.check_results(results, baselines) if not c.ok}
    assert set(failed) == {("01_mmr_speedup", "no_such_metric"), ("03_concurrency_knee", "pyrs_over_py_throughput_cmax")}
    assert all(c.value is None for c in failed.values())
    assert "missing" in failed[("01_mmr_speedup", "no_such_metric")].message()


def test_bad_baseline_and_bad_metrics_are_rejected(tmp_path):
    _baseline(tmp_path / "b", "x", [{"metric": "m", "op": "~", "threshold": 1}])
    with pytest.raises(ValueError, match="op"):
        nbs.load_baselines(tmp_path / "b")
    with pytest.raises(ValueError, match="finite"):
        nbs.write_metrics(tmp_path / "r", "x", "ci", {"m": float("nan")})


def test_committed_baselines_pass_on_recorded_results_and_fail_when_tightened(tmp_path):
    """The real thresholds against results recorded from a real `--profile ci` run."""
    checks = nbs.check_results(RECORDED, nbs.BASELINE_DIR)
    assert checks, "no baselines committed"
    assert {c.notebook for c in checks} == set(nbs.NOTEBOOKS)
    assert all(c.ok for c in checks), "\n".join(c.message() for c in checks if not c.ok)

    # Tighten every threshold past its recorded value: every check must fail.
    tight = tmp_path / "tight"
    for p in nbs.BASELINE_DIR.glob("*.json"):
        data = json.loads(p.read_text())
        values = {c.metric: c.value for c in checks if c.notebook == data["notebook"]}
        for c in data["checks"]:
            v = values[c["metric"]]
            c["threshold"] = v * 1.01 + 1e-9 if c["op"].startswith(">") else v * 0.99 - 1e-9
        tight.mkdir(exist_ok=True)
        (tight / p.name).write_text(json.dumps(data))
    tightened = nbs.check_results(RECORDED, tight)
    assert tightened and not any(c.ok for c in tightened)


def test_committed_baselines_document_their_measurements():
    for nb, checks in nbs.load_baselines().items():
        assert nb in nbs.NOTEBOOKS
        for c in checks:
            assert c.get("why"), f"{nb}/{c['metric']}: threshold not explained"
            measured = c.get("measured")
            assert measured, f"{nb}/{c['metric']}: no measured values recorded"
            ok = nbs.OPS[c["op"]]
            assert all(ok(v, c["threshold"]) for v in measured), f"{nb}/{c['metric']}: a recorded measurement violates its own threshold"
