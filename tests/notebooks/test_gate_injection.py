"""Injected regressions measured for real: the MMR benchmark notebook 01 runs (`gatewaylab
bench mmr`, pyperf worker processes) with a regression planted in every process through a
`sitecustomize` module on PYTHONPATH, its ratios computed by the notebook's own code
(`harness.bench.mmr.gate_metrics`), then checked against the committed gates.

the Python MMR twin loaded under the Rust label (the registry entry silently points at the
Python class): the batch-speedup and share-of-bound gates must fail. (A removed batch path is
not measurable by timing on this machine -- append_many is 0.7-1.1x the per-leaf API by
best-of values, see data/baselines/README.md -- and is measured in instructions instead:
tests/notebooks/test_work_gate_injection.py removes it for real, GATEWAYLAB_INJECT=
mmr-batch-per-leaf, and the work gate `mmr_work_batch_over_per_leaf` fails.)

Small N and pyperf's quick mode keep each run to seconds; no timing is asserted beyond the
gates themselves, which are ratios measured within one run."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

from harness import notebooks as nbs
from harness.bench.mmr import gate_metrics
from tests import entry_points

pytestmark = pytest.mark.slow

NOTEBOOK = "01_mmr_speedup"

PYTHON_AS_RUST = """
    # injected: the Rust MMR entry of the registry points at the Python twin
    from gateway import twins
    twins.REGISTRY["mmr"] = (twins.REGISTRY["mmr"][0], twins.REGISTRY["mmr"][0])
"""


def _bench_with(tmp_path, injection: str) -> dict:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(injection))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAYLAB_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = tmp_path / "mmr.json"
    # pyperf starts its workers with a filtered environment: let PYTHONPATH through to them
    r = subprocess.run(
        [
            entry_points.gatewaylab(),
            "bench",
            "mmr",
            "--impl",
            "both",
            "--quick",
            "--n",
            "2000",
            "--pyperf-args=--inherit-environ=PYTHONPATH",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text())


def _check(tmp_path, data: dict) -> dict[str, nbs.Check]:
    results = tmp_path / "results"
    nbs.write_metrics(results / NOTEBOOK, NOTEBOOK, "ci", gate_metrics(data))
    return {c.metric: c for c in nbs.check_results(results, notebooks=[NOTEBOOK])}


def test_python_twin_labelled_rust_fails_the_speedup_gate(tmp_path, capsys):
    checks = _check(tmp_path, _bench_with(tmp_path, PYTHON_AS_RUST))
    with capsys.disabled():  # the figures for the closing note
        print(
            "\n[injection: Python MMR under the Rust label] "
            + "; ".join(c.message() for c in checks.values())
        )
    # The per-leaf gate (>= 1.27, widened by one slow recorded run) sits too close to the
    # Python-against-Python ratio (1.0 with this machine's noise: 1.17 in one run, above
    # 1.27 in another) to assert here; the batch and bound gates are far from it.
    for name in ("mmr_batch_speedup", "mmr_batch_share_of_bound"):
        assert not checks[name].ok, checks[name].message()
