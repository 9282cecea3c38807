"""The work gates fail on real injected regressions, measured, not typed in.

Each test runs the notebook's own work-gate measurement (`harness.work_gates`, Cachegrind
through `harness.bench.instructions`, at ci size) with a test-only regression planted by
`GATEWAYLAB_INJECT` (gateway/inject.py; every process of the measurement inherits it), checks
the measured ratios against the committed gates (data/baselines/), and asserts that the gate
named for the regression FAILS on the measured value, that the run's metadata records the
injection, and that without it the gate passes: every recorded run of the same measurement
(none injected: --record refuses that; test_baselines checks there are enough) clears the
gate and lies beyond the injected value. The 07 tests measure
only the rungs and governance settings their gate reads, to keep each test to a minute or
two; the ratio is computed by the same code as the notebook's (`ladder_metrics`).

Every work gate of 01, 06 and 07 is shown failing. Regressions: a Rust twin replaced by its
Python twin under the Rust label (the MMR; each of 06's twins; the audit path's twins on
py+rs), the MMR's batch path removed (append_many loops over append), and a stage doing extra
work on the Rust rungs (the WAF scanning every prompt four, or eight, more times in the
engine's pipeline, which rs-core and rs-server share)."""

from __future__ import annotations

import pytest

from gateway import inject
from gateway.twins import REGISTRY
from harness import notebooks as nbs
from harness import work_gates

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _checks(tmp_path, w: work_gates.WorkMeasurement) -> dict[str, nbs.Check]:
    results = tmp_path / "results"
    nbs.write_metrics(results / w.notebook, w.notebook, "ci", w.metrics)
    checks = nbs.check_results(results, notebooks=[w.notebook])
    return {c.metric: c for c in checks if c.metric in w.metrics}


def _measure(monkeypatch, injection: str | None, fn, *args, **kwargs) -> work_gates.WorkMeasurement:
    if injection:
        monkeypatch.setenv(inject.ENV, injection)
    else:
        monkeypatch.delenv(inject.ENV, raising=False)
    w = fn("ci", *args, **kwargs)
    meta = w.run.meta
    assert meta.get("inject") == (injection.split(",") if injection else None), meta.get("inject")
    return w


def _fails(tmp_path, capsys, w, gates: str | tuple[str, ...], injection: str) -> None:
    checks = _checks(tmp_path, w)
    with capsys.disabled():  # the figures for the closing note
        print(f"\n[injection {injection}] " + "; ".join(c.message() for c in checks.values()))
    for gate in (gates,) if isinstance(gates, str) else gates:
        c = checks[gate]
        assert c.tier == "work" and c.value is not None
        assert not c.ok, c.message()
        assert c.result() == "FAIL (work gate)"
        _clean_runs_pass(w.notebook, gate, c.value)


def _clean_runs_pass(notebook: str, gate: str, injected: float) -> None:
    """Without the injection the gate passes: every recorded run (the same measurement, no
    injection: --record refuses one) clears it, and the injected value lies outside them all."""
    runs = nbs.load_recorded_runs()
    values = nbs.recorded_values(runs, notebook, gate)
    (check,) = [c for c in nbs.load_baselines()[notebook] if c["metric"] == gate]
    assert values and all(nbs.OPS[check["op"]](v, check["threshold"]) for v in values)
    assert injected < min(values) if check["op"].startswith(">") else injected > max(values)


def test_an_unknown_injection_is_refused(monkeypatch):
    monkeypatch.setenv(inject.ENV, "waf-thrice")
    with pytest.raises(Exception, match="unknown injection"):
        inject.active(REGISTRY)


def test_mmr_python_twin_under_the_rust_label_fails_the_per_leaf_work_gate(tmp_path, capsys, monkeypatch):
    injection = "python-as-rust:mmr"
    _fails(
        tmp_path,
        capsys,
        _measure(monkeypatch, injection, work_gates.measure_01),
        "mmr_work_rust_over_python_per_leaf",
        injection,
    )


