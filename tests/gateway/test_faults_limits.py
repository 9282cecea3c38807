"""Upstream faults become 502/504 and are audited; rate limits answer 429 + Retry-After;
shutdown with queued audit work loses no record."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from gateway.audit.wal import WriteAheadLog
from gateway.stages.auth import hash_key
from gateway.twins import MODES
from tests.gateway.helpers import API_KEY, assert_openai_error, auth, chat_body, http

pytestmark = pytest.mark.slow


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def write_config(tmp_path, upstream_url, **extra) -> str:
    key_line = extra.pop("key_line", f"{{id: team, sha256: {hash_key(API_KEY)}}}")
    p = tmp_path / "gw.yaml"
    p.write_text(f"""
model_list:
  - model_name: mock
    upstream: {{kind: openai, base_url: "{upstream_url}"}}
  - model_name: refused
    upstream: {{kind: openai, base_url: "http://127.0.0.1:{dead_port()}"}}
passthrough: true
keys: [{key_line}]
ledger: {{dir: {tmp_path / "ledger"}}}
limits: {{upstream_timeout_s: 0.5}}
{extra.pop("more", "")}
""")
    return str(p)


FAULTS = [
    ("fault-500", False, 502),
    ("fault-reset", False, 502),
    ("fault-timeout", False, 504),
    ("fault-malformed", False, 502),
    ("refused", False, 502),
    ("fault-500", True, 502),
    ("fault-reset", True, 502),
    ("fault-timeout", True, 504),
    ("refused", True, 502),
]


@pytest.mark.parametrize("mode", list(MODES))
def test_upstream_faults_are_502_504_and_audited(upstream, gateway_factory, tmp_path, mode):
    gw = gateway_factory(None, config=write_config(tmp_path, upstream.url), ledger_dir=None, mode=mode)
    for model, stream, status in FAULTS:
        err = assert_openai_error(
            http("POST", gw.url + "/v1/chat/completions", chat_body(model=model, stream=stream), auth())[::2],
            status,
        )
        assert err["type"] == "upstream_error", (model, stream, err)
    # an upstream 4xx passes through with its own OpenAI-shaped body
    err = assert_openai_error(
        http("POST", gw.url + "/v1/chat/completions", chat_body(model="fault-400"), auth())[::2], 400
    )
    assert err["code"] == "bad"
    # still serving
    assert http("POST", gw.url + "/v1/chat/completions", chat_body(), auth())[0] == 200
    assert gw.stop() == 0
    records = [json.loads(p) for p in WriteAheadLog.replay(str(tmp_path / "ledger" / "audit.wal"))]
    # in request order: with background ack the Rust rungs hand a record over just after its
    # answer, so on a loaded machine the next request's record may be appended first
    records.sort(key=lambda r: r["time_ns"])
    assert [r["status"] for r in records] == [s for _, _, s in FAULTS] + [400, 200]
    assert [r["model"] for r in records[: len(FAULTS)]] == [m for m, _, _ in FAULTS]


@pytest.mark.parametrize("mode", list(MODES))
def test_rate_limit_429_with_retry_after(upstream, gateway_factory, tmp_path, mode):
    cfg = write_config(
        tmp_path, upstream.url, key_line=f"{{id: team, sha256: {hash_key(API_KEY)}, rpm: 3, tpm: 100000}}"
    )
    gw = gateway_factory(None, config=cfg, ledger_dir=None, mode=mode)
    before = upstream.count
    assert [http("POST", gw.url + "/v1/chat/completions", chat_body(), auth())[0] for _ in range(3)] == [
        200
    ] * 3
    status, headers, body = http("POST", gw.url + "/v1/chat/completions", chat_body(), auth())
    err = assert_openai_error((status, body), 429)
    assert err["type"] == "rate_limit_error" and 1 <= int(headers["retry-after"]) <= 20
    assert upstream.count == before + 3
    # a request larger than the whole per-minute token budget can never pass
    status, _, body = http("POST", gw.url + "/v1/chat/completions", chat_body(max_tokens=200000), auth())
    assert assert_openai_error((status, body), 429)["code"] == "tokens_exceed_limit"


@pytest.mark.parametrize(
    "mode,policy",
    [("py", "block"), ("py", "drop"), ("py+rs", "block"), ("py+rs", "drop"), ("rs-core", "block")],
)  # rs-core's ledger queue never drops
def test_shutdown_drains_queued_work(upstream, gateway_factory, tmp_path, policy, mode):
    """The ledger is slowed (200 ms per batch) and the queue is tiny, so work is queued when
    SIGTERM arrives; under `block` every answered request is in the WAL after shutdown, under
    `drop` what is missing is exactly what /metrics counted as dropped."""
    # `background.*` is the Python audit queue's (rs-core refuses it: its queue is the Rust
    # ledger thread's, unbounded); the slowed ledger queues work on every rung
    more = f"background: {{queue_size: 2, policy: {policy}, batch_window_ms: 1}}" if mode != "rs-core" else ""
    cfg = write_config(tmp_path, upstream.url, more=more)
    gw = gateway_factory(
        None, config=cfg, ledger_dir=None, mode=mode, env={"GATEWAYLAB_LEDGER_DELAY_MS": "200"}
    )
    n, results = 24, []

    def client(k):
        for _ in range(n // 4):
            results.append(
                http("POST", gw.url + "/v1/chat/completions", chat_body(f"req {k}"), auth(), timeout=30)[0]
            )

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * n
    dropped = 0
    if policy == "drop":
        m = http("GET", gw.url + "/metrics")[2].decode()
        dropped = int(
            float(
                next(
                    ln.split()[-1]
                    for ln in m.splitlines()
                    if ln.startswith("gateway_background_dropped_total")
                )
            )
        )
    queued = json.loads(http("GET", gw.url + "/audit/root")[2])["count"]
    assert gw.stop(timeout=60) == 0  # graceful: the lifespan drains the queue
    records = WriteAheadLog.replay(str(tmp_path / "ledger" / "audit.wal"))
    assert len(records) == n - dropped
    if policy == "block":
        assert queued < n, "the test did not leave work queued at shutdown"
    else:
        # 24 answers arrive while the slowed ledger takes one batch per 200 ms into a queue of
        # 2: `drop` must have dropped some, or this test checked nothing about dropping
        assert dropped > 0, "the drop policy dropped nothing: the queue never overflowed"
