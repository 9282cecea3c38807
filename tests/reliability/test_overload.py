"""Admission control on every rung: at most `limits.max_in_flight` chat requests are served at
once; beyond it the answer is 503 `overloaded` (OpenAI-shaped, with Retry-After) at once,
never forwarded upstream, never audited, counted in /metrics `gateway_requests_shed_total`,
and the gateway goes on serving. Then one small overload step of `gatewaylab soak --scenario
overload` with a slow upstream: what is admitted is answered and in the ledger."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from gateway.serving.launch import start_gateway
from gateway.stages.auth import hash_key
from harness.infra import soak
from tests.reliability.rungs import RUNGS

KEY = "sk-gatewaylab-overload"
BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "overload"}]}).encode()
pytestmark = pytest.mark.slow
LIMIT = 2
LATENCY_MS = 400


@pytest.fixture(scope="module")
def slow_mock():
    from harness.infra.native_procs import start_mock

    with start_mock(latency_ms=LATENCY_MS, seed=11) as m:
        yield m


def _post(url: str, stream: bool = False) -> tuple[int, dict, bytes]:
    body = json.dumps(
        {"model": "mock", "messages": [{"role": "user", "content": "overload"}], "stream": stream}
    )
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=body.encode(),
        method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.parametrize("mode", RUNGS)
def test_beyond_the_limit_is_shed_at_once_and_never_forwarded(mode, slow_mock, tmp_path):
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {"model_name": "mock", "upstream": {"kind": "openai", "base_url": slow_mock.url}}
                ],
                "keys": [{"id": "o", "sha256": hash_key(KEY)}],
                "ledger": {"dir": str(tmp_path / "ledger")},
                "limits": {"max_in_flight": LIMIT},
            }
        )
    )
    gw = start_gateway(None, None, mode=mode, config=str(cfg))
    try:
        assert _metric(gw.url, "gateway_requests_shed_total") == 0
        mock_before = slow_mock.stats()["total"]
        # LIMIT requests occupy the gateway (one of them a stream, which counts until its end)
        held: list = []
        threads = [
            threading.Thread(target=lambda s=s: held.append(_post(gw.url, stream=s)))
            for s in [True] + [False] * (LIMIT - 1)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while _metric(gw.url, "gateway_requests_in_flight") < LIMIT:
            assert time.monotonic() < deadline, "the held requests never got in flight"
            time.sleep(0.01)
        # everything beyond is shed at once: answered while the slow upstream still holds the
        # admitted ones (none of them has its answer yet), not queued behind them
        for _ in range(5):
            status, headers, body = _post(gw.url)
            assert held == [], "a shed request waited for an admitted one to finish"
            assert status == 503, (status, body)
            err = json.loads(body)["error"]
            assert err["code"] == "overloaded" and set(err) == {"message", "type", "code"}
            assert err["type"] == "server_error", err  # the gateway's own refusal, not the upstream's
            assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "1"
        for t in threads:
            t.join(20)
        assert sorted(s for s, _, _ in held) == [200] * LIMIT
        assert _metric(gw.url, "gateway_requests_shed_total") == 5
        assert slow_mock.stats()["total"] - mock_before == LIMIT  # nothing shed was forwarded
        # and it keeps serving: the places are free again
        assert _metric(gw.url, "gateway_requests_in_flight") == 0
        assert _post(gw.url)[0] == 200
        # shed answers are not audited; the admitted ones are (ack background: each record
        # follows its answer, so the last one may still be on its way to the ledger)
        deadline = time.monotonic() + 10
        while (count := _root_count(gw.url)) < LIMIT + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert count == LIMIT + 1
    finally:
        gw.stop()


def _root_count(url: str) -> int:
    with urllib.request.urlopen(url + "/audit/root", timeout=5) as r:
        return json.loads(r.read())["count"]


def test_overload_step_sheds_and_loses_nothing_admitted():
    mode = RUNGS[-1]
    r = soak.run_overload(
        mode,
        duration_s=3,
        factor=3.0,
        max_in_flight=4,
        mock_latency_ms=50,
        connections=32,
        recovery_limit_s=30,
    )
    assert r["shed"] > 0 and 0 < r["shed_rate"] < 1, r
    assert r["errors"].keys() <= {"status_5xx"}, r  # shed answers only: no timeout, no reset
    assert r["errors"].get("status_5xx", 0) == r["shed"], r
    assert r["admitted_lost"] == 0 and r["ledger_records"] > 0, r
    assert r["admitted_latency_us"]["p99"] > 0
    assert r["recovery_s"] is not None, r


def test_max_in_flight_is_validated_and_defaults_to_1024(tmp_path):
    from gateway.config import MAX_IN_FLIGHT, embedded, from_mapping
    from gateway.errors import ConfigError
    from gateway.options import ServeOptions, build_config

    assert embedded("http://127.0.0.1:9", "k", str(tmp_path)).max_in_flight == MAX_IN_FLIGHT == 1024
    doc = {
        "model_list": [{"model_name": "m", "upstream": {"base_url": "http://127.0.0.1:9"}}],
        "keys": [{"id": "a", "sha256": "0" * 64}],
        "ledger": {"dir": str(tmp_path)},
    }
    assert from_mapping({**doc, "limits": {"max_in_flight": 3}}).max_in_flight == 3
    with pytest.raises(ConfigError, match="limits.max_in_flight"):
        from_mapping({**doc, "limits": {"max_in_flight": 0}})
    opts = ServeOptions(upstream="http://127.0.0.1:9", api_key="k", ledger=str(tmp_path))
    assert build_config(opts.replace(max_in_flight=5)).max_in_flight == 5
    with pytest.raises(ConfigError, match="^--max-in-flight: expected a positive integer, got 0$"):
        opts.replace(max_in_flight=0)
