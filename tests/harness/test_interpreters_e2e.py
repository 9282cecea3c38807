"""The interpreter axis end to end, on a real interpreter other than this one: CPython 3.12
(pyenv on this machine kind). Its venv lives in the harness cache (docs/interpreters.md), so
after the first run on a machine this test reuses it; the first run builds the abi3 wheel and
the venv (minutes). One test, in order: build or reuse, reuse, reinstall after a source
change, a tiny benchmark through the CLI, and one sweep cell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.infra import interpreters as I

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_312_venv_is_built_once_reused_reinstalled_and_runs_a_bench_and_a_sweep(tmp_path):
    found, (i,) = I.resolve_spec("3.12", log=None)
    assert i.version.startswith("3.12.") and I.build_flavor(i) is I.ABI3

    first = I.prepare(i, log=None)
    assert first.action in ("built", "reused", "reinstalled")
    m = first.manifest
    assert m["source_hash"] == I.source_hash() and m["project_version"] == I.project_version()
    assert m["flavor"] == "abi3" and "-abi3-" in m["wheel"]
    assert m["check"]["build_profile"] == "release"
    assert m["check"]["file"].startswith(str(first.venv))  # the venv's extension, not the checkout's

    again = I.prepare(i, log=None)
    assert again.action == "reused" and again.venv == first.venv

    # the source changes (as the manifest now says it was installed from other sources): reinstall
    path = first.venv / I.MANIFEST
    path.write_text(json.dumps({**m, "source_hash": "0" * 64}))
    redone = I.prepare(i, log=None)
    assert redone.action == "reinstalled" and redone.venv == first.venv
    assert redone.manifest["source_hash"] == I.source_hash() and "install_s" in redone.manifest["timings"]
    assert I.prepare(i, log=None).action == "reused"

    out = tmp_path / "hash.json"
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "bench", "hash", "--quick", "--size", "64", "--pythons", "3.12",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("interpreters: found ") and f"## {i.label}" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["format"] == "gatewaylab.bench-pythons/1" and list(doc["results"]) == [i.label]
    own = doc["results"][i.label]
    assert own["meta"]["python"] == i.label and own["meta"]["python_version"] == i.version
    assert own["meta"]["provenance"]["kind"] == "venv"
    assert own["meta"]["provenance"]["source_hash"] == I.source_hash()
    assert own["meta"]["git_sha"] == doc["meta"]["git_sha"]
    (row,) = doc["comparison"]
    assert (row["component"], row["measure"], row["tag"]) == ("hash 64 B", "rust_advantage", i.tag)
    assert (tmp_path / f"hash.{i.slug}.json").exists() and (tmp_path / f"hash.{i.slug}.pyperf.json").exists()

    from harness.infra.sweep import run_sweep

    res = run_sweep(
        modes=("py", "rs-server"), pythons="3.12", concurrency=[1], duration_s=0.6, warmup_s=0.2,
        repeat=1, gil=False, capacity=False, report=False, results="raw", progress=False, out=tmp_path,
        profile="ci-2c",
    )  # fmt: skip
    by = {row["mode"]: row for row in res.table}
    assert by["py"]["status"] == "ok", by["py"]["error"]
    assert by["py"]["python"] == i.label and by["py"]["cell"] == f"py||asgi|py={i.label}|c=1"
    assert by["rs-server"]["python"] == "" and "|py=" not in by["rs-server"]["cell"]  # measured once
    meta = res.meta
    assert meta["interpreters"]["not_on_axis"] == {"rs-server": I.NOT_ON_AXIS}
    assert list(meta["interpreters"]["axis"]) == [i.label]
    assert meta["parameters"]["pythons"] == [i.label]
