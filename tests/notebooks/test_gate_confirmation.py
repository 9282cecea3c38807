"""Timing gates confirm before they fail (harness/notebooks.py, "Confirmation").

A tripped `timing` gate re-runs its notebook with the papermill parameter
`confirm_rounds=N` and fails only if the gate trips on the confirmation's metrics too; a
`work` gate fails at once. These tests check the decision, not timing: papermill is replaced
by a fake that records the parameters it is given and writes the metrics a test chooses into
the run folder, so nothing is measured and no notebook runs (the notebooks' own use of the
parameter is checked by the last tests: it is declared in their parameters cell, and the
sweep's interleaved order is a plain function)."""

from __future__ import annotations

import json
from pathlib import Path

import papermill
import pytest

from harness import notebooks as nbs
from harness.infra.sweep import round_order

NB = "03_concurrency_knee"  # a notebook name the runner accepts; nothing of it runs here
OTHER = "02_spawn_cost"


def _baselines(tmp_path: Path, checks: dict[str, list[dict]]) -> Path:
    d = tmp_path / "baselines"
    d.mkdir()
    for nb, cs in checks.items():
        (d / f"{nb}.json").write_text(json.dumps({"notebook": nb, "checks": cs}))
    return d


def _gate(metric: str, tier: str = "timing", op: str = ">=", threshold: float = 1.5) -> dict:
    return {"metric": metric, "op": op, "threshold": threshold, "rule": "exact", "tier": tier, "why": "test"}


class FakePapermill:
    """Stands in for papermill.execute_notebook: records each call's parameters and writes
    `metrics.json` into the run folder; `first` and `confirm` map notebook -> metrics for the
    first run and for a confirmation (`confirm_rounds` passed). `broken` notebooks raise in
    their confirmation."""

    def __init__(self, first: dict, confirm: dict | None = None, broken: tuple[str, ...] = ()):
        self.first, self.confirm, self.broken = first, confirm or {}, broken
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, src, dst, parameters, **kw):
        nb = Path(src).stem
        self.calls.append((nb, dict(parameters)))
        confirming = nbs.CONFIRM_PARAMETER in parameters
        if confirming and nb in self.broken:
            raise RuntimeError("a cell failed")
        metrics = (self.confirm if confirming else self.first)[nb]
        nbs.write_metrics(parameters["run_dir"], nb, parameters["profile"], metrics)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setattr(nbs, "EXECUTED_DIR", tmp_path / "executed")

    def install(*args, **kw):
        f = FakePapermill(*args, **kw)
        monkeypatch.setattr(papermill, "execute_notebook", f)
        return f

    return install


def _main(tmp_path, baselines, notebooks, *extra):
    out = tmp_path / "results"
    args = ["--only", *notebooks, "--baselines", str(baselines), "--out", str(out), "--kernel", "fake"]
    return nbs.main(args + list(extra)), out


def _lines(out: str, start: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith(start)]


def test_a_trip_whose_confirmation_passes_does_not_fail_the_run(tmp_path, fake, capsys):
    base = _baselines(tmp_path, {NB: [_gate("knee_ratio"), _gate("steady_ratio")]})
    pm = fake(
        first={NB: {"knee_ratio": 1.2, "steady_ratio": 2.0}},
        confirm={NB: {"knee_ratio": 1.9, "steady_ratio": 2.1}},
    )
    rc, results = _main(tmp_path, base, [NB])
    out = capsys.readouterr().out
    assert rc == 0, out
    # the confirmation really ran the notebook, with the interleaved-rounds parameter
    assert [nb for nb, _ in pm.calls] == [NB, NB]
    first, again = pm.calls[0][1], pm.calls[1][1]
    assert nbs.CONFIRM_PARAMETER not in first
    assert again == {
        "profile": "ci",
        "run_dir": str(results / nbs.CONFIRM_DIR / NB),
        "live_panel": False,
        nbs.CONFIRM_PARAMETER: nbs.CONFIRM_ROUNDS,
    }
    info = json.loads((results / nbs.CONFIRM_DIR / NB / nbs.CONFIRM_FILE).read_text())
    assert info == {"rounds": 3, "parameter": "confirm_rounds", "tripped": {"knee_ratio": 1.2}}
    # both values and the verdict, in the table and in the message
    row = next(ln for ln in out.splitlines() if ln.startswith(NB) and "knee_ratio" in ln)
    assert "1.2" in row and "1.9 (3 rounds)" in row and "ok (trip not confirmed)" in row
    (msg,) = _lines(out, "ok   " + NB)
    assert "knee_ratio = 1.2 tripped" in msg and "= 1.9" in msg and "3 interleaved rounds" in msg
    assert "not confirmed" in msg  # "passes: the trip was not confirmed"
    assert not _lines(out, "FAIL")
    assert "notebooks: 3 passed, 0 failed" in out  # one execution + two gates
    summary = json.loads((results / "notebooks-summary.json").read_text())
    knee = next(c for c in summary["checks"] if c["metric"] == "knee_ratio")
    assert (knee["ok"], knee["passed"], knee["confirmation"]["value"]) == (False, True, 1.9)


