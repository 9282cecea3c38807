"""`gatewaylab bench spawn`: the real `_spawn_background` timed beside a bare create_task."""

from __future__ import annotations

import json

from harness.bench import spawn
from harness.cli import main as cli_main


def test_spawn_measures_both_sides_in_one_run(tmp_path):
    res = spawn.measure(rounds=2, calls=200, quick=True, pyperf_json=str(tmp_path / "spawn.pyperf.json"))
    rows = {r["what"]: r for r in res["rows"]}
    assert set(rows) == {"spawn_background", "create_task"}
    for r in rows.values():
        assert r["calls"] == 400
        assert 0 < r["p50_us"] <= r["p99_us"]
        assert r["p50_min_us"] <= r["p50_max_us"]
    assert res["ratio_p50"]["min"] <= res["ratio_p50"]["median"] <= res["ratio_p50"]["max"]
    assert res["records_appended"] == 400  # every spawned job reached the ledger
    assert (tmp_path / "spawn.pyperf.json").exists()
    assert "spawn_background / create_task" in spawn.markdown(res)


def test_spawn_cli_json(tmp_path, capsys):
    out = tmp_path / "spawn.json"
    assert cli_main(["bench", "spawn", "--quick", "--rounds", "2", "--calls", "100", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["what"] for r in data["rows"]} == {"spawn_background", "create_task"}
    assert "| `spawn_background` |" in capsys.readouterr().out
