"""The real `openai` client against a running gateway (both shells, both modes), and the
audit trail it leaves: exactly one record per request, a root that an independent replay of
the WAL reproduces, and proofs from the endpoints that verify."""

from __future__ import annotations

import json
import time

import openai
import pytest

from gateway.audit.mmr import MerkleMountainRange
from gateway.audit.wal import WriteAheadLog
from gateway.twins import MODES, NO_INTERPRETER_MODES
from tests.gateway.helpers import API_KEY, MODE_SHELLS, assert_openai_error, http

pytestmark = pytest.mark.slow


def wait_for_count(url: str, n: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = http("GET", url + "/audit/root")
        root = json.loads(body)
        if root["count"] >= n or time.monotonic() > deadline:
            return root
        time.sleep(0.05)


@pytest.mark.parametrize(
    "mode", [m for m in MODES if m not in NO_INTERPRETER_MODES]
)  # rs-server: tests/rs_server
@pytest.mark.parametrize("shell", ["asgi", "fastapi"])
def test_openai_client_json_stream_and_audit(native_mock, gateway_factory, shell, mode):
    gw = gateway_factory(native_mock.url, shell=shell, mode=mode)
    health = gw.health()
    assert (health["shell"], health["server"], health["mode"]) == (shell, "uvicorn", mode)
    assert set(health["switches"].values()) == {MODES[mode]}

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=10)
    assert [m.id for m in client.models.list().data] == ["mock"]
    before = native_mock.stats()["total"]
    n_json = 5
    for i in range(n_json):
        r = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": f"hello {i}"}])
        assert r.model == "mock" and r.choices[0].message.content
        assert r.usage.completion_tokens == 16  # the mock's default answer length
    # any model name passes through (and comes back as the public name)
    r = client.chat.completions.create(model="some-other-model", messages=[{"role": "user", "content": "x"}])
    assert r.model == "some-other-model"
    chunks = list(
        client.chat.completions.create(
            model="mock", stream=True, messages=[{"role": "user", "content": "stream please"}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices[-1].finish_reason == "stop"
    n = n_json + 2
    assert native_mock.stats()["total"] - before == n

    root = wait_for_count(gw.url, n)
    assert root["count"] == n
    # proofs from the endpoints verify, with nothing but the proof
    for i in (0, n // 2, n - 1):
        status, _, body = http("GET", f"{gw.url}/audit/proof/{i}")
        assert status == 200
        proof = json.loads(body)
        assert proof["root"] == root["root"] and proof["leaf_count"] == n
        assert MerkleMountainRange.verify_inclusion(proof)
    status, _, body = http("GET", f"{gw.url}/audit/consistency?old=3")
    cons = json.loads(body)
    assert status == 200 and cons["new_root"] == root["root"] and MerkleMountainRange.verify_consistency(cons)
    assert http("GET", f"{gw.url}/audit/proof/{n}")[0] == 404
    assert http("GET", f"{gw.url}/audit/consistency?old=x")[0] == 400

    status, _, metrics = http("GET", gw.url + "/metrics")
    assert (
        status == 200 and b'gateway_requests_total{route="/v1/chat/completions",status="200"} 7.0' in metrics
    )
    assert b'gateway_stage_seconds_count{stage="decide"}' in metrics
    assert b"gateway_background_queue_depth" in metrics and b"gateway_audit_lag_seconds_count" in metrics
    if mode == "py+rs":  # the extension's own GIL accounting, per Rust entry point
        assert b"gateway_native_hold_ns_total{entry=" in metrics

    assert gw.stop() == 0
    # an independent recomputation from the WAL file alone
    payloads = WriteAheadLog.replay(gw.ledger_dir + "/audit.wal")
    assert len(payloads) == n
    mmr = MerkleMountainRange()
    mmr.append_many(payloads)
    assert mmr.root() == root["root"]
    records = [json.loads(p) for p in payloads]
    assert [r["seq"] for r in records] == list(range(n))
    assert {r["status"] for r in records} == {200} and {r["key_id"] for r in records} == {"default"}
    assert {r["waf"] for r in records} == {"allow"}
    assert all(r["entropy_mbits"] >= 0 and r["latency_us"] > 0 for r in records)
    assert (
        records[0]["completion_tokens"] == 16 and records[-1]["completion_tokens"] > 0
    )  # streamed: from the chunks


@pytest.mark.parametrize("mode", list(MODES))
def test_upstream_sees_the_upstream_model_name(upstream, gateway_factory, mode):
    gw = gateway_factory(upstream.url, mode=mode)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=10)
    r = client.chat.completions.create(model="some-other-model", messages=[{"role": "user", "content": "x"}])
    assert r.model == "some-other-model" and upstream.requests[-1]["body"]["model"] == "some-other-model"
    client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "x"}])
    assert upstream.requests[-1]["body"]["model"] == "mock"


