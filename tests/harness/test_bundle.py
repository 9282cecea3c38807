"""Taking the study to the hardware (docs/bundle.md), the fast part that runs in `make test`:
`gatewaylab sweep --raw` runs with pandas, pyarrow and plotly unimportable and writes raw
JSON rows; `gatewaylab import` turns them into the usual typed Parquet tables and a report;
results say where their code came from (a bundle's manifest); the runtime dependency set
holds no analysis package; CLI mistakes are one line. The full round trip (build a bundle,
install it offline, sweep from it) is tests/harness/test_bundle_roundtrip.py (`make test-bundle`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness.results import schema
from harness.results.raw_results import import_run

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("pandas", "pyarrow", "plotly", "scalene", "IPython", "jupyterlab")
TINY = [
    "--modes",
    "py",
    "--concurrency",
    "1",
    "--duration",
    "0.4",
    "--warmup",
    "0.1",
    "--repeat",
    "1",
    "--profile",
    "ci-2c",
    "--no-gil",
    "--no-progress",
]


def _lean_env(tmp_path) -> dict[str, str]:
    """An environment in which the analysis packages cannot be imported (as on a lean install)."""
    block = tmp_path / "block"
    block.mkdir(exist_ok=True)
    for name in BLOCKED:
        (block / f"{name}.py").write_text(
            f"raise ImportError('{name} is not installed here (lean install)')\n"
        )
    return {**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{ROOT}"}


def _cli(args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_runtime_dependencies_hold_no_analysis_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = {
        d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in data["project"]["dependencies"]
    }
    analysis = {d.split(">")[0].strip().lower() for d in data["project"]["optional-dependencies"]["analysis"]}
    assert {"pandas", "pyarrow", "plotly"} <= analysis
    assert not runtime & (analysis | {"jupyterlab", "papermill", "ipykernel", "ipython", "kaleido"})


@pytest.mark.slow
def test_a_raw_sweep_without_pandas_imports_into_parquet_tables_and_a_report(tmp_path):
    env = _lean_env(tmp_path)
    out = tmp_path / "target-runs"
    # without --raw, a lean install says what to do in one line
    r = _cli(["sweep", *TINY, "--out", str(out)], env, tmp_path)
    assert r.returncode == 1 and "sweep with --raw" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli(["sweep", "--raw", *TINY, "--out", str(out)], env, tmp_path)
    assert r.returncode == 0, r.stderr
    (run_dir,) = out.iterdir()
    assert not list(run_dir.glob("*.parquet")) and not (run_dir / "report.md").exists()
    cells = json.loads((run_dir / "tables" / "cells.json").read_text())
    assert cells["format"] == "gatewaylab-raw-table" and [c["status"] for c in cells["rows"]] == ["ok"]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["results"] == "raw" and meta["partial"] is False
    assert meta["provenance"]["kind"] == "checkout" and meta["git_sha"]
    # the report command points at import instead of a traceback
    r = _cli(["report", str(run_dir)], env, tmp_path)
    assert r.returncode == 1 and "gatewaylab import" in r.stderr and "Traceback" not in r.stderr

    home = tmp_path / "home"
    dest = import_run(run_dir, root=home)
    assert dest == home / run_dir.name and (dest / "report.md").exists()
    for name in schema.TABLES:
        df = __import__("pandas").read_parquet(dest / f"{name}.parquet")
        assert schema.validate(name, df) == [], name
    df = __import__("pandas").read_parquet(dest / "cells.parquet")
    assert list(df["mode"]) == ["py"] and df["rps"].iloc[0] > 0 and df["run_id"].iloc[0] == run_dir.name
    m = json.loads((dest / "meta.json").read_text())
    assert m["results"] == "parquet" and m["imported"]["tables"] == sorted(schema.TABLES)
    assert m["git_sha"] == meta["git_sha"] and m["provenance"] == meta["provenance"]
    with pytest.raises(Exception, match="already exists"):
        import_run(run_dir, root=home)


def test_results_carry_the_bundle_provenance(tmp_path, monkeypatch):
    from gateway.errors import ConfigError
    from harness.infra import bundle
    from harness.results import meta

    manifest = {
        "format": bundle.FORMAT,
        "version": bundle.VERSION,
        "git_sha": "ab" * 20,
        "git_dirty": False,
        "build_profile": "release",
        "rustc_version": "rustc 1.2.3",
        "python": "3.11",
        "created": "2026-12-01T00:00:00Z",
        "project_wheel": "gatewaylab-0.1.0-cp311-abi3-x.whl",
    }
    p = tmp_path / "bundle.json"
    p.write_text(json.dumps(manifest))
    monkeypatch.setenv(bundle.BUNDLE_ENV, str(p))
    m = meta.collect()
    assert m["provenance"]["kind"] == "bundle" and m["provenance"]["manifest"] == str(p.resolve())
    assert (m["git_sha"], m["git_dirty"], m["rustc_version"]) == ("ab" * 20, False, "rustc 1.2.3")
    p.write_text("{}")
    with pytest.raises(ConfigError, match="not a gatewaylab bundle manifest"):
        meta.collect()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--python", "2.7"], "requires Python >= 3.11"),
        (["--python", "three"], "expected a CPython version"),
        ([], "is not empty"),
    ],
)
def test_bundle_cli_mistakes_are_one_line(tmp_path, args, says):
    out = tmp_path / "b"
    out.mkdir()
    (out / "something").write_text("x")
    r = _cli(["bundle", str(out), *args], dict(os.environ), ROOT)
    assert r.returncode == 1 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
