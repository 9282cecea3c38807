"""rs-server end to end: the real `openai` client (JSON and SSE), the audit ledger it
writes (recomputed from the WAL alone), proofs, /health, /metrics, and a ledger that goes on
across rungs (rs-server -> py -> rs-server) with a consistency proof across each switch."""

from __future__ import annotations

import json

import openai
import pytest

from gateway.audit.mmr import MerkleMountainRange
from gateway.audit.wal import WriteAheadLog
from tests.rs_server.helpers import API_KEY, http, wait_count

pytestmark = pytest.mark.slow


def test_openai_client_json_stream_and_audit(native_mock, gateway_factory):
    gw = gateway_factory(native_mock.url)
    health = gw.health()
    assert (health["mode"], health["label"], health["server"]) == (
        "rs-server",
        "rs-server",
        "gatewaylab-server",
    )
    assert health["pid"] == gw.pid, "the launcher execs the binary: same pid"
    assert (
        set(health["switches"].values()) == {"rust"} and health["stages"] == "all" and health["audit_enabled"]
    )

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=10)
    assert [m.id for m in client.models.list().data] == ["mock"]
    before = native_mock.stats()["total"]
    n_json = 5
    for i in range(n_json):
        r = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": f"hello {i}"}])
        assert r.model == "mock" and r.choices[0].message.content
        assert r.usage.completion_tokens == 16
    r = client.chat.completions.create(model="some-other-model", messages=[{"role": "user", "content": "x"}])
    assert r.model == "some-other-model"
    chunks = list(
        client.chat.completions.create(
            model="mock", stream=True, messages=[{"role": "user", "content": "stream please"}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices[-1].finish_reason is not None
    n = n_json + 2
    assert native_mock.stats()["total"] - before == n

    root = wait_count(gw.url, n)
    assert root["count"] == n
    for i in (0, n // 2, n - 1):
        status, _, body = http("GET", f"{gw.url}/audit/proof/{i}")
        proof = json.loads(body)
        assert status == 200 and proof["root"] == root["root"] and proof["leaf_count"] == n
        assert MerkleMountainRange.verify_inclusion(proof)
    status, _, body = http("GET", f"{gw.url}/audit/consistency?old=3")
    cons = json.loads(body)
    assert status == 200 and cons["new_root"] == root["root"] and MerkleMountainRange.verify_consistency(cons)
    # the Python gateway's error answers for bad proof arguments
    for path, status, code in (
        (f"/audit/proof/{n}", 404, "index_out_of_range"),
        ("/audit/proof/x", 400, "invalid_index"),
        ("/audit/consistency?old=x", 400, "invalid_old"),
        ("/audit/consistency", 400, "missing_old"),
        (f"/audit/consistency?old={n + 1}", 400, "old_out_of_range"),
        ("/nope", 404, "not_found"),
    ):
        got, _, body = http("GET", gw.url + path)
        assert (got, json.loads(body)["error"]["code"]) == (status, code), path
    assert http("GET", gw.url + "/v1/chat/completions")[0] == 405

    status, _, metrics = http("GET", gw.url + "/metrics")
    assert (
        status == 200 and b'gateway_requests_total{route="/v1/chat/completions",status="200"} 7.0' in metrics
    )
    assert b'gateway_stage_seconds_count{stage="decide"} 7.0' in metrics
    assert b"gateway_background_queue_depth" in metrics and b"gateway_audit_records_total 7.0" in metrics

    assert gw.stop() == 0
    payloads = WriteAheadLog.replay(gw.ledger_dir + "/audit.wal")
    assert len(payloads) == n
    mmr = MerkleMountainRange()
    mmr.append_many(payloads)
    assert mmr.root() == root["root"]
    records = [json.loads(p) for p in payloads]
    assert [r["seq"] for r in records] == list(range(n))
    assert {r["status"] for r in records} == {200} and {r["key_id"] for r in records} == {"default"}
    assert all(r["entropy_mbits"] >= 0 and r["latency_us"] > 0 for r in records)
    assert records[0]["completion_tokens"] == 16 and records[-1]["completion_tokens"] > 0


def _chat(gw, i):
    status, _, _ = http(
        "POST",
        gw.url + "/v1/chat/completions",
        {"model": "mock", "messages": [{"role": "user", "content": f"m{i}"}]},
        {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert status == 200


def test_a_ledger_continues_across_rungs_with_consistency_proofs(native_mock, gateway_factory, tmp_path):
    ledger = str(tmp_path / "shared-ledger")
    roots = []
    for k, mode in enumerate(("rs-server", "py", "rs-server")):
        gw = gateway_factory(native_mock.url, mode=mode, ledger_dir=ledger)
        old = roots[-1] if roots else None
        if old is not None:  # the new rung opened the old ledger as it was
            now = json.loads(http("GET", gw.url + "/audit/root")[2])
            assert (now["count"], now["root"]) == (old["count"], old["root"])
        for i in range(4):
            _chat(gw, i)
        root = wait_count(gw.url, 4 * (k + 1))
        assert root["count"] == 4 * (k + 1)
        if old is not None:
            cons = json.loads(http("GET", f"{gw.url}/audit/consistency?old={old['count']}")[2])
            assert cons["old_root"] == old["root"] and cons["new_root"] == root["root"]
            assert MerkleMountainRange.verify_consistency(cons), (
                f"{mode} did not extend the previous rung's log"
            )
        roots.append(root)
        assert gw.stop() == 0
    payloads = WriteAheadLog.replay(ledger + "/audit.wal")
    assert [json.loads(p)["seq"] for p in payloads] == list(range(12))
    mmr = MerkleMountainRange()
    mmr.append_many(payloads)
    assert mmr.root() == roots[-1]["root"]
