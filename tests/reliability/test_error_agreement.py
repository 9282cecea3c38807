"""The same request gets the same status, error code and `type` on every rung (py, py+rs,
rs-core, rs-server), in the OpenAI shape: the audit endpoints' indexes (a well-formed number
beyond the ledger is out of range however many digits; a sign, letter or nothing is
malformed) and the `type` of a 5xx, which follows its code: the upstream's failure is
`upstream_error`, the gateway's own refusal (`overloaded` here) is `server_error`
(gateway/errors.py error_type). Overload itself is tested in full by test_overload.py."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import yaml

from gateway.serving.launch import start_gateway
from gateway.stages.auth import hash_key
from tests.gateway.helpers import assert_openai_error, http
from tests.reliability.rungs import RUNGS

pytestmark = pytest.mark.slow
KEY = "sk-gatewaylab-agreement"
HUGE = "9" * 44  # beyond i128 (39 digits)
# (path, status, code) on an empty ledger: every rung gives exactly these, message included
AUDIT_CASES = [
    (f"/audit/proof/{HUGE}", 404, "index_out_of_range"),
    ("/audit/proof/" + "0" * 30 + "7", 404, "index_out_of_range"),  # leading zeros: the number 7
    ("/audit/proof/" + "9" * 5000, 404, "index_out_of_range"),  # past Python's int() digit limit
    ("/audit/proof/9223372036854775808", 404, "index_out_of_range"),  # 2**63: past every twin's i64
    ("/audit/proof/0", 404, "index_out_of_range"),
    ("/audit/proof/-1", 400, "invalid_index"),
    ("/audit/proof/-" + HUGE, 400, "invalid_index"),
    ("/audit/proof/+1", 400, "invalid_index"),
    ("/audit/proof/1_0", 400, "invalid_index"),
    ("/audit/proof/%201", 400, "invalid_index"),
    ("/audit/proof/abc", 400, "invalid_index"),
    ("/audit/proof/", 400, "invalid_index"),
    (f"/audit/consistency?old={HUGE}", 400, "old_out_of_range"),
    ("/audit/consistency?old=-1", 400, "invalid_old"),
    ("/audit/consistency?old=abc", 400, "invalid_old"),
    ("/audit/consistency?old=%2B1", 400, "invalid_old"),
    (f"/audit/proof/0?shard={HUGE}", 400, "not_sharded"),
]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chat(url: str) -> tuple[int, bytes]:
    body = {"model": "mock", "messages": [{"role": "user", "content": "agree"}]}
    s, _, b = http(
        "POST",
        url + "/v1/chat/completions",
        body,
        {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=20,
    )
    return s, b


def _in_flight(url: str) -> float:
    for line in http("GET", url + "/metrics")[2].decode().splitlines():
        if line.startswith("gateway_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("gateway_requests_in_flight not in /metrics")


@pytest.fixture(scope="module")
def slow_mock():
    from harness.infra.native_procs import start_mock

    with start_mock(latency_ms=1500, seed=12) as m:
        yield m


def test_every_rung_gives_the_same_answers(slow_mock, tmp_path):
    answers: dict[str, list] = {}
    for mode in RUNGS:
        cfg = tmp_path / f"{mode}.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "model_list": [
                        {"model_name": "mock", "upstream": {"kind": "openai", "base_url": slow_mock.url}},
                        {
                            "model_name": "refused",
                            "upstream": {"kind": "openai", "base_url": f"http://127.0.0.1:{_dead_port()}"},
                        },
                    ],
                    "keys": [{"id": "a", "sha256": hash_key(KEY)}],
                    "ledger": {"dir": str(tmp_path / f"ledger-{mode}")},
                    "limits": {"max_in_flight": 1},
                }
            )
        )
        gw = start_gateway(None, None, mode=mode, config=str(cfg))
        try:
            got = []
            for path, status, code in AUDIT_CASES:
                s, _, body = http("GET", gw.url + path)
                err = assert_openai_error((s, body), status)
                assert err["code"] == code and err["type"] == "invalid_request_error", (mode, path, err)
                got.append((path, s, err))
            # a 502: the upstream refused the connection -> upstream_error
            s, _, body = http(
                "POST",
                gw.url + "/v1/chat/completions",
                {"model": "refused", "messages": [{"role": "user", "content": "x"}]},
                {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
            )
            err = assert_openai_error((s, body), 502)
            assert (err["code"], err["type"]) == ("upstream_unavailable", "upstream_error"), (mode, err)
            got.append(("refused", s, err["code"], err["type"]))  # its message names the OS error
            # a 503 the gateway gives itself: the one place is held by a slow request -> server_error
            held: list = []
            t = threading.Thread(target=lambda: held.append(_chat(gw.url)))
            t.start()
            deadline = time.monotonic() + 10
            while _in_flight(gw.url) < 1:
                assert time.monotonic() < deadline, "the held request never got in flight"
                time.sleep(0.01)
            s, body = _chat(gw.url)  # while the slow upstream (1.5 s) still holds the first
            err = assert_openai_error((s, body), 503)
            assert (err["code"], err["type"]) == ("overloaded", "server_error"), (mode, err)
            got.append(("overloaded", s, err))
            t.join(20)
            assert [h[0] for h in held] == [200], held
            answers[mode] = got
        finally:
            gw.stop()
    first = RUNGS[0]
    for mode in RUNGS[1:]:
        for a, b in zip(answers[first], answers[mode]):
            assert a == b, (first, mode, a, b)
