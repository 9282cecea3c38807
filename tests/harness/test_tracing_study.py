"""harness.studies.tracing_study end to end at a tiny size: a sweep with `tracing` as an axis (the
sweep's own OTLP receiver takes the spans), the `tracing` column and cell keys, and the cost
table's per-repeat ratios against the same rung untraced (figures live in reports, not here)."""

from __future__ import annotations

import math

import pytest

from harness.results import schema
from harness.studies.tracing_study import tracing_cost

pytestmark = pytest.mark.slow


def test_tracing_cost_table(tmp_path):
    study = tracing_cost(
        modes=("py", "rs-server"),
        tracing=("on",),
        concurrency=2,
        duration_s=1.0,
        warmup_s=0.3,
        repeat=1,
        out=tmp_path,
        profile="ci-2c",
    )
    cells = study.run.table
    assert schema.validate("cells", cells) == []
    assert (cells["status"] == "ok").all(), cells[["cell", "status", "error"]].to_string()
    assert sorted(zip(cells["mode"], cells["tracing"])) == [
        ("py", "off"),
        ("py", "on"),
        ("rs-server", "off"),
        ("rs-server", "on"),
    ]
    assert set(cells[cells["tracing"] == "on"]["cell"]) == {
        "py||asgi|trace=on|c=2",
        "rs-server||-|trace=on|c=2",
    }
    t = study.table
    assert list(zip(t["mode"], t["tracing"])) == [
        ("py", "off"),
        ("py", "on"),
        ("rs-server", "off"),
        ("rs-server", "on"),
    ]
    assert (t[t["tracing"] == "off"]["cpu_us_per_req_ratio"] == 1.0).all()
    on = t[t["tracing"] == "on"]
    assert all(math.isfinite(v) and v > 0 for v in on["cpu_us_per_req_ratio"])
    assert "| rs-server | on |" in study.markdown()
    assert [bar.name for bar in study.figure().data] == ["tracing on"]
