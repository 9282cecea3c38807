"""The bundle round trip (docs/bundle.md), `make test-bundle`: build a bundle from this
checkout, install it into a fresh venv with `pip install --no-index` (no registry, no
checkout on the path), run a tiny sweep from it (every rung, rs-server from the bundle's own
binary), and import the raw results here into Parquet tables and a report. Prints the bundle
size and the times it took (the figures docs/bundle.md reports)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from harness.infra.bundle import build_bundle
from harness.results import schema
from harness.results.meta import git_info
from harness.results.raw_results import import_run

pytestmark = [pytest.mark.bundle, pytest.mark.slow]


def test_bundle_installs_offline_sweeps_without_pandas_and_imports(tmp_path):
    t0 = time.perf_counter()
    manifest = build_bundle(tmp_path / "bundle")
    t_build = time.perf_counter() - t0
    target = tmp_path / "target"  # as if copied to the other machine: nothing of the checkout on the path
    target.mkdir()
    b = tmp_path / "bundle"
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "GATEWAYLAB_SERVER_BIN")
    }
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["PIP_NO_INDEX"] = "1"  # belt and braces: the install must not reach a registry
    t0 = time.perf_counter()
    r = subprocess.run(
        [str(b / "run.sh"), "--help"], cwd=target, env=env, capture_output=True, text=True, timeout=900
    )
    t_install = time.perf_counter() - t0
    assert r.returncode == 0 and "sweep" in r.stdout, r.stderr
    py = b / "venv" / "bin" / "python"
    probe = subprocess.run(
        [str(py), "-c", "import gateway, pandas"], cwd=target, env=env, capture_output=True, text=True
    )
    assert "No module named 'pandas'" in probe.stderr  # the lean set: no analysis packages
    where = subprocess.run(
        [str(py), "-c", "import gateway; print(gateway.__file__)"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
    )
    assert str(b / "venv") in where.stdout  # the installed wheel, not this checkout

    t0 = time.perf_counter()
    r = subprocess.run(
        [
            str(b / "run.sh"),
            "sweep",
            "--raw",
            "--modes",
            "py,py+rs,rs-core,rs-server",
            "--concurrency",
            "1,2",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--repeat",
            "1",
            "--profile",
            "ci-2c",
            "--no-gil",
            "--no-progress",
            "--out",
            str(target / "runs"),
        ],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    t_sweep = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    (run_dir,) = (target / "runs").iterdir()
    meta = json.loads((run_dir / "meta.json").read_text())
    prov = meta["provenance"]
    assert prov["kind"] == "bundle" and prov["git_sha"] == git_info()["git_sha"] == meta["git_sha"]
    assert meta["build_profile"] == "release" and meta["results"] == "raw"
    assert meta["python_executable"].startswith(str(b / "venv"))

    t0 = time.perf_counter()
    dest = import_run(run_dir, root=tmp_path / "home")
    t_import = time.perf_counter() - t0
    import pandas as pd

    cells = pd.read_parquet(dest / "cells.parquet")
    assert schema.validate("cells", cells) == []
    assert sorted(set(cells["mode"])) == ["py", "py+rs", "rs-core", "rs-server"]
    assert (cells["status"] == "ok").all() and (cells["rps"] > 0).all()
    assert (dest / "report.md").exists()
    wheels = [f for f in manifest["files"] if f["path"].startswith("wheels/")]
    print(
        f"\nbundle: {manifest['bytes'] / 1e6:.1f} MB ({len(wheels)} wheels "
        f"{sum(f['bytes'] for f in wheels) / 1e6:.1f} MB, bin {manifest['bytes'] / 1e6 - sum(f['bytes'] for f in wheels) / 1e6:.1f} MB); "
        f"build {t_build:.1f} s, install (venv + pip --no-index) {t_install:.1f} s, "
        f"sweep {t_sweep:.1f} s, import {t_import:.1f} s; load {os.getloadavg()[0]:.1f}"
    )