def test_mmr_batch_path_removed_fails_the_batch_work_gate(tmp_path, capsys, monkeypatch):
    injection = "mmr-batch-per-leaf"
    w = _measure(monkeypatch, injection, work_gates.measure_01)
    _fails(tmp_path, capsys, w, "mmr_work_batch_over_per_leaf", injection)


# Each of notebook 06's twin gates, with its Rust twin replaced by the Python one under the
# Rust label (both WAF gates by the one WAF swap, measured once).
TWIN_SWAPS = {
    "auth": ("auth",),
    "waf": ("waf_short", "waf_4k"),
    "ratelimit": ("ratelimit",),
    "record": ("record",),
    "wal": ("wal_record",),
}


@pytest.mark.parametrize("component", list(TWIN_SWAPS))
def test_a_python_twin_under_the_rust_label_fails_its_twin_work_gate(
    tmp_path, capsys, monkeypatch, component
):
    injection = f"python-as-rust:{component}"
    w = _measure(monkeypatch, injection, work_gates.measure_06, twins=TWIN_SWAPS[component])
    _fails(tmp_path, capsys, w, tuple(f"twin_work_{t}" for t in TWIN_SWAPS[component]), injection)


def test_python_audit_twins_on_pyrs_fail_the_py_over_pyrs_work_gate(tmp_path, capsys, monkeypatch):
    # The audit path's Rust twins (record, entropy, hash, MMR, WAL) swapped for the Python ones
    # on py+rs. The four stage twins swapped alone move py/py+rs by ~2% (measured 1.704 against
    # a median of 1.74), inside the request-level spread of this loaded machine; each stage
    # twin is gated on its own in notebook 06 (twin_work_*, the auth swap measured above).
    injection = ",".join(f"python-as-rust:{c}" for c in ("record", "entropy", "hash", "mmr", "wal"))
    kw = dict(noveum=False, rungs=("py", "py+rs"), governance=("on",))
    w = _measure(monkeypatch, injection, work_gates.measure_07, **kw)
    _fails(tmp_path, capsys, w, "work_py_over_pyrs", injection)


def test_waf_scanning_more_on_rs_server_fails_the_stages_work_gate(tmp_path, capsys, monkeypatch):
    # four extra WAF scans per prompt in the Rust pipeline: ~13 k instructions per request, 7%
    # of rs-server's governance work. One extra scan (waf-twice, ~3.3 k, 1.5% of the request)
    # was measured past the gate by 1.1%, once: too close to the request-level spread of this
    # loaded machine to assert (README, "Work gates").
    injection = "waf-extra:4"
    kw = dict(noveum=False, rungs=("rs-server",), governance=("on", "off", "stages-only"))
    w = _measure(monkeypatch, injection, work_gates.measure_07, **kw)
    _fails(tmp_path, capsys, w, "work_rsserver_stages_over_passthrough", injection)


def test_the_engine_doing_more_fails_the_rust_rungs_work_gates(tmp_path, capsys, monkeypatch):
    # Eight extra WAF scans per prompt in the engine's pipeline (~26 k instructions per
    # request on rs-core and rs-server alike; py+rs runs the Python pipeline with the Rust
    # twins and does not change): rs-core's advantage over py+rs shrinks, rs-server's over
    # rs-core shrinks (the same work added to both), and the governance tax grows. The three
    # gates the test above does not reach, each failing on the one measurement.
    injection = "waf-extra:8"
    kw = dict(noveum=False, rungs=("py+rs", "rs-core", "rs-server"), governance=("on", "off"))
    w = _measure(monkeypatch, injection, work_gates.measure_07, **kw)
    gates = ("work_pyrs_over_rscore", "work_rscore_over_rsserver", "work_rsserver_over_passthrough")
    _fails(tmp_path, capsys, w, gates, injection)
