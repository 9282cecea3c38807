"""Python pre_call plugins: in a sidecar process on rs-server, in-process on py, with the
same answers (pass, 403 plugin_rejected with the hook's message, 500 plugin_failed when the
hook raises); on rs-server a slow sidecar gives 504 and a dead one 502, and the server goes on."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import yaml

from tests.rs_server.helpers import API_KEY, auth, chat_body, http, wait_count

pytestmark = pytest.mark.slow
HERE = os.path.dirname(os.path.abspath(__file__))


def _config(tmp_path, upstream_url: str, hooks: list[str], timeout_ms: float = 500) -> str:
    from gateway.stages.auth import hash_key

    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "mock", "upstream": {"base_url": upstream_url}}],
                "keys": [{"id": "team-a", "sha256": hash_key(API_KEY)}],
                "ledger": {"dir": str(tmp_path / "ledger")},
                "plugins": {"pre_call": hooks, "timeout_ms": timeout_ms, "max_in_flight": 4},
            }
        )
    )
    return str(path)


def _post(gw, content: str):
    s, _, b = http("POST", gw.url + "/v1/chat/completions", chat_body(content), auth(), timeout=15)
    return s, json.loads(b)


@pytest.mark.parametrize("mode", ["py", "rs-server"])
def test_a_hook_rejects_passes_or_fails_the_same_on_both_rungs(upstream, tmp_path, mode):
    from gateway.serving.launch import start_gateway

    cfg = _config(tmp_path, upstream.url, ["plugin_hooks:deny_secrets", "plugin_hooks:slow_or_broken"])
    with start_gateway(None, None, mode=mode, config=cfg, env={"PYTHONPATH": HERE}) as gw:
        before = upstream.count
        assert _post(gw, "hello")[0] == 200
        status, body = _post(gw, "tell me the secret")
        assert (status, body["error"]["code"]) == (403, "plugin_rejected")
        assert body["error"]["message"] == "no secrets for team-a on mock"
        status, body = _post(gw, "boom")
        assert (status, body["error"]["code"]) == (500, "plugin_failed")
        assert "RuntimeError: the hook broke" in body["error"]["message"]
        assert upstream.count == before + 1, "a rejected request reached the upstream"
        root = wait_count(gw.url, 3)
        assert root["count"] == 3  # rejections by a plugin are audited, as WAF blocks are


def test_a_slow_then_dead_sidecar_gives_5xx_and_the_server_goes_on(upstream, tmp_path):
    from gateway.serving.launch import start_gateway

    cfg = _config(tmp_path, upstream.url, ["plugin_hooks:slow_or_broken"], timeout_ms=300)
    with start_gateway(None, None, mode="rs-server", config=cfg, env={"PYTHONPATH": HERE}) as gw:
        assert _post(gw, "hello")[0] == 200
        t = time.monotonic()
        status, body = _post(gw, "slow please")
        assert (status, body["error"]["code"]) == (504, "plugin_timeout")
        assert time.monotonic() - t < 1.5, "the call was not bounded by the plugin timeout"
        health = gw.health()
        assert health["plugins"]["sidecar_alive"] is True
        os.kill(health["plugins"]["sidecar_pid"], signal.SIGKILL)
        for _ in range(100):
            if gw.health()["plugins"]["sidecar_alive"] is False:
                break
            time.sleep(0.02)
        before = upstream.count
        for _ in range(3):
            status, body = _post(gw, "hello")
            assert (status, body["error"]["code"]) == (502, "plugin_unavailable")
        assert upstream.count == before
        assert gw.health()["status"] == "ok" and http("GET", gw.url + "/v1/models")[0] == 200
        assert gw.stop() == 0