@pytest.mark.parametrize("mode", list(MODES))
def test_anthropic_upstream(upstream, gateway_factory, tmp_path, mode):
    cfg = tmp_path / "gw.yaml"
    from gateway.stages.auth import hash_key

    cfg.write_text(f"""
model_list:
  - model_name: claude-public
    upstream: {{kind: anthropic, base_url: "{upstream.url}", model: claude-upstream}}
keys: [{{id: k, sha256: {hash_key(API_KEY)}}}]
ledger: {{dir: {tmp_path / "led"}}}
""")
    gw = gateway_factory(None, config=str(cfg), ledger_dir=None, mode=mode)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=10)
    r = client.chat.completions.create(
        model="claude-public",
        messages=[{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}],
    )
    assert r.choices[0].message.content == "the quick brown fox jumps over the lazy dog"
    assert r.model == "claude-public" and r.usage.total_tokens == 14
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/messages" and sent["body"]["model"] == "claude-upstream"
    assert sent["body"]["system"] == "terse" and sent["headers"]["anthropic-version"] == "2023-06-01"
    chunks = list(
        client.chat.completions.create(
            model="claude-public", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks)
        == "the quick brown fox jumps over the lazy dog"
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="unknown", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("mode,shell", MODE_SHELLS)
def test_stream_is_passed_through_not_buffered(upstream, gateway_factory, shell, mode):
    """The upstream holds the rest of its stream until the client has seen the first chunk:
    a gateway that buffered the stream would never deliver it (the upstream gives up after
    10 s and reports that)."""
    gw = gateway_factory(upstream.url, shell=shell, mode=mode)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30)
    stream = client.chat.completions.create(
        model="gated-stream", stream=True, messages=[{"role": "user", "content": "hi"}]
    )
    it = iter(stream)
    first = next(it)
    assert first.choices[0].delta.role == "assistant"
    upstream.open_gate()
    rest = "".join(c.choices[0].delta.content or "" for c in it if c.choices)
    assert rest == "the quick brown fox jumps over the lazy dog"
    assert upstream.gate_opened_in_time is True


@pytest.mark.parametrize("mode,shell", MODE_SHELLS)
def test_client_leaving_mid_stream_is_audited(upstream, gateway_factory, shell, mode):
    import httpx

    gw = gateway_factory(upstream.url, shell=shell, mode=mode)
    with httpx.Client(timeout=30) as c:
        with c.stream(
            "POST",
            gw.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": "gated-stream", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as r:
            assert r.status_code == 200
            next(r.iter_raw())  # the first event arrived; now hang up
    # the gateway notices the hang-up while the upstream still holds its stream
    deadline = time.monotonic() + 20
    while b"gateway_streams_abandoned_total 1.0" not in http("GET", gw.url + "/metrics")[2]:
        assert time.monotonic() < deadline, "the gateway never noticed the client leaving"
        time.sleep(0.02)
    # noticed while the upstream still holds its stream (it gives up after 10 s and sends the
    # rest): a gateway that noticed only on its next write would pass the loop above, late
    assert upstream.gate_opened_in_time is None, "noticed only when the upstream wrote again"
    upstream.open_gate()
    root = wait_for_count(gw.url, 1)
    assert root["count"] == 1
    assert gw.stop() == 0
    [rec] = [json.loads(p) for p in WriteAheadLog.replay(gw.ledger_dir + "/audit.wal")]
    assert rec["status"] == 499 and rec["model"] == "gated-stream"


@pytest.mark.parametrize("mode", list(MODES))
def test_audit_endpoints_answer_bad_arguments_with_openai_errors(native_mock, gateway_factory, mode):
    gw = gateway_factory(native_mock.url, mode=mode)
    for path, status, code in [
        ("/audit/proof/abc", 400, "invalid_index"),
        ("/audit/proof/0", 404, "index_out_of_range"),  # empty ledger: no leaf 0
        ("/audit/proof/-1", 400, "invalid_index"),  # a sign is malformed, not a leaf beyond the ledger
        ("/audit/proof/" + "9" * 44, 404, "index_out_of_range"),  # beyond i128: still only out of range
        ("/audit/consistency", 400, "missing_old"),
        ("/audit/consistency?old=x", 400, "invalid_old"),
        ("/audit/consistency?old=5", 400, "old_out_of_range"),
    ]:
        s, _, body = http("GET", gw.url + path)
        assert assert_openai_error((s, body), status)["code"] == code, path
    s, _, body = http("GET", gw.url + "/audit/consistency?old=0")
    assert s == 200 and json.loads(body)["new_count"] == 0  # and the gateway still serves
