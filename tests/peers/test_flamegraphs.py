"""`sweep --flamegraph` on every kind of process (`make test` installs the peers first): py-spy on
the Python threads and perf on every thread, per `harness.infra.targets.flamegraph_tools`. rs-core
gets both (its Python thread, and its Tokio and ledger threads), rs-server and Noveum (native
binaries) and Portkey (node, its JIT named through node's perf map) get perf, LiteLLM (Python)
gets py-spy; each flamegraph carries its label (sampled, rate, process, threads)."""

from __future__ import annotations

import re

import pytest

from harness.infra.sweep import run_sweep
from harness.infra.targets import PERF, PYSPY, flamegraph_tools

pytestmark = pytest.mark.slow

TARGETS = ["rs-core", "rs-server", "noveum", "portkey", "litellm-chat"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return run_sweep(
        targets=TARGETS,
        concurrency=(4,),
        profile="xeon-4c",
        duration_s=1.0,
        warmup_s=0.3,
        repeat=1,
        gil=False,
        flamegraph=True,
        capacity=False,
        report=False,
        progress=False,
        out=tmp_path_factory.mktemp("flamegraphs"),
        name="flamegraphs",
    )


def _row(sweep, target):
    t = sweep.table
    row = t[t["mode"] == target].iloc[0]
    assert row["status"] == "ok", row["error"]
    return row


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_has_its_flamegraphs(sweep, target):
    row = _row(sweep, target)
    tools = flamegraph_tools(target)
    assert "flamegraph:" not in row["probes_missing"] and "perf flamegraph:" not in row["probes_missing"], (
        row["probes_missing"]
    )
    if PYSPY in tools:
        svg = sweep.dir / row["flamegraph_svg"]
        assert "<svg" in svg.read_text()[:2000]
        assert (sweep.dir / row["speedscope_json"]).stat().st_size > 0
        assert row["flamegraph_label"].startswith("sampled (py-spy --native, ")
        assert f"pid {int(row['gateway_pid'])}" in row["flamegraph_label"]
    else:
        assert row["flamegraph_svg"] == "" and row["flamegraph_label"] == ""
    if PERF in tools:
        svg = (sweep.dir / row["perf_flamegraph_svg"]).read_text()
        assert "<svg" in svg[:2000]
        assert (sweep.dir / row["perf_speedscope_json"]).stat().st_size > 0
        label = row["perf_flamegraph_label"]
        assert label.startswith("sampled (perf cpu-clock, ") and " samples" in label and "threads: " in label
    else:
        assert row["perf_flamegraph_svg"] == ""


def test_rs_server_frames_are_our_crates(sweep):
    row = _row(sweep, "rs-server")
    svg = (sweep.dir / row["perf_flamegraph_svg"]).read_text()
    assert re.search(r"gatewaylab_(core|engine|net|server)::", svg)
    assert "flamegraph (py-spy): not applicable (no interpreter)" in row["probes_missing"]


def test_rs_core_native_threads_are_in_the_perf_graph(sweep):
    row = _row(sweep, "rs-core")
    label = row["perf_flamegraph_label"]
    # the Tokio threads and the ledger thread beside the Python thread
    assert "gatewaylab-rs-c" in label and "gatewaylab-ledg" in label, label
    svg = (sweep.dir / row["perf_flamegraph_svg"]).read_text()
    assert "gatewaylab_core::" in svg


def test_noveum_frames_are_named(sweep):
    row = _row(sweep, "noveum")
    svg = (sweep.dir / row["perf_flamegraph_svg"]).read_text()
    assert "noveum_ai_gateway::" in svg and "tokio" in svg


def test_portkey_js_frames_are_named(sweep):
    row = _row(sweep, "portkey")
    folded = (sweep.dir / row["perf_flamegraph_svg"]).with_suffix(".folded").read_text()
    # node --perf-basic-prof: JIT frames carry the JS function and its file:line, not an address
    assert re.search(r"JS:[^;]* (node:|file:|/)[^;]*:\d+:\d+_\[j\]", folded), folded[:2000]
    assert "perf-basic-prof" in row["perf_flamegraph_label"]
