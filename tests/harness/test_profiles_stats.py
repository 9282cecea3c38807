"""Hardware profiles (clamping is recorded), statistics (A/A flags nothing, a slowdown is
flagged), the py-spy raw parser and the results schema: no servers, fast."""

from __future__ import annotations

import pandas as pd
import pytest

from gateway.errors import ConfigError
from harness.infra.profiles import parse_cpu_list, resolve
from harness.infra.sweep import parse_concurrency
from harness.results import schema
from harness.results.stats import bootstrap_ci, compare_tables, mann_whitney, summarize


def test_xeon_4c_is_clamped_on_two_cores_and_says_so():
    p = resolve("xeon-4c", cpus=[0, 1])
    assert p.profile_satisfied is False
    assert p.gateway_cpus == [0] and p.mock_cpus == [1] and p.load_cpus == [1]
    assert any("instead of 4" in n for n in p.notes)
    assert "CLAMPED" in p.line()
    assert p.to_dict()["available_cpus"] == [0, 1]


def test_xeon_4c_is_satisfied_on_eight_cores():
    p = resolve("xeon-4c", cpus=list(range(8)))
    assert p.profile_satisfied is True
    assert p.gateway_cpus == [0, 1, 2, 3]
    assert set(p.mock_cpus).isdisjoint(p.gateway_cpus) and set(p.load_cpus).isdisjoint(p.gateway_cpus)
    assert sorted(p.mock_cpus + p.load_cpus) == [4, 5, 6, 7]


def test_ci_all_custom_and_one_core():
    assert resolve("ci-2c", cpus=[0, 1]).profile_satisfied is True
    a = resolve("all", cpus=[0, 1, 2])
    assert a.gateway_cpus == a.mock_cpus == a.load_cpus == [0, 1, 2]
    c = resolve("gateway=0;mock=1;load=1", cpus=[0, 1])
    assert (c.gateway_cpus, c.mock_cpus, c.load_cpus, c.profile_satisfied) == ([0], [1], [1], True)
    c = resolve("gateway=0-3;mock=4;load=5", cpus=[0, 1])
    assert c.profile_satisfied is False and c.gateway_cpus == [0, 1]
    assert any("not available" in n for n in c.notes)
    one = resolve("xeon-4c", cpus=[3])
    assert one.profile_satisfied is False and one.gateway_cpus == one.mock_cpus == [3]


def test_bad_profiles_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown hardware profile"):
        resolve("nope", cpus=[0, 1])
    with pytest.raises(ConfigError, match="unknown role"):
        resolve("gateway=0;db=1", cpus=[0, 1])
    with pytest.raises(ConfigError, match="bad CPU list"):
        parse_cpu_list("0-x")
    assert parse_cpu_list("0-2,5") == [0, 1, 2, 5]


def test_concurrency_ranges_and_lists():
    assert parse_concurrency("1..16") == list(range(1, 17))
    assert parse_concurrency("1,2,4,8,16") == [1, 2, 4, 8, 16]
    assert parse_concurrency("1..3,8") == [1, 2, 3, 8]
    assert parse_concurrency(range(1, 5)) == [1, 2, 3, 4]
    for bad in ("0..4", "a", "4..1", ""):
        with pytest.raises(ConfigError):
            parse_concurrency(bad)


def test_mann_whitney_and_bootstrap():
    assert mann_whitney([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    assert mann_whitney([1, 2, 3], [1, 2, 3]) == 1.0
    assert mann_whitney(list(range(30)), list(range(100, 130))) < 1e-6
    lo, hi = bootstrap_ci([1.0, 1.1, 0.9, 1.05])
    assert lo <= 1.0125 <= hi
    s = summarize([3, 1, 2, float("nan")])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)


def _cells(scale: float, seed: int, noise: float = 0.03) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for mode in ("py", "py+rs"):
        for c in (1, 2, 4, 8):
            for r in range(3):
                f = 1 + rng.uniform(-noise, noise)
                rps = 1000 * min(c, 4) / scale * f
                rows.append(
                    dict(
                        mode=mode,
                        switches="",
                        shell="asgi",
                        concurrency=c,
                        repeat=r,
                        status="ok",
                        rps=rps,
                        lat_p50_us=c / rps * 1e6,
                        lat_p99_us=2 * c / rps * 1e6,
                    )
                )
    return schema.frame("cells", rows)


def test_compare_aa_flags_nothing_and_flags_a_slowdown():
    # 3x slower: beyond every throughput/latency threshold (harness.results.stats.FACTORS, from the A/A spread)
    a, a2, slow = _cells(1.0, 1), _cells(1.0, 2), _cells(3.0, 3)
    for other in (a, a2):  # the same table, and an independent A/A with noise
        verdicts, _ = compare_tables(a, other)
        assert not [v for v in verdicts if v.flagged], verdicts
    verdicts, per_cell = compare_tables(a, slow)
    by = {v.metric: v for v in verdicts}
    assert by["rps"].verdict == "worse" and by["rps"].factor == pytest.approx(1 / 3, rel=0.05)
    assert by["lat_p50_us"].verdict == "worse" and by["lat_p99_us"].verdict == "worse"
    assert (per_cell[per_cell["metric"] == "rps"]["flag"] == "worse").all()  # disjoint 3 v 3 ranges


def test_sweep_cli_options_map_onto_run_sweep():
    import argparse
    import inspect

    from harness.commands import sweep as cmd
    from harness.infra.sweep import run_sweep

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    kw = cmd.sweep_kwargs(
        p.parse_args(
            [
                "--modes",
                "py,py+rs",
                "--concurrency",
                "1..4",
                "--ci",
                "--impl",
                "mmr=python,wal=rust",
                "--shells",
                "asgi",
                "fastapi",
                "--no-gil",
            ]
        )
    )
    assert kw["modes"] == ("py", "py+rs") and kw["concurrency"] == "1..4" and kw["ci"] is True
    assert (
        kw["switches"] == ["mmr=python,wal=rust"]
        and kw["shells"] == ("asgi", "fastapi")
        and kw["gil"] is False
    )
    assert set(kw) <= set(inspect.signature(run_sweep).parameters)
    kw = cmd.sweep_kwargs(p.parse_args(["--concurrency", "1", "2", "4"]))
    assert parse_concurrency(kw["concurrency"]) == [1, 2, 4] and kw["modes"] == ("py", "py+rs")
