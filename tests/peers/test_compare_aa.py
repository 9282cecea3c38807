"""`compare` at a small size: an A/A pair of real sweeps flags nothing unless the machine
itself swung between them, a pair whose B has an injected slowdown (harness.studies.aa:
GATEWAYLAB_INJECT_DELAY_US, calibrated to halve throughput) is never called better and costs
more CPU per request; one repeat can never flag; a run folder without a table and a load run in
which every request failed each give one line and a non-zero exit."""

from __future__ import annotations

import math

import pytest

from harness.cli import main as cli_main
from harness.results import schema
from harness.results.stats import compare_tables
from harness.studies.aa import study


@pytest.mark.slow
def test_aa_pair_flags_nothing_and_the_injected_slowdown_is_caught(tmp_path):
    # Half the throughput, not the study's 20%: at this size (0.6 s windows, one calibration
    # sweep each side) a 20% injection once came out as CPU per request 0.987x in a fresh
    # clone's CI run -- the calibration misjudged on a noisy probe and the pair's noise did the
    # rest. Whether compare catches 20% is the recorded study's question (data/aa), not a
    # single pair's; this test asks that an injected cost shows and is never called better.
    res = study(pairs=1, slowdown=0.5, out=tmp_path, log=lambda *_: None)
    aa, ab = res["aa"][0], res["ab"][0]
    # On a shared machine two sweeps minutes apart can differ machine-wide (req/s 0.66-1.44x in
    # the studies of docs/peers.md), and compare then reports that change. What must hold: a
    # pair whose throughput did not swing flags nothing.
    if abs(math.log(aa["rps_ratio"])) < math.log(1.15):
        assert aa["flagged"] == {}, aa
    assert "better" not in ab["flagged"].values(), ab
    assert ab["cpu_ratio"] > 1.0, ab  # the injected work shows in CPU per request


def _cells(scale: float, repeats: int):
    rows = [
        dict(
            mode="py",
            switches="",
            shell="asgi",
            concurrency=c,
            repeat=r,
            status="ok",
            rps=1000 * c / scale,
            loop="closed",
        )
        for c in (1, 4)
        for r in range(repeats)
    ]
    return schema.frame("cells", rows)


def test_one_repeat_never_flags():
    verdicts, per_cell = compare_tables(_cells(1, 1), _cells(3, 1))
    assert not [v for v in verdicts if v.flagged]
    assert set(per_cell["flag"]) == {"n/a: <3 repeats"}


def test_open_loop_cells_compare_rate_with_rate():
    def cells(scale):
        return schema.frame(
            "cells",
            [
                dict(
                    mode="noveum",
                    switches="",
                    shell="-",
                    concurrency=0,
                    rate=rate,
                    repeat=r,
                    status="ok",
                    loop="open",
                    lat_p50_us=rate * scale + r,
                )
                for rate in (100, 1000)
                for r in range(3)
            ],
        )

    verdicts, per_cell = compare_tables(cells(1), cells(2))
    by = {v.metric: v for v in verdicts}
    assert by["lat_p50_us"].verdict == "worse" and len(per_cell) == 2


def _run(scale: float, direct_scale: float, repeats: int = 3, first_repeat: int = 0):
    """A cells table and its direct baseline: the gateway at 1000*c/scale req/s, the direct
    baseline at 5000*c/direct_scale, with a small repeat-to-repeat spread."""
    cells = schema.frame(
        "cells",
        [
            dict(
                mode="py+rs",
                switches="",
                shell="asgi",
                route="chat",
                concurrency=c,
                repeat=first_repeat + r,
                status="ok",
                loop="closed",
                rps=1000 * c / scale * (1 + 0.01 * r),
            )
            for c in (4, 8, 16)
            for r in range(repeats)
        ],
    )
    base = schema.frame(
        "baseline",
        [
            dict(
                concurrency=c,
                route="chat",
                repeat=first_repeat + r,
                status="ok",
                loop="closed",
                rps=5000 * c / direct_scale * (1 + 0.01 * r),
            )
            for c in (4, 8, 16)
            for r in range(repeats)
        ],
    )
    return cells, base


def test_a_swing_the_direct_baseline_shows_too_is_the_machine_not_the_gateway():
    (a, ba), (b, bb) = _run(1.0, 1.0), _run(1.5, 1.5)  # everything 1.5x slower: the machine
    by = {v.metric: v for v in compare_tables(a, b, base_a=ba, base_b=bb)[0]}
    assert by["rps"].verdict == "same"
    assert by["rps"].factor < 0.7  # the gateway's own ratio is still reported
    by = {v.metric: v for v in compare_tables(a, b)[0]}  # without the baselines it is a change
    assert by["rps"].verdict == "worse"


