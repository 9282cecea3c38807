"""ledger.ack durable: an answer leaves only once its record is durable (the WAL's
durable_count already covers it), with one fsync shared by the batch; `background` (the
published order, docs/claims.md `answer-first`) answers first. On every rung: the Python background path (py, py+rs) and the
Rust ledger thread (rs-core, rs-server) complete the answer after the batch's group commit."""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml

from gateway.serving.launch import start_gateway
from gateway.stages.auth import hash_key
from tests.reliability.rungs import DURABLE_ACK_RUNGS

KEY = "sk-gatewaylab-durable"
BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "durable"}]}).encode()
pytestmark = pytest.mark.slow


def _gateway(mock, tmp_path, mode, fsync, ack):
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "mock", "upstream": {"kind": "openai", "base_url": mock.url}}],
                "keys": [{"id": "d", "sha256": hash_key(KEY)}],
                "ledger": {"dir": str(tmp_path / "ledger"), "fsync": fsync, "ack": ack},
            }
        )
    )
    return start_gateway(None, None, mode=mode, config=str(cfg))


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url):
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=BODY,
        method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
        return r.status, r.headers["x-request-id"]


@pytest.mark.parametrize("fsync", ["group", "always"])
@pytest.mark.parametrize("mode", DURABLE_ACK_RUNGS)
def test_every_answer_is_durable_before_it_leaves(mock, tmp_path, mode, fsync):
    gw = _gateway(mock, tmp_path, mode, fsync, "durable")
    try:
        assert _get(gw.url + "/health")["audit"]["ack"] == "durable"
        for n in range(1, 31):
            status, rid = _post(gw.url)
            assert status == 200
            root = _get(gw.url + "/audit/root")
            assert root["durable_count"] >= n and root["count"] >= n, (n, root)
        proof = _get(gw.url + "/audit/proof/29")
        assert proof["leaf_count"] >= 30
        # concurrent answers share group commits: 48 answers from 8 clients, each durable
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: _post(gw.url), range(48)))
        assert [s for s, _ in got] == [200] * 48
        root = _get(gw.url + "/audit/root")
        assert root["durable_count"] >= 78, root
    finally:
        gw.stop()


def test_background_is_the_default(mock, tmp_path):
    gw = _gateway(mock, tmp_path, "py", "group", "background")
    try:
        assert _get(gw.url + "/health")["audit"]["ack"] == "background"
        assert _post(gw.url)[0] == 200
    finally:
        gw.stop()


def test_bad_ack_is_a_config_error(tmp_path):
    from gateway.config import load
    from gateway.errors import ConfigError

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "m", "upstream": {"base_url": "http://127.0.0.1:1"}}],
                "keys": [{"id": "d", "sha256": hash_key(KEY)}],
                "ledger": {"dir": str(tmp_path), "ack": "eventually"},
            }
        )
    )
    with pytest.raises(ConfigError, match="ledger.ack"):
        load(str(cfg))
