"""`gatewaylab verdicts`: a cell judged by the label rules now and before, from its own numbers
(harness.results.verdicts), on tables shaped like a sweep's cells table."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.cli import main
from harness.results import verdicts as V


def _cell(**kw):
    row = dict(
        run_id="r1",
        cell="c",
        mode="py",
        governance="on",
        concurrency=16,
        rate=None,
        repeat=0,
        status="ok",
        error="",
        requests=900,
        errors=0,
        error_share=0.0,
        cpu_user_s=0.8,
        cpu_sys_s=0.1,
        rps=300.0,
        gov_ratelimit=True,
        stage_runs=None,
    )
    row.update(kw)
    if row["stage_runs"] is None:
        n = row["requests"] or 0
        runs = {"guard": n, "auth": n} | ({"ratelimit": n} if row["gov_ratelimit"] else {})
        row["stage_runs"] = json.dumps(runs)
    row["cpu_us_per_req"] = (
        (row["cpu_user_s"] + row["cpu_sys_s"]) / row["requests"] * 1e6 if row["requests"] else None
    )
    return row


def _run(tmp_path, name, rows):
    d = tmp_path / name
    d.mkdir()
    pd.DataFrame(rows).to_parquet(d / "cells.parquet")
    return d


def test_a_cell_failed_by_the_new_rules_was_ok_before_and_its_cpu_counted_failures(tmp_path):
    rows = [
        _cell(cell="clean"),
        _cell(
            cell="errors",
            status="failed",
            error="unexpected errors: 100 of 1000 requests (timeout: 100); the cell set out to cause: none",
            errors=100,
            error_share=0.1,
        ),
        _cell(cell="stages", status="failed", error="stage check: claimed stages that did not run ..."),
        _cell(
            cell="none-ok",
            status="failed",
            error="no successful requests (5 errors: {})",
            requests=0,
            errors=5,
        ),
        _cell(cell="crashed", status="failed", error="TimeoutError: gateway did not start", requests=None),
    ]
    j = V.judge(V.cell_tables([_run(tmp_path, "a", rows)]))
    by = {r["status"] + ":" + str(r["error"])[:6]: r for r in j.to_dict("records")}
    assert len(j) == 5
    assert j["verdict_changed"].sum() == 2  # the errors cell and the stage-check cell
    err = by["failed:unexpe"]
    assert err["status_before"] == "ok"
    # 900 answers of 1000 finished: before, the CPU was spread over 1000 requests
    assert err["cpu_us_per_req_before"] == pytest.approx(0.9 / 1000 * 1e6)
    assert err["cpu_ratio"] == pytest.approx(1000 / 900)
    assert by["failed:stage "]["status_before"] == "ok"
    assert by["failed:no suc"]["status_before"] == "failed"  # no answer: failed under both
    assert by["failed:Timeou"]["status_before"] == "failed"
    assert by["ok:"]["cpu_ratio"] == pytest.approx(1.0) and not by["ok:"]["verdict_changed"]


def test_limiter_pairs_set_on_beside_on_unlimited_of_the_same_run(tmp_path):
    rows = [_cell(governance="on", repeat=r, rps=95.0 + r, gov_ratelimit=True) for r in range(3)] + [
        _cell(governance="on-unlimited", repeat=r, rps=100.0, cpu_user_s=0.7, gov_ratelimit=False)
        for r in range(3)
    ]
    d = _run(tmp_path, "pairs", rows)
    pairs = V.limiter_pairs(V.cell_tables([d]))
    assert len(pairs) == 3
    assert list(pairs["rps_ratio"]) == pytest.approx([0.95, 0.96, 0.97])
    assert pairs["cpu_ratio"].iloc[0] == pytest.approx(0.9 / 0.8)
    s = V.summary(V.judge(V.cell_tables([d])), pairs)
    (lim,) = s["limiter"]
    assert lim["pairs"] == 3 and lim["rps_ratio_median"] == pytest.approx(0.96)
    assert lim["rps_ratio_min"] == pytest.approx(0.95) and lim["status_changed"] == 0
    # the unlimited cells' limiter consulted no bucket: the old "on" label's claim fails on each
    assert lim["on_label_fails"] == 3 and lim["ratelimit_runs_unlimited"] == 0
    assert not pairs["on_label_holds_unlimited"].any()
    assert "req/s on / unlimited" in V.markdown(s)


def test_a_notebook_folder_repeating_its_sweep_table_counts_each_cell_once(tmp_path):
    top = _run(tmp_path, "nb", [_cell()])
    sub = top / "sweep"
    sub.mkdir()
    pd.DataFrame([_cell()]).to_parquet(sub / "cells.parquet")
    assert len(V.judge(V.cell_tables([top]))) == 1


def test_the_command_prints_the_counts_writes_json_and_refuses_a_folder_without_cells(tmp_path, capsys):
    d = _run(
        tmp_path,
        "a",
        [_cell(), _cell(cell="e", status="failed", error="errors on 9.00% of ...", error_share=0.09)],
    )
    out = tmp_path / "v.json"
    assert main(["verdicts", str(d), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "verdict changed: 1" in text and "| py | on | 16 |" in text
    s = json.loads(out.read_text())
    assert s["cells"] == 2 and s["verdict_changed"] == 1 and s["with_errors"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verdicts", str(empty)]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("gatewaylab verdicts: error:")
        and "no cells.parquet" in err
        and len(err.splitlines()) == 1
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cells.parquet").write_bytes(b"not parquet")
    assert main(["verdicts", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "not a readable cells table" in err and len(err.splitlines()) == 1
    assert main(["verdicts", str(d), "--json", str(tmp_path / "missing" / "v.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gatewaylab verdicts: error: --json") and len(err.splitlines()) == 1
