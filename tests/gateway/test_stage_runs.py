"""Every rung exports how many times each stage ran (`gateway_stage_runs_total{stage}` on
/metrics: the pipeline twins' own counters, plus the audit records written), the same names on
each: on the benchmark config (the key's limits far above the load) every stage, the rate
limiter included, runs once per request; a passthrough (`--stages none --audit off`) runs the
guard, the forward and the respond only; a streamed answer is forwarded, not responded; a
rejected request stops the count where it stopped."""

from __future__ import annotations

import time

import pytest

from gateway.pipeline import RUN_STAGES
from gateway.twins import MODES
from harness.infra.sweep import read_counters
from harness.infra.targets import write_bench_config
from tests.gateway.helpers import API_KEY, auth, chat_body, http

N = 12
DECIDE = ("guard", "auth", "parse", "waf", "route", "ratelimit", "adapter")


def _runs_when_audited(url: str, n: int, timeout_s: float = 15.0) -> dict[str, int]:
    """The counters once `n` audit records are written (the audit follows the answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = read_counters(url)["stage_runs"]
        if runs.get("audit", 0) >= n or time.monotonic() > deadline:
            return runs
        time.sleep(0.05)


@pytest.mark.parametrize("mode", list(MODES))
def test_every_stage_runs_once_per_request_on_the_benchmark_config(
    mode, native_mock, gateway_factory, tmp_path
):
    cfg = write_bench_config(tmp_path / "bench.yaml", native_mock.url, API_KEY, tmp_path / "ledger")
    gw = gateway_factory(None, config=cfg, mode=mode)
    before = read_counters(gw.url)["stage_runs"]
    assert set(before) == {*RUN_STAGES, "audit"} and not any(before.values()), before
    for _ in range(N):
        assert http("POST", gw.url + "/v1/chat/completions", chat_body(), auth())[0] == 200
    runs = _runs_when_audited(gw.url, N)
    assert {s: runs[s] for s in DECIDE} == dict.fromkeys(DECIDE, N), runs
    assert (runs["forward"], runs["respond"], runs["audit"]) == (N, N, N), runs
    # a stream is forwarded and relayed, not responded
    status, _, body = http("POST", gw.url + "/v1/chat/completions", chat_body(stream=True), auth())
    assert status == 200 and b"[DONE]" in body
    runs = _runs_when_audited(gw.url, N + 1)
    assert (runs["guard"], runs["forward"], runs["respond"], runs["audit"]) == (N + 1, N + 1, N, N + 1)
    # a wrong key stops after auth: nothing past it runs, nothing is audited
    assert http("POST", gw.url + "/v1/chat/completions", chat_body(), auth("sk-wrong"))[0] == 401
    after = read_counters(gw.url)["stage_runs"]
    assert (after["guard"], after["auth"], after["parse"], after["audit"]) == (N + 2, N + 2, N + 1, N + 1)
    statuses = read_counters(gw.url)["statuses"]
    assert (statuses["200"], statuses["401"]) == (N + 1, 1), statuses


@pytest.mark.parametrize("mode", list(MODES))
def test_a_passthrough_runs_the_guard_and_the_forward_only(mode, native_mock, gateway_factory, tmp_path):
    cfg = write_bench_config(tmp_path / "bench.yaml", native_mock.url, API_KEY, tmp_path / "ledger")
    gw = gateway_factory(None, config=cfg, mode=mode, stages="none", audit="off")
    for _ in range(N):
        assert http("POST", gw.url + "/v1/chat/completions", chat_body(), auth())[0] == 200
    runs = read_counters(gw.url)["stage_runs"]
    assert runs == {**dict.fromkeys(RUN_STAGES, 0), "guard": N, "forward": N, "respond": N, "audit": 0}, runs


@pytest.mark.parametrize("mode", ["py", "rs-server"])
def test_limits_that_are_reached_refuse_with_429(mode, native_mock, gateway_factory, tmp_path):
    """The same config with low limits: the limiter refuses (what a run that reached the
    benchmark limits would see, counted as errors by the sweep)."""
    cfg = write_bench_config(
        tmp_path / "low.yaml", native_mock.url, API_KEY, tmp_path / "ledger", limits={"rpm": 3, "tpm": 10_000}
    )
    gw = gateway_factory(None, config=cfg, mode=mode)
    got = [http("POST", gw.url + "/v1/chat/completions", chat_body(), auth())[0] for _ in range(5)]
    assert got == [200, 200, 200, 429, 429]
    runs = read_counters(gw.url)["stage_runs"]
    assert runs["ratelimit"] == 5 and runs["adapter"] == 3 and runs["forward"] == 3
