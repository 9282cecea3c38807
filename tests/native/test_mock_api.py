"""The mock speaks OpenAI and Anthropic-style answers that real clients parse."""

from __future__ import annotations

import json
import signal

import httpx
import openai
import pytest

from harness.infra.native_procs import NativeProcessError, start_mock

MESSAGES = [{"role": "user", "content": "Say something about gateways."}]


def client(mock, **headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=mock.url + "/v1",
        api_key="unused",
        max_retries=0,
        default_headers={k.replace("_", "-"): str(v) for k, v in headers.items()},
    )


def test_openai_client_parses_json_answer_with_usage_and_logprobs(mock):
    r = client(mock).chat.completions.create(
        model="m-1", messages=MESSAGES, logprobs=True, top_logprobs=3, max_tokens=7
    )
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == "m-1"
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    toks = choice.logprobs.content
    assert len(toks) == 7 == r.usage.completion_tokens
    assert "".join(t.token for t in toks) == choice.message.content
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + 7
    for t in toks:
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token and t.logprob <= 0
        lps = [a.logprob for a in t.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert sum(2.718281828459045**lp for lp in lps) <= 1.0 + 1e-9  # a probability distribution (partial)


def test_openai_client_parses_stream(mock):
    stream = client(mock, x_mock_tokens=9).chat.completions.create(
        model="m-2", messages=MESSAGES, stream=True, logprobs=True, top_logprobs=2
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 9
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == 9
    token_chunks = [c for c in chunks if c.choices and c.choices[0].logprobs]
    assert len(token_chunks) == 9 and all(
        len(c.choices[0].logprobs.content[0].top_logprobs) == 2 for c in token_chunks
    )


def test_stream_ends_with_done_marker(mock):
    body = httpx.post(mock.url + "/v1/chat/completions", json={"messages": MESSAGES, "stream": True}).text
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        json.loads(e[len("data: ") :])


def _anthropic_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        out.append((lines["event"], data))
    return out


def test_anthropic_style_stream_events_in_order(mock):
    r = httpx.post(
        mock.url + "/v1/messages",
        json={"model": "claude-x", "max_tokens": 5, "stream": True, "messages": MESSAGES},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    ev = _anthropic_events(r.text)
    names = [n for n, _ in ev]
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * 5 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert ev[0][1]["message"]["model"] == "claude-x" and ev[0][1]["message"]["usage"]["input_tokens"] > 0
    assert all(d["delta"]["type"] == "text_delta" for n, d in ev if n == "content_block_delta")
    assert ev[-2][1]["delta"]["stop_reason"] == "end_turn" and ev[-2][1]["usage"]["output_tokens"] == 5


def test_anthropic_style_json(mock):
    r = httpx.post(
        mock.url + "/v1/messages", json={"model": "claude-x", "max_tokens": 4, "messages": MESSAGES}
    ).json()
    assert r["type"] == "message" and r["role"] == "assistant" and r["stop_reason"] == "end_turn"
    assert len(r["content"][0]["text"].split()) == 4 and r["usage"]["output_tokens"] == 4


def test_models_and_health(mock):
    assert [m.id for m in client(mock).models.list()] == ["mock-1"]
    assert httpx.get(mock.url + "/health").json() == {"status": "ok"}


def test_injected_error_has_openai_shape_and_status(mock):
    with pytest.raises(openai.RateLimitError) as e:
        client(mock, x_mock_error_status=429).chat.completions.create(model="m", messages=MESSAGES)
    assert e.value.status_code == 429
    body = httpx.post(mock.url + "/v1/messages", json={}, headers={"x-mock-error-status": "503"})
    assert body.status_code == 503 and body.json()["type"] == "error"


@pytest.mark.parametrize(
    "headers", [{"x-mock-latency-ms": "abc"}, {"x-mock-error-rate": "2"}, {"x-mock-tokens": "1.5"}]
)
def test_bad_control_headers_are_400(mock, headers):
    r = httpx.post(mock.url + "/v1/chat/completions", json={}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]"])
def test_bad_body_is_400_and_server_keeps_serving(mock, body):
    r = httpx.post(
        mock.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "message" in r.json()["error"]
    assert httpx.get(mock.url + "/health").status_code == 200


def test_unknown_route_404_and_wrong_method_405(mock):
    assert httpx.get(mock.url + "/nope").status_code == 404
    assert httpx.get(mock.url + "/v1/chat/completions").status_code == 405


def test_stats_count_routes_and_reset(mock):
    mock.reset_stats()
    for _ in range(3):
        httpx.get(mock.url + "/health")
    httpx.post(mock.url + "/v1/chat/completions", json={}, headers={"x-mock-error-status": "500"})
    httpx.get(mock.url + "/nope")
    s = mock.stats()
    assert s["total"] == 5
    assert s["by_route"] == {
        "GET /health": {"200": 3},
        "POST /v1/chat/completions": {"500": 1},
        "other": {"404": 1},
    }
    assert mock.stats(reset=True)["total"] == 5  # ?reset=1 returns, then resets
    assert mock.stats()["total"] == 0


def test_same_seed_same_answers_other_seed_differs(make_mock):
    a, b, c = make_mock(seed=42), make_mock(seed=42), make_mock(seed=43)

    def contents(m):
        return [
            httpx.post(m.url + "/v1/chat/completions", json={"messages": MESSAGES}).json()["choices"][0][
                "message"
            ]["content"]
            for _ in range(3)
        ]

    assert contents(a) == contents(b)
    assert contents(a) != contents(c)


def test_tokens_flag_and_max_tokens_cap(make_mock):
    m = make_mock(tokens=30)
    r = httpx.post(m.url + "/v1/chat/completions", json={"messages": MESSAGES}).json()
    assert r["usage"]["completion_tokens"] == 30
    r = httpx.post(m.url + "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4}).json()
    assert r["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(sig):
    m = start_mock()
    try:
        assert httpx.get(m.url + "/health").status_code == 200
        m.proc.send_signal(sig)
        assert m.proc.wait(timeout=10) == 0
    finally:
        m.stop()


def test_listens_on_loopback_by_default(mock):
    assert mock.url.startswith("http://127.0.0.1:")


def test_bad_flag_fails_to_start_with_message():
    with pytest.raises(NativeProcessError, match="drop_rate"):
        start_mock(drop_rate=3)


def test_stall_header_freezes_the_whole_server(mock):
    """A request carrying x-mock-stall-ms freezes every request, not only itself.

    Synchronised on events, not on sleeps: the stalling request is counted in /mock/stats
    (which a freeze does not hold up) right after it triggers the freeze, so once it shows
    there the freeze has begun; the plain request is sent then, while the stalling one is
    still outstanding. The only timing assertion is the lower bound the injection implies:
    the plain request cannot finish before 300 ms after the stalling one was sent."""
    import threading
    import time

    mock.reset_stats()
    done = threading.Event()
    sent = {}

    def stall():
        sent["stall"] = time.monotonic()
        r = httpx.get(mock.url + "/v1/models", headers={"x-mock-stall-ms": "300"}, timeout=10)
        sent["stall_status"] = r.status_code
        done.set()

    t = threading.Thread(target=stall)
    t.start()
    deadline = time.monotonic() + 10
    while (
        mock.stats()["by_route"].get("GET /v1/models", {}).get("200", 0) < 1
    ):  # the freeze has been triggered
        assert time.monotonic() < deadline, "the stalling request never reached the mock"
        time.sleep(0.002)
    in_freeze = not done.is_set()
    r = httpx.get(mock.url + "/v1/models", timeout=10)  # a plain request, sent during the freeze
    finished = time.monotonic()
    t.join(timeout=10)
    assert in_freeze, "the stalling request had already finished: no freeze to observe"
    assert done.is_set() and sent["stall_status"] == 200 and r.status_code == 200
    assert finished - sent["stall"] >= 0.3


def test_multi_threaded_mock_serves(make_mock):
    m = make_mock(threads=2, cpus=None)
    r = httpx.post(m.url + "/v1/chat/completions", json={"messages": MESSAGES}).json()
    assert r["usage"]["completion_tokens"] == 16


def test_cpus_pins_the_mock_process(make_mock):
    import os

    import psutil

    cpu = max(os.sched_getaffinity(0))
    m = make_mock(cpus=[cpu])
    assert psutil.Process(m.pid).cpu_affinity() == [cpu]
