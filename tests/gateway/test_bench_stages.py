"""`gatewaylab bench stages` produces per-stage rows with a spread, for each twin asked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_stages_quick_json(tmp_path):
    out = tmp_path / "stages.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "bench",
            "stages",
            "--quick",
            "--impl",
            "both",
            "--stage",
            "guard",
            "--stage",
            "auth",
            "--stage",
            "waf.short",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    got = {(row["stage"], row["impl"]) for row in res["rows"]}
    assert got == {
        ("guard", "python"),
        ("auth", "python"),
        ("auth", "rust"),
        ("waf.short", "python"),
        ("waf.short", "rust"),
    }
    for row in res["rows"]:
        assert 0 < row["min"] <= row["us_per_request"] <= row["max"] and row["values"] >= 2
    assert "| auth |" in r.stdout and (tmp_path / "stages.pyperf.json").exists()
