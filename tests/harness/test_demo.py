"""`python -m harness.studies.demo --quick` (what `make demo` runs, CI-sized): one run folder with
meta.json, the step's JSON/pyperf JSON/Parquet and a report.md with the tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results import runs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_quick_writes_a_run_folder_with_report(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "harness.studies.demo", "--quick", "--steps", "mmr", "--root", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    report = Path(r.stdout.strip().splitlines()[-1])
    assert report.name == "report.md" and report.parent.parent == tmp_path
    run = runs.open_run(report.parent)
    text = report.read_text()
    assert "| N | Python" in text and "SHA-256 bound" in text and "cores" in text
    assert "--pythons 3.11,3.12,3.13" in text and "The interpreter is an axis" in text
    assert {"mmr", "mmr_sha256_bound"} <= set(run.tables())
    assert (run.path / "mmr.pyperf.json").exists()
    assert json.loads((run.path / "mmr.json").read_text())["rows"]
    m = run.meta
    assert (
        m["parameters"] == {"quick": True, "steps": ["mmr"]}
        and "end_time" in m
        and m["build_profile"] == "release"
    )
    assert set(run.read_table("mmr").columns) == {"impl", "api", "n", "leaves_per_s", "min", "max"}


def test_demo_rejects_unknown_steps(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "harness.studies.demo", "--steps", "nope", "--root", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "unknown steps" in r.stderr
    assert not list(tmp_path.iterdir())