def test_a_trip_that_the_confirmation_repeats_fails(tmp_path, fake, capsys):
    base = _baselines(tmp_path, {NB: [_gate("knee_ratio")]})
    fake(first={NB: {"knee_ratio": 1.2}}, confirm={NB: {"knee_ratio": 1.1}})
    rc, _ = _main(tmp_path, base, [NB])
    out = capsys.readouterr().out
    assert rc == 1
    (line,) = _lines(out, "FAIL")
    assert f"{NB}: knee_ratio = 1.2 tripped, threshold >= 1.5" in line
    assert "confirmation (3 interleaved rounds) = 1.1: trips too" in line
    assert "FAIL (confirmed)" in out and "notebooks: 1 passed, 1 failed" in out


def test_a_work_gate_never_confirms(tmp_path, fake, capsys):
    base = _baselines(tmp_path, {NB: [_gate("instr_ratio", tier="work")]})
    pm = fake(first={NB: {"instr_ratio": 1.2}}, confirm={NB: {"instr_ratio": 9.0}})
    rc, results = _main(tmp_path, base, [NB])
    out = capsys.readouterr().out
    assert rc == 1
    assert len(pm.calls) == 1, "a work gate's trip re-ran its notebook"
    assert not (results / nbs.CONFIRM_DIR).exists()
    (line,) = _lines(out, "FAIL")
    assert "instr_ratio = 1.2 tripped" in line and "work gate: fails at once" in line
    assert "FAIL (work gate)" in out


def test_only_notebooks_with_a_tripped_timing_gate_are_measured_again(tmp_path, fake, capsys):
    base = _baselines(
        tmp_path,
        {NB: [_gate("knee_ratio")], OTHER: [_gate("spawn_ratio", op="<=", threshold=1.4)]},
    )
    pm = fake(
        first={NB: {"knee_ratio": 1.6}, OTHER: {"spawn_ratio": 1.5}}, confirm={OTHER: {"spawn_ratio": 1.3}}
    )
    rc, _ = _main(tmp_path, base, [NB, OTHER])
    assert rc == 0, capsys.readouterr().out
    assert [(nb, nbs.CONFIRM_PARAMETER in p) for nb, p in pm.calls] == [
        (NB, False),
        (OTHER, False),
        (OTHER, True),
    ]


def test_a_missing_metric_is_a_failure_not_a_trip(tmp_path, fake, capsys):
    base = _baselines(tmp_path, {NB: [_gate("knee_ratio")]})
    pm = fake(first={NB: {"something_else": 2.0}})
    rc, _ = _main(tmp_path, base, [NB])
    assert rc == 1 and len(pm.calls) == 1
    assert "metric 'knee_ratio' missing" in capsys.readouterr().out


def test_a_confirmation_that_cannot_run_fails_the_trip(tmp_path, fake, capsys):
    base = _baselines(tmp_path, {NB: [_gate("knee_ratio")]})
    fake(first={NB: {"knee_ratio": 1.2}}, broken=(NB,))
    rc, _ = _main(tmp_path, base, [NB])
    out = capsys.readouterr().out
    assert rc == 1
    (line,) = [ln for ln in _lines(out, "FAIL") if "knee_ratio" in ln]
    assert "not confirmed: the confirmation run failed" in line and "a cell failed" in line
    assert "FAIL (not confirmed)" in out
    assert "notebooks: 1 passed, 1 failed" in out  # the run failure is the gate's, counted once


def test_confirmation_off_fails_a_trip_at_once(tmp_path, fake, capsys):
    base = _baselines(tmp_path, {NB: [_gate("knee_ratio")]})
    pm = fake(first={NB: {"knee_ratio": 1.2}}, confirm={NB: {"knee_ratio": 1.9}})
    rc, _ = _main(tmp_path, base, [NB], "--confirm-rounds", "0")
    assert rc == 1 and len(pm.calls) == 1
    assert "confirmation is off (--confirm-rounds 0)" in capsys.readouterr().out


