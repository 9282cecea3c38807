"""The worker axis of a sweep (harness/infra/sweep.py `workers`; docs/workers.md): every rung runs
with 1 and N gateway processes, the cells table says how many and where, and a placement
the machine cannot give (workers sharing cores with each other or with the mock and the
load generator) is recorded per cell and on the report's figures."""

from __future__ import annotations

import pandas as pd

from harness.infra.profiles import place_workers, resolve
from harness.infra.sweep import run_sweep


def test_worker_axis_in_cells_with_clamping_recorded(tmp_path):
    r = run_sweep(
        modes=("py",),
        workers=(1, 2),
        concurrency=(4,),
        duration_s=0.8,
        warmup_s=0.2,
        repeat=1,
        gil=True,  # each worker's own in-gateway views, in the view cells
        capacity=False,
        progress=False,
        out=tmp_path,
        report_images=False,
        name="w",
    )
    t = r.table[r.table["probes"] == "off"].set_index("workers")
    assert sorted(t.index) == [1, 2] and (t["status"] == "ok").all(), t[["status", "error"]]
    assert t.loc[2, "cell"].endswith("|w=2|c=4") and "|w=" not in t.loc[1, "cell"]
    placement = place_workers(resolve("xeon-4c"), 2)
    assert bool(t.loc[2, "clamped"]) == (not placement.satisfied)
    for note in placement.notes:
        if not note.startswith("profile: "):
            assert note in t.loc[2, "clamp_notes"]
    assert t.loc[2, "worker_cpus"].startswith("w0:")
    w = pd.read_parquet(r.dir / "workers.parquet")
    views = w[w["cell"].str.contains("probes=on")]
    assert views["loop_lag_p99_us"].notna().all()  # each worker's own in-gateway view
    assert w[~w["cell"].str.contains("probes=on")]["loop_lag_p99_us"].isna().all()  # none in throughput
    w = views
    per = w.groupby("workers")["worker"].nunique()
    assert per.loc[1] == 1 and per.loc[2] == 2
    two = w[w["workers"] == 2]
    assert two["pid"].nunique() == 2 and (two["cpu_cores"] > 0).all()  # each worker did work
    md = (r.dir / "report.md").read_text()
    assert "workers 2: cpus" in md
    if t.loc[2, "clamped"]:
        assert "**clamped**" in md and "w=2 (clamped)" in md


def test_placement_on_a_small_machine_is_labelled():
    p = resolve("xeon-4c", cpus=[0, 1])
    two = place_workers(p, 2)
    assert two.cpus == [[0], [1]] and not two.satisfied
    assert any("shared with the mock and the load generator" in n for n in two.notes)
    four = place_workers(resolve("xeon-4c", cpus=list(range(8))), 4)
    assert four.cpus == [[0], [1], [2], [3]] and four.satisfied and not four.notes