def test_a_slower_gateway_on_a_steady_machine_is_flagged():
    (a, ba), (b, bb) = _run(1.0, 1.0), _run(2.0, 1.0)  # half the throughput: beyond rps's A/A threshold
    verdicts, per_cell = compare_tables(a, b, base_a=ba, base_b=bb)
    assert {v.metric: v for v in verdicts}["rps"].verdict == "worse"
    rps = per_cell[per_cell["metric"] == "rps"]
    assert rps["direct_ratio"].tolist() == pytest.approx([1.0] * 3)
    assert rps["norm_ratio"].tolist() == pytest.approx([1 / 2.0] * 3)


def test_pool_repeats_renumbers_each_runs_repeats():
    from harness.results.stats import pool_repeats

    pooled = pool_repeats([_run(1.0, 1.0, repeats=1)[0], _run(1.0, 1.0, repeats=2)[0], None])
    assert sorted(set(pooled["repeat"])) == [0, 1, 2] and len(pooled) == 9


def test_compare_pools_comma_separated_runs_per_side(tmp_path, capsys):
    from harness.results.runs import create_run

    def write(name, scale, direct):
        cells, base = _run(scale, direct, repeats=1)
        run = create_run(name, root=tmp_path)
        run.write_table("cells", cells)
        run.write_table("baseline", base)
        return str(run.path)

    a = [write(f"a{i}", 1.0, 1.0) for i in range(3)]
    b = [write(f"b{i}", 2.0, 1.0) for i in range(3)]
    assert cli_main(["compare", a[0], b[0]]) == 0  # one repeat a side: nothing can be flagged
    assert "0 metric(s) flagged" in capsys.readouterr().out
    assert cli_main(["compare", ",".join(a), ",".join(b), "--fail-on-regression"]) == 1
    assert "rps worse" in capsys.readouterr().out


def test_factors_are_derived_from_the_recorded_aa_study():
    """compare's thresholds are the A/A spread of the recorded study, by the one rule."""
    import json
    from pathlib import Path

    from harness.results.stats import FACTORS, METRICS
    from harness.studies.aa import derive_factors

    study = json.loads(
        (Path(__file__).resolve().parents[2] / "data" / "aa" / "20261201-interleaved.json").read_text()
    )
    assert len(study["aa"]) >= 20 and study["protocol"] == "interleaved"
    assert FACTORS == derive_factors(study)
    assert set(FACTORS) == set(METRICS)
    # every recorded A/A move of every metric stays inside its threshold
    for rec in study["aa"]:
        for m, f in rec["factors"].items():
            assert 1 / FACTORS[m] < f < FACTORS[m], (rec["pair"], m, f)


def test_the_pooled_test_catches_what_one_cell_cannot():
    """Three cells of 3 v 3 repeats, each moved 1.3x with overlapping ranges in each cell: no
    cell is significant on its own, the pooled repeats are."""

    def cells(scale):
        return schema.frame(
            "cells",
            [
                dict(
                    mode="py+rs",
                    switches="",
                    shell="asgi",
                    route="chat",
                    concurrency=c,
                    repeat=r,
                    status="ok",
                    loop="closed",
                    cpu_us_per_req=100.0 * scale * (1.0, 1.25, 0.8)[r],
                )
                for c in (4, 8, 16)
                for r in range(3)
            ],
        )

    verdicts, per_cell = compare_tables(cells(1.0), cells(1.3))
    cpu = {v.metric: v for v in verdicts}["cpu_us_per_req"]
    assert set(per_cell[per_cell["metric"] == "cpu_us_per_req"]["flag"]) == {"same"}
    assert cpu.verdict == "worse" and cpu.factor == pytest.approx(1.3)


def test_compare_a_folder_without_a_table_is_one_line(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    assert cli_main(["compare", str(tmp_path / "a"), str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no table 'cells'" in err


@pytest.mark.slow
def test_load_in_which_every_request_failed_exits_non_zero(capsys):
    from harness.infra.native_procs import start_mock

    with start_mock(seed=1) as mock:  # a POST endpoint loaded without --body: every answer is a 4xx
        code = cli_main(
            [
                "load",
                "--url",
                mock.url + "/v1/chat/completions",
                "--concurrency",
                "1",
                "--duration",
                "0.3",
                "--method",
                "POST",
            ]
        )
    captured = capsys.readouterr()
    assert code == 1
    assert "every request failed" in captured.err
