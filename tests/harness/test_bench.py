"""`gatewaylab bench mmr|wal|hash|entropy --quick`: runs end to end through pyperf
subprocesses and writes the documented JSON shapes (timings are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyperf
import pytest

from tests import entry_points

GATEWAYLAB = entry_points.gatewaylab()


def bench(tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAYLAB_")}
    r = subprocess.run(
        [str(GATEWAYLAB), "bench", name, "--quick", "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    pj = Path(result["pyperf_json"])
    assert pj.exists() and pj == tmp_path / f"{name}.pyperf.json"
    suite = pyperf.BenchmarkSuite.load(str(pj))  # pyperf can read what we kept
    assert suite.get_benchmarks()
    assert result["meta"]["build_profile"] == "release"
    assert result["meta"]["parameters"]["bench"] == name
    return result, r.stdout


def _spread_ok(row, key):
    assert row[key] > 0 and row["min"] > 0 and row["max"] > 0
    assert row["min"] <= row[key] <= row["max"]


def test_bench_mmr_shape(tmp_path):
    result, stdout = bench(tmp_path, "mmr", "--n", "100", "--n", "1000")
    assert set(result) >= {"rows", "sha256_bound_leaves_per_s", "meta"}
    got = {(r["impl"], r["api"], r["n"]) for r in result["rows"]}
    assert got == {
        (i, a, n)
        for n in (100, 1000)
        for i, a in [("python", "per_leaf"), ("rust", "per_leaf"), ("rust", "batch")]
    }
    for r in result["rows"]:
        assert set(r) == {"impl", "api", "n", "leaves_per_s", "min", "max"}
        _spread_ok(r, "leaves_per_s")
    assert result["sha256_bound_leaves_per_s"] > 0
    assert "| N |" in stdout and "speedup" in stdout and "batch speedup" in stdout


def test_bench_wal_shape(tmp_path):
    result, stdout = bench(tmp_path, "wal", "--dir", str(tmp_path))
    got = {(r["impl"], r["policy"], r["api"]) for r in result["rows"]}
    assert got == {
        (i, p, a)
        for i in ("python", "rust")
        for p in ("always", "group", "none")
        for a in ("per_record", "batch")
    }
    for r in result["rows"]:
        _spread_ok(r, "records_per_s")
    assert not list(tmp_path.glob("*.wal")), "benchmark WAL files are cleaned up"
    assert "| fsync |" in stdout


def test_bench_hash_and_entropy_shape(tmp_path):
    result, _ = bench(tmp_path, "hash", "--impl", "both")
    assert {(r["impl"], r["size"]) for r in result["rows"]} == {
        (i, s) for i in ("python", "rust") for s in (64, 65536)
    }
    for r in result["rows"]:
        _spread_ok(r, "ns_per_call")
    result, _ = bench(tmp_path, "entropy", "--impl", "python")
    assert {(r["impl"], r["case"]) for r in result["rows"]} == {("python", "text"), ("python", "logprobs")}
    for r in result["rows"]:
        _spread_ok(r, "ns_per_call")


def test_debug_build_is_refused(monkeypatch):
    from harness.bench import _runner
    from harness.results import meta

    monkeypatch.setattr(meta, "build_profile", lambda: "debug")
    with pytest.raises(_runner.DebugBuildRefused, match="debug"):
        _runner.require_release()
    from harness.bench import mmr

    with pytest.raises(_runner.DebugBuildRefused):
        mmr.measure(quick=True)


def test_bench_mmrstore_shape(tmp_path):
    # Not pyperf-based (it times ledgers and a gateway, not a function): its own JSON only.
    out = tmp_path / "mmrstore.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAYLAB_")}
    r = subprocess.run(
        [str(GATEWAYLAB), "bench", "mmrstore", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert {(a["impl"], a["api"]) for a in result["append"]} == {
        (i, a) for i in ("python", "rust") for a in ("per_leaf", "batch256")
    }
    for a in result["append"]:
        assert a["ratio_min"] <= a["ratio"] <= a["ratio_max"]
    assert {x["impl"] for x in result["restart"]} == {"python", "rust"}
    for p in result["proofs"]:
        assert 0 < p["p50_us"] <= p["p99_us"] <= p["max_us"] and p["resident_hashes"] < 10_000
    assert result["soak"] == [] and result["meta"]["parameters"]["bench"] == "mmrstore"
    assert "store / memory" in r.stdout and "Restart" in r.stdout
