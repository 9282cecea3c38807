"""Native profilers on real processes: a perf flamegraph of the rs-server binary under a short
bounded load (an SVG with frames from our crates, a speedscope file, every thread named); the
missing-tool path in one line (the profiler, the sweep, the CLI, the magic); the flamegraph
tools of every target; and the per-function instructions per request from two real Cachegrind
runs of rs-server (N1 and N2 requests), checked against Valgrind's own cg_diff + cg_annotate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.serving.launch import start_gateway
from harness.infra.native_procs import run_load, start_mock
from harness.infra.targets import PERF, PYSPY, TARGETS, flamegraph_tools
from harness.profilers import cachegrind, perf

pytestmark = pytest.mark.slow

_CPUS = sorted(os.sched_getaffinity(0))
GW_CPUS, AUX_CPUS = [_CPUS[0]], [_CPUS[-1]]
KEY = "sk-gatewaylab-profilers"
CHAT = "/v1/chat/completions"
BODY = {"model": "mock", "messages": [{"role": "user", "content": "Summarise the GIL in one line."}]}
HEADERS = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
OUR_CRATES = re.compile(r"gatewaylab_(core|engine|net|server)::")


@pytest.fixture(scope="module")
def mock():
    with start_mock(cpus=AUX_CPUS, seed=1) as m:
        yield m


def _load(url: str, **how) -> dict:
    return run_load(url + CHAT, body=BODY, headers=HEADERS, cpus=AUX_CPUS, **how)


# ------------------------------------------------------------------ perf


def test_perf_flamegraph_of_rs_server(mock, tmp_path):
    with start_gateway(mock.url, KEY, mode="rs-server", cpus=GW_CPUS) as gw:
        _load(gw.url, concurrency=4, duration_s=0.5)  # warm
        loads = []
        res = perf.record(
            gw.app_pid,
            1.5,
            tmp_path,
            "rs-server",
            rate=99,
            cpus=AUX_CPUS,
            load=lambda: loads.append(_load(gw.url, concurrency=4, duration_s=1.5, timeout_s=5)),
            title="rs-server under load",
        )
    assert res["missing"] is None, res["missing"]
    assert loads and loads[0]["rps"] > 0
    svg = Path(res["svg"]).read_text()
    assert svg.startswith("<?xml") and "<svg" in svg[:500]
    # frames of our crates, named (DWARF unwinding + the release build's line tables)
    assert OUR_CRATES.search(svg), "no gatewaylab_* frame in the flamegraph"
    assert res["label"] == "sampled (perf cpu-clock, 99 Hz)"
    assert res["process"].startswith(f"pid {gw.proc.pid} (") and "gatewaylab-server" in res["process"]
    # the roots are the threads' names; the samples add up
    folded = Path(res["folded"]).read_text().splitlines()
    assert res["samples"] == sum(int(line.rsplit(" ", 1)[1]) for line in folded) > 0
    assert set(res["threads"]) == {line.split(";", 1)[0] for line in folded}
    assert any(t.startswith("gatewaylab-") for t in res["threads"])
    assert res["unwound_share"] >= 0.8, res["unwound_share"]  # fp unwinding would give ~2 frames
    doc = json.loads(Path(res["speedscope"]).read_text())
    assert doc["$schema"] == perf.SPEEDSCOPE_SCHEMA
    assert sum(sum(p["weights"]) for p in doc["profiles"]) == res["samples"]
    assert {p["name"].split(" (")[0] for p in doc["profiles"]} == set(res["threads"])
    assert not list(tmp_path.glob("*.perf.data"))  # the large raw file is not kept


def test_speedscope_from_folded_lines(tmp_path):
    lines = ["main;a;b 3", "main;a 1", "worker;c;b 2", "garbage", "main;[unknown];d 4"]
    doc = json.loads(perf.to_speedscope(lines, tmp_path / "x.json", name="x", rate=99).read_text())
    frames = [f["name"] for f in doc["shared"]["frames"]]
    assert frames == ["a", "b", "c", "[unknown]", "d"]
    main = next(p for p in doc["profiles"] if p["name"].startswith("main "))
    assert main["samples"] == [[0, 1], [0], [3, 4]] and main["weights"] == [3, 1, 4]
    assert main["endValue"] == 8
    assert perf.thread_samples(lines) == {"main": 8, "worker": 2}
    assert perf.unwound_share(lines) == 6 / 10


def test_every_target_has_a_flamegraph_tool():
    for name in TARGETS:
        tools = flamegraph_tools(name)
        assert tools and set(tools) <= {PYSPY, PERF}, (name, tools)
    assert flamegraph_tools("py") == (PYSPY,)
    assert flamegraph_tools("rs-core") == (PYSPY, PERF)  # the Python thread and the Tokio threads
    assert flamegraph_tools("rs-server") == (PERF,)
    assert flamegraph_tools("noveum") == (PERF,)
    assert flamegraph_tools("portkey") == (PERF,)
    assert flamegraph_tools("litellm-chat") == (PYSPY,)


# ------------------------------------------------------------------ the missing-tool path


@pytest.fixture
def no_inferno(monkeypatch):
    real = perf.find
    monkeypatch.setattr(perf, "find", lambda name: None if name.startswith("inferno") else real(name))


def test_missing_inferno_is_one_line(no_inferno, tmp_path):
    why = perf.missing_tools()
    assert why and "\n" not in why and "inferno" in why and "make flame-tools" in why
    res = perf.record(os.getpid(), 0.5, tmp_path, "x")
    assert res["missing"] == why and res["svg"] is None
    assert not list(tmp_path.iterdir())  # nothing recorded


def test_sweep_says_once_when_inferno_is_missing(no_inferno, tmp_path, capsys):
    from harness.cli import main as cli_main

    rc = cli_main(
        [
            "sweep",
            "--targets",
            "rs-server",
            "--concurrency",
            "2",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--no-gil",
            "--flamegraph",
            "--out",
            str(tmp_path),
            "--no-report",
        ]
    )
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith("--flamegraph:")]
    assert len(said) == 1 and "inferno not found" in said[0] and "make flame-tools" in said[0], out
    assert rc == 0
    import pandas as pd

    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    row = pd.read_parquet(run / "cells.parquet").iloc[0]
    assert row["status"] == "ok"
    assert f"perf flamegraph: {perf.missing_tools()}" in row["probes_missing"]
    assert row["perf_flamegraph_svg"] == ""


def test_profile_magic_perf_without_inferno_is_one_line(no_inferno, tmp_path):
    from lab_ext.magics import MagicUsageError, profile_with_perf

    with pytest.raises(MagicUsageError) as e:
        profile_with_perf(None, "pass", tmp_path, os.getpid())
    assert "\n" not in str(e.value) and "make flame-tools" in str(e.value)


# ------------------------------------------------------------------ Cachegrind, per function

N1, N2 = 30, 90


def _cachegrind_life(mock, n: int, workdir: Path) -> list[Path]:
    """rs-server under Cachegrind from start to a graceful exit, serving `n` requests at c = 1;
    the ledger drained (every record written) before it is stopped."""
    out = workdir / f"n{n}"
    out.mkdir(parents=True)
    prefix = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--trace-children=yes",  # gateway/serving/server.py execs the binary: follow it
        f"--cachegrind-out-file={out}/cachegrind.out.%p",
        f"--log-file={out}/valgrind.%p.log",
    ]
    gw = start_gateway(
        mock.url,
        KEY,
        mode="rs-server",
        cpus=GW_CPUS,
        ledger_dir=str(workdir / f"ledger{n}"),
        wrapper=[*prefix, sys.executable, "{script}"],
        ready_timeout=600,
    )
    try:
        r = _load(gw.url, concurrency=1, requests=n, timeout_s=60)
        assert r["requests"] == n and not r["errors"], r
        deadline = time.monotonic() + 120
        while True:
            with urllib.request.urlopen(gw.url + "/audit/root", timeout=60) as a:
                if json.loads(a.read())["count"] >= n or time.monotonic() > deadline:
                    break
            time.sleep(0.5)
    finally:
        assert gw.stop(timeout=300) == 0
    return cachegrind.files_of(out)


@pytest.fixture(scope="module")
def cg_runs(mock, tmp_path_factory):
    work = tmp_path_factory.mktemp("cachegrind")
    return {n: _cachegrind_life(mock, n, work) for n in (N1, N2)}, work


def test_per_function_instructions_per_request(cg_runs):
    runs, work = cg_runs
    view = cachegrind.per_request_functions(runs[N1], runs[N2], N1, N2, target="rs-server")
    assert view.requests == N2 - N1
    fns = view.functions()
    # the per-function differences add up to the processes' total difference, exactly
    assert sum(f.ir_n2 - f.ir_n1 for f in fns) == view.b.summary - view.a.summary
    assert abs(sum(f.ir_per_request for f in fns) - view.per_request) < 1e-6 * view.per_request
    # one request is tens to hundreds of thousands of instructions (not start-up noise)
    assert 10_000 < view.per_request < 5_000_000, view.per_request
    top = view.top(15)
    assert len(top) == 15 and [f.ir_per_request for f in top] == sorted(
        (f.ir_per_request for f in top), reverse=True
    )
    assert any(OUR_CRATES.search(f.function) for f in top), [f.function for f in top]
    assert abs(sum(f.share for f in fns) - 1.0) < 1e-9
    md = view.markdown(15)
    assert md.count("\n| ") == 16 and "exact" in md and f"N1 = {N1}" in md
    rows = view.rows(15)
    assert [r["rank"] for r in rows] == list(range(1, 16)) and rows[0]["label"] == cachegrind.LABEL


def test_a_view_from_counts_read_elsewhere(cg_runs):
    """Counts keyed (file, function), as another reader of the same files keeps them, give
    the same view as the files."""
    from collections import Counter

    runs, _ = cg_runs
    direct = cachegrind.per_request_functions(runs[N1], runs[N2], N1, N2)

    def keyed(prof):
        return Counter({(fl, fn): ir for fn, files in prof.files.items() for fl, ir in files.items()})

    a, b = cachegrind.read(runs[N1]), cachegrind.read(runs[N2])
    view = cachegrind.FunctionView(
        N1,
        N2,
        cachegrind.Profile.from_counts(a.summary, keyed(a)),
        cachegrind.Profile.from_counts(b.summary, keyed(b)),
    )
    assert view.per_request == direct.per_request
    assert [f.as_row() for f in view.top(30)] == [f.as_row() for f in direct.top(30)]


def test_per_function_counts_match_cg_annotate(cg_runs):
    """Valgrind's own tools on the same two files (cg_diff, then cg_annotate listing every
    file:function pair) give the same per-function differences, function by function."""
    runs, work = cg_runs
    (a,), (b,) = runs[N1], runs[N2]
    view = cachegrind.per_request_functions(a, b, N1, N2)
    text = cachegrind.cg_annotate_text(a, b, work, threshold=0)
    theirs: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(-?[\d,]+)\s+(?:\(\s*-?[\d.]+%\)\s+)?(\S[^:]*):(.+)$", line)
        if m:
            theirs[m.group(3)] = theirs.get(m.group(3), 0) + int(m.group(1).replace(",", ""))
    ours = {f.function: f.ir_n2 - f.ir_n1 for f in view.functions()}
    assert len(ours) > 100
    assert {fn: d for fn, d in theirs.items() if d} == ours


def test_icicle_of_the_per_function_view(cg_runs, tmp_path):
    runs, _ = cg_runs
    view = cachegrind.per_request_functions(runs[N1], runs[N2], N1, N2, target="rs-server")
    res = view.write_icicle(tmp_path, "rs-server")
    assert res["missing"] is None and Path(res["svg"]).stat().st_size > 0
    svg = Path(res["svg"]).read_text()
    assert "instructions per request" in svg and "gatewaylab_" in svg
    folded = Path(res["folded"]).read_text().splitlines()
    assert sum(int(x.rsplit(" ", 1)[1]) for x in folded) == sum(
        f.ir_n2 - f.ir_n1 for f in view.functions() if f.ir_n2 > f.ir_n1
    )


def test_module_paths():
    mp = cachegrind.module_path
    assert mp("gatewaylab_core::audit::wal::Wal::append") == [
        "gatewaylab_core",
        "audit",
        "wal",
        "Wal",
        "append",
    ]
    assert mp("<hyper::proto::h1::conn::Conn<I,B,T> as core::ops::drop::Drop>::drop") == [
        "hyper",
        "proto",
        "h1",
        "conn",
        "Conn",
        "drop",
    ]
    assert mp("core::ptr::drop_in_place<gatewaylab_engine::Job>") == [
        "core",
        "ptr",
        "drop_in_place<gatewaylab_engine::Job>",
    ]
    assert mp("__memcpy_avx_unaligned_erms") == ["[no line info]", "__memcpy_avx_unaligned_erms"]
    assert mp("_PyEval_EvalFrameDefault", "Python/ceval.c") == [
        "[Python/ceval.c]",
        "_PyEval_EvalFrameDefault",
    ]


def test_truncated_file_is_refused(tmp_path):
    p = tmp_path / "cachegrind.out.1"
    p.write_text("events: Ir\nfl=a.c\nfn=f\n1 10\n")
    with pytest.raises(cachegrind.CachegrindFileError, match="no summary line"):
        cachegrind.read(p)
    with pytest.raises(cachegrind.CachegrindFileError):
        cachegrind.read(tmp_path / "absent")
    with pytest.raises(Exception, match="N2"):
        cachegrind.per_request_functions(p, p, 10, 10)


def test_cachegrind_files_are_valgrind_output(cg_runs):
    runs, _ = cg_runs
    for files in runs.values():
        prof = cachegrind.read(files)
        assert prof.events.split()[0] == "Ir" and prof.summary > 0
        assert any("gatewaylab-server" in c for c in prof.commands), prof.commands
        r = subprocess.run(["cg_annotate", "--auto=no", str(files[0])], capture_output=True, text=True)
        assert r.returncode == 0 and f"{prof.summary:,}" in r.stdout


def test_report_lists_the_flamegraphs_by_path():
    import pandas as pd

    from harness.results.report import _flamegraphs_md

    cells = pd.DataFrame(
        [
            {
                "cell": "rs-core||asgi|c=8",
                "repeat": 0,
                "flamegraph_svg": "flamegraphs/a.svg",
                "flamegraph_label": "sampled (py-spy --native, 100 Hz); pid 1; the Python threads",
                "perf_flamegraph_svg": "flamegraphs/a.perf.svg",
                "perf_flamegraph_label": "sampled (perf cpu-clock, 100 Hz); 10 samples",
            },
            {"cell": "py||asgi|c=8", "repeat": 0, "flamegraph_svg": "", "perf_flamegraph_svg": ""},
        ]
    )
    md = "\n".join(_flamegraphs_md(cells))
    assert md.count("\n| rs-core\\|\\|asgi\\|c=8 | 0 |") == 2
    assert "`flamegraphs/a.perf.svg` | sampled (perf cpu-clock, 100 Hz)" in md and "py\\|" not in md
    assert _flamegraphs_md(cells.iloc[1:]) == []
