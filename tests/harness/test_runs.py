"""Run folders and their metadata."""

from __future__ import annotations

import json
import re

import pandas as pd

from gateway.twins import Switches
from harness.results import meta, runs

META_KEYS = {
    "git_sha",
    "git_dirty",
    "build_profile",
    "python_version",
    "rustc_version",
    "cpu_model",
    "cores_available",
    "cores_used",
    "cpu_affinity",
    "hardware_profile",
    "mode",
    "switches",
    "shell",
    "parameters",
    "start_time",
}


def test_create_run_writes_meta_and_tables(tmp_path):
    sw = Switches("py+rs", {"mmr": "python"})
    run = runs.create_run(
        "my study/1",
        parameters={"c": [1, 2]},
        switches=sw,
        root=tmp_path,
        shell="asgi",
        hardware_profile="xeon-4c",
        profile_satisfied=False,
        cores_used=2,
    )
    assert run.path.parent == tmp_path
    assert re.fullmatch(r"\d{8}T\d{6}Z-my-study-1", run.name)
    m = json.loads((run.path / "meta.json").read_text())
    assert META_KEYS <= set(m)
    assert m["mode"] == "py+rs" and m["switches"]["mmr"] == "python" and m["switches"]["wal"] == "rust"
    assert m["parameters"] == {"c": [1, 2]} and m["shell"] == "asgi" and m["profile_satisfied"] is False
    assert m["cores_available"] == len(m["cpu_affinity"]) and m["cores_used"] == 2
    assert m["run_name"] == "my study/1"

    rows = [{"impl": "python", "n": 100, "rate": 1.5}, {"impl": "rust", "n": 100, "rate": 9.0}]
    p = run.write_table("mmr", rows)
    assert p.suffix == ".parquet"
    df = runs.load_table(run.path, "mmr")
    pd.testing.assert_frame_equal(df, pd.DataFrame(rows))
    assert run.tables() == ["mmr"]
    run.write_json("raw/x.json", {"a": 1})
    assert json.loads((run.path / "raw" / "x.json").read_text()) == {"a": 1}
    run.update_meta(end_time="later")
    assert runs.open_run(run.path).meta["end_time"] == "later"

    second = runs.create_run("my study/1", root=tmp_path)
    assert second.path != run.path
    assert runs.list_runs(tmp_path, "my study/1") == [run.path, second.path]
    assert runs.latest_run(root=tmp_path) == second.path


def test_describe_is_one_line():
    line = meta.describe(meta.collect(hardware_profile="xeon-4c", profile_satisfied=False))
    assert "\n" not in line and "cores" in line and "clamped" in line