def test_check_only_cannot_confirm_and_says_so(tmp_path, capsys):
    base = _baselines(tmp_path, {NB: [_gate("knee_ratio")]})
    results = tmp_path / "recorded"
    nbs.write_metrics(results / NB, NB, "ci", {"knee_ratio": 1.2})
    assert nbs.main(["--check-only", str(results), "--baselines", str(base)]) == 1
    (line,) = _lines(capsys.readouterr().out, "FAIL")
    assert "knee_ratio = 1.2 tripped" in line
    assert "not confirmed: --check-only measures nothing and the results hold no confirmation" in line


def test_check_only_uses_a_confirmation_the_results_hold(tmp_path, fake, capsys):
    base = _baselines(tmp_path, {NB: [_gate("knee_ratio")]})
    fake(first={NB: {"knee_ratio": 1.2}}, confirm={NB: {"knee_ratio": 1.9}})
    rc, results = _main(tmp_path, base, [NB])
    assert rc == 0
    capsys.readouterr()
    assert nbs.main(["--check-only", str(results), "--baselines", str(base)]) == 0
    out = capsys.readouterr().out
    (line,) = _lines(out, "ok   " + NB)
    assert "knee_ratio = 1.2 tripped" in line and "confirmation (3 interleaved rounds) = 1.9" in line


def test_the_decision_without_the_runner(tmp_path):
    """apply_confirmations on its own: only tripped timing gates take a confirmation; the
    first measurement stays as it was."""
    base = _baselines(
        tmp_path,
        {NB: [_gate("a"), _gate("b"), _gate("c", tier="work"), _gate("d")]},
    )
    first, again = tmp_path / "first", tmp_path / "again"
    nbs.write_metrics(first / NB, NB, "ci", {"a": 1.2, "b": 1.0, "c": 1.0, "d": 2.0})
    nbs.write_metrics(again / NB, NB, "ci", {"a": 1.8, "b": 1.4, "c": 2.0, "d": 0.5})
    checks = nbs.check_results(first, base)
    assert nbs.to_confirm(checks) == [NB]
    got = {c.metric: c for c in nbs.apply_confirmations(checks, {NB: again}, base, {NB: 5})}
    assert (got["a"].value, got["a"].ok, got["a"].passed, got["a"].confirmation.value) == (
        1.2,
        False,
        True,
        1.8,
    )
    assert (got["b"].passed, got["b"].confirmation.value, got["b"].confirmation.rounds) == (False, 1.4, 5)
    assert got["c"].confirmation is None and not got["c"].passed  # work: never confirmed
    assert got["d"].confirmation is None and got["d"].passed  # passed first: not judged again


def test_median_over_rounds():
    rounds = [
        {"r": nbs.metric(1.0, desc="x")},
        {"r": nbs.metric(3.0, desc="x")},
        {"r": nbs.metric(2.0, desc="x")},
    ]
    m = nbs.median_over_rounds(rounds)["r"]
    assert (m["value"], m["min"], m["max"]) == (2.0, 1.0, 3.0)
    assert "median of 3 interleaved rounds" in m["desc"]
    assert nbs.median_over_rounds(rounds[:2])["r"]["value"] == 2.0


# --- the notebooks' side ------------------------------------------------------------------


def _timing_gated() -> list[str]:
    return sorted({nb for nb, cs in nbs.load_baselines().items() if any(c["tier"] == "timing" for c in cs)})


@pytest.mark.parametrize("notebook", _timing_gated())
def test_every_timing_gated_notebook_takes_the_confirmation_parameter(notebook):
    """papermill can pass `confirm_rounds`: the notebook declares it (0, a normal run) in its
    parameters cell, and uses it."""
    params = papermill.inspect_notebook(str(nbs.NOTEBOOK_DIR / f"{notebook}.ipynb"))
    assert params[nbs.CONFIRM_PARAMETER]["default"] == "0", params
    src = (nbs.NOTEBOOK_DIR / f"{notebook}.py").read_text()
    assert src.count(nbs.CONFIRM_PARAMETER) >= 2, (
        f"{notebook} declares {nbs.CONFIRM_PARAMETER} but never reads it"
    )


def test_sweep_rounds_alternate_the_configurations():
    cfgs = ["A", "B", "C"]
    assert [round_order(cfgs, r, "fixed") for r in range(3)] == [cfgs, cfgs, cfgs]
    assert [round_order(cfgs, r, "alternate") for r in range(3)] == [cfgs, cfgs[::-1], cfgs]
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="order"):
        round_order(cfgs, 0, "shuffled")
