"""Labels that tell the truth, the pieces a sweep decides with (no gateway here; the sweep end
to end is tests/harness/test_sweep_labels.py): the benchmark config's unreachable limits, a
cell's verdict (errors it did not set out to cause fail it), the stages a label claims and the
check of the gateway's counters against them, probes and upstreams as configuration axes, the
governance matrix, and a notebook metric that needs a not-ok cell is missing with its reason."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from gateway import config as cfgmod
from harness.infra import targets
from harness.infra.sweep import (
    Config,
    ExpectedErrors,
    _configs,
    cell_verdict,
    check_stages,
    claimed_stages,
    expected_errors,
)
from harness.peers._base import Governance
from lab_ext.nb import NotMeasured, gated, shown, values_at, write_missing


# --- the benchmark config ---------------------------------------------------------------------
def test_bench_config_gives_the_key_limits_no_run_reaches(tmp_path):
    d = targets.bench_config("http://127.0.0.1:9", "sk-x", tmp_path / "led", ledger={"fsync": "none"})
    cfg = cfgmod.from_mapping(d, env={})
    (key,) = cfg.keys
    assert (key.rpm, key.tpm) == (targets.UNREACHABLE_RPM, targets.UNREACHABLE_TPM)
    assert cfg.fsync == "none" and cfg.ledger_dir == str(tmp_path / "led") and cfg.passthrough
    # far above any load: a full bucket of requests refills at more than 10^10 a second
    assert key.rpm / 60 > 1e10 and key.rpm < 2**53 and key.tpm < 2**53
    # the same YAML every rung reads (rs-server parses the file itself)
    path = targets.write_bench_config(tmp_path / "b.yaml", "http://127.0.0.1:9", "sk-x", tmp_path / "l")
    assert cfgmod.load(path).keys[0].rpm == targets.UNREACHABLE_RPM
    # other limits on request (a test that wants the limiter to refuse)
    low = targets.bench_config("http://h", "k", "l", limits={"rpm": 60, "tpm": 1000})
    assert (low["keys"][0]["rpm"], low["keys"][0]["tpm"]) == (60, 1000)


def test_the_limiter_does_bucket_work_under_the_benchmark_limits(tmp_path):
    """With the benchmark key the Python pipeline counts a rate-limit check per request (a key
    without limits is let through without a bucket, and is not counted)."""
    from gateway.pipeline import Context, Pipeline, Request
    from gateway.twins import Switches

    body = b'{"model":"mock","messages":[{"role":"user","content":"hi"}]}'
    req = Request("POST", "/v1/chat/completions", [(b"authorization", b"Bearer sk-x")], body)
    for limits, counted in ((None, 3), ({"rpm": None, "tpm": None}, 0)):
        d = targets.bench_config("http://127.0.0.1:9", "sk-x", tmp_path / "l")
        if limits is not None:
            d["keys"][0].update(limits)
        cfg = cfgmod.from_mapping(d, env={})
        p = Pipeline(dataclasses.replace(cfg, switches=Switches("py")))
        for i in range(3):
            assert type(p.decide(req, Context(0, i, f"r{i}"))).__name__ == "Forwarding"
        runs = p.stage_runs()
        assert runs["ratelimit"] == counted, (limits, runs)
        assert runs["guard"] == runs["auth"] == runs["parse"] == runs["waf"] == runs["route"] == 3
        assert runs["adapter"] == 3 and runs["forward"] == runs["respond"] == 0


# --- a cell's verdict -------------------------------------------------------------------------
def test_a_cell_with_errors_it_did_not_set_out_to_cause_is_not_ok():
    none = expected_errors({"latency_ms": 0}, "closed")
    assert none == ExpectedErrors(frozenset(), 0.0, "none")
    assert cell_verdict(1000, 1000, {}, none) == ("ok", "")
    status, why = cell_verdict(990, 1000, {"status_4xx": 10}, none, {"200": 990, "429": 10})
    assert status == "failed"
    assert "unexpected errors: 10 of 1000" in why and "status_4xx: 10" in why and "429 x10" in why
    status, why = cell_verdict(0, 5, {"connect": 5}, none)
    assert status == "failed" and why.startswith("no successful requests")


def test_injected_upstream_errors_are_expected_up_to_their_share():
    inj = expected_errors({"error_status": 503, "error_rate": 0.1}, "closed")
    assert inj.kinds == {"status_5xx"} and inj.share == pytest.approx(0.1)
    assert cell_verdict(900, 1000, {"status_5xx": 100}, inj)[0] == "ok"
    # far more than injected: the gateway fails on its own
    status, why = cell_verdict(500, 1000, {"status_5xx": 500}, inj)
    assert status == "failed" and "more than the 10.0%" in why
    # another kind than the injected one
    assert cell_verdict(900, 1000, {"status_5xx": 90, "status_4xx": 10}, inj)[0] == "failed"
    # a status alone answers every request with it; a 4xx passes through as a 4xx
    assert expected_errors({"error_status": 429}, "closed").kinds == {"status_4xx"}
    drops = expected_errors({"drop_rate": 0.05}, "closed")
    assert drops.kinds == {"status_5xx"} and drops.share == pytest.approx(0.05)


def test_an_open_loop_ladder_expects_overload_but_not_client_errors():
    ladder = expected_errors({}, "open")
    assert ladder.share is None and "timeout" in ladder.kinds and "status_5xx" in ladder.kinds
    assert cell_verdict(10, 100, {"timeout": 90}, ladder)[0] == "ok"  # `sustained` judges it
    assert cell_verdict(90, 100, {"status_4xx": 10}, ladder)[0] == "failed"


# --- what a label claims, and the counters' check -----------------------------------------------
def test_the_stages_a_label_claims():
    on = Config("py", (), "asgi")
    assert claimed_stages(on, stream=False) == (
        "guard",
        "auth",
        "parse",
        "waf",
        "route",
        "ratelimit",
        "adapter",
        "forward",
        "respond",
        "audit",
    )
    assert claimed_stages(on, stream=True)[-2:] == ("forward", "audit")  # a stream is relayed
    assert claimed_stages(Config("rs-server", (), "asgi", governance="off"), False) == (
        "guard",
        "forward",
        "respond",
    )
    assert claimed_stages(Config("py", (), "asgi", governance="audit-only"), False) == (
        "guard",
        "forward",
        "respond",
        "audit",
    )
    assert claimed_stages(Config("noveum", (), "-", "peer", "shipped"), False) == ()


def test_a_claimed_stage_that_did_not_run_fails_the_check():
    claimed = claimed_stages(Config("py", (), "asgi"), False)
    runs = dict.fromkeys(claimed, 500)
    assert check_stages(claimed, runs, 500, 500) == (True, ", ".join(f"{s}=500" for s in claimed))
    ok, why = check_stages(claimed, {**runs, "ratelimit": 0}, 500, 500)
    assert not ok and "ratelimit ran 0 times for 500 successful answers" in why
    ok, why = check_stages(claimed, {k: v for k, v in runs.items() if k != "waf"}, 500, 500)
    assert not ok and "waf: no gateway_stage_runs_total" in why
    ok, why = check_stages(claimed, {**runs, "auth": 1000}, 500, 500)  # twice per request
    assert not ok and "auth ran 1000 times for 500 requests sent" in why
    # expected upstream failures: the decide stages ran for every request, respond only for answers
    assert check_stages(claimed, {**runs, "guard": 520, "respond": 500}, 500, 520)[0]


# --- probes and upstreams as configuration axes --------------------------------------------------
def test_views_get_cells_of_their_own_and_only_where_there_is_an_interpreter():
    cfgs = _configs(["py", "rs-server"], None, ["asgi"], gil=True)
    assert [(c.mode, c.probes) for c in cfgs] == [("py", "off"), ("py", "on"), ("rs-server", "off")]
    assert cfgs[1].key(4) == "py||asgi|probes=on|c=4" and cfgs[0].key(4) == "py||asgi|c=4"
    assert [c.probes for c in _configs(["py", "py+rs"], None, ["asgi"])] == ["off", "off"]


def test_upstreams_alternate_inside_a_repeat():
    cfgs = _configs(["py", "py+rs"], None, ["asgi"], upstreams=("fast", "slow"))
    assert [(c.mode, c.upstream) for c in cfgs] == [
        ("py", "fast"),
        ("py", "slow"),
        ("py+rs", "fast"),
        ("py+rs", "slow"),
    ]
    assert cfgs[1].key(2) == "py||asgi|up=slow|c=2" and "-upslow" in cfgs[1].stem


def test_a_switch_set_that_changes_nothing_is_not_measured_twice():
    sets = [{}, {"waf": "rust"}, {"mmr": "rust"}]
    cfgs = _configs(["py", "py+rs", "rs-core"], sets, ["asgi"])
    assert [(c.mode, c.switches_label) for c in cfgs] == [
        ("py", ""),
        ("py", "waf=rust"),
        ("py", "mmr=rust"),
        ("py+rs", ""),
        ("rs-core", ""),
    ]
    # a set given alone keeps its label, even when it is the mode's own choice
    assert [c.switches_label for c in _configs(["py"], ["mmr=python"], ["asgi"])] == ["mmr=python"]


# --- the governance matrix ------------------------------------------------------------------------
def test_every_target_says_what_it_runs():
    on = targets.rung_governance("all", True)
    assert (on.auth, on.waf, on.ratelimit, on.ledger, on.tracing) == (True, True, True, True, False)
    assert on.label() == "auth+waf+ratelimit+ledger" and "fsync group" in on.notes
    off = targets.rung_governance("none", False)
    assert off.label() == "none" and off.notes == "passthrough: guard only"
    assert not targets.rung_governance("all", True, fsync="none").ledger  # a ledger never fsynced
    peers = {n: t.governance for n, t in targets.TARGETS.items() if targets.kind(t) == "peer"}
    assert set(peers) >= {"litellm", "litellm-rust", "litellm-chat", "portkey", "noveum"}
    for name, g in peers.items():
        assert isinstance(g, Governance) and g.notes, name
        assert not (g.waf or g.ratelimit or g.ledger), name  # none runs these as we start it
    assert peers["litellm"].auth and not peers["portkey"].auth and not peers["noveum"].auth
    assert set(on.columns()) == {f"gov_{f}" for f in Governance.FEATURES} | {"governance_notes"}


# --- a notebook metric from a not-ok cell -------------------------------------------------------
def _cells():
    rows = [
        {"label": "py", "concurrency": 16, "status": "ok", "error": "", "rps": 1000.0},
        {
            "label": "py+rs",
            "concurrency": 16,
            "status": "failed",
            "error": "unexpected errors: 12 of 900 requests (status_4xx: 12; the gateway answered 429 x12)",
            "rps": 2400.0,  # measured, but the cell is not ok: never read
        },
    ]
    return pd.DataFrame(rows)


def test_a_metric_that_needs_a_not_ok_cell_is_missing_with_the_reason(tmp_path):
    from harness.notebooks import metric

    cells = _cells()
    with pytest.raises(NotMeasured, match="429 x12"):
        values_at(cells, "py+rs", 16, "rps")
    metrics, missing = {}, {}

    def ratio():
        a, b = values_at(cells, "py+rs", 16, "rps"), values_at(cells, "py", 16, "rps")
        return metric(a[0] / b[0])

    gated(metrics, missing, "pyrs_over_py_rps_c16", ratio)
    gated(metrics, missing, "py_rps", lambda: metric(values_at(cells, "py", 16, "rps")[0]))
    assert "pyrs_over_py_rps_c16" not in metrics and "429 x12" in missing["pyrs_over_py_rps_c16"]
    assert metrics["py_rps"]["value"] == 1000.0
    assert shown(lambda: "x" if values_at(cells, "py+rs", 16, "rps") else "").startswith("not measured:")
    table = write_missing(tmp_path, missing)
    assert list(table["metric"]) == ["pyrs_over_py_rps_c16"]
    assert "429" in (tmp_path / "metrics_missing.json").read_text()


def test_the_gate_reports_a_missing_metric_as_a_failure(tmp_path):
    """What the regression check does with a metric the notebook left out (harness.notebooks)."""
    from harness.notebooks import check_results, write_metrics

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "nb.json").write_text(
        '{"notebook": "nb", "checks": [{"metric": "m", "op": ">=", "rule": "exact", "tier": "timing", "threshold": 1.0}]}'
    )
    write_metrics(tmp_path / "res" / "nb", "nb", "ci", {"other": 2.0})
    (check,) = check_results(tmp_path / "res", tmp_path / "base", runs_dir=tmp_path / "none")
    assert not check.ok and check.value is None and "missing" in check.message()
    # the notebook's reason, when it wrote one, is what the failure says
    (tmp_path / "res" / "nb" / "metrics_missing.json").write_text(
        '{"m": "the py cell failed: upstream reset"}'
    )
    (check,) = check_results(tmp_path / "res", tmp_path / "base", runs_dir=tmp_path / "none")
    assert not check.ok and "upstream reset" in check.message()
