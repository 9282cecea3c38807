"""The router on every rung, through a real fleet of native mocks: retries across deployments
(JSON and SSE), fallback to another group, cooldown keeping a failed deployment out, the
503 when no deployment is left; each deployment's load is what the router twin predicts."""

from __future__ import annotations

import json

import pytest
import yaml

from gateway import twins
from gateway.router import Router
from harness.infra.fleet import start_fleet
from tests.gateway.helpers import API_KEY, assert_openai_error, auth, chat_body, http

pytestmark = pytest.mark.slow

# deployment order: flaky[0] 500s, flaky[1] fine, dead[0] drops, backup[0] fine, lonely[0] drops
FLEET = [{"error_status": 500, "error_rate": 1.0}, {}, {"drop_rate": 1.0}, {}, {"drop_rate": 1.0}]
GROUPS = ["flaky", "flaky", "dead", "backup", "lonely"]
ROUTER = {
    "strategy": "simple-shuffle",
    "seed": 11,
    "num_retries": 2,
    "backoff_base_ms": 1,
    "backoff_max_ms": 2,
    "allowed_fails": 1,
    "cooldown_ms": 60000,
    "fallbacks": [{"dead": ["backup"]}],
}
PLAN = ["flaky"] * 6 + ["dead"] * 3 + ["lonely"] * 2
STREAMED = {2}  # the third flaky request asks for SSE


@pytest.fixture(scope="module")
def fleet():
    with start_fleet(FLEET, seed=5) as f:
        yield f


def write(tmp_path, fleet) -> str:
    ml = [
        {"model_name": g, "upstream": {"kind": "openai", "base_url": url}}
        for g, url in zip(GROUPS, fleet.urls)
    ]
    from gateway.stages.auth import hash_key

    p = tmp_path / "gw.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "model_list": ml,
                "keys": [{"id": "k", "sha256": hash_key(API_KEY)}],
                "ledger": {"dir": str(tmp_path / "ledger")},
                "router": ROUTER,
            }
        )
    )
    return str(p)


def predicted_loads(router_json: str) -> list[int]:
    """Each deployment's requests, from the Python twin and the fleet's fixed behaviour."""
    r = Router(router_json)
    index = [(g, GROUPS[:k].count(g)) for k, g in enumerate(GROUPS)]  # model_list order -> (group, i)
    fails = {("flaky", 0), ("dead", 0), ("lonely", 0)}
    loads = dict.fromkeys(index, 0)
    for group in PLAN:
        att = r.begin(group, 1, 1)
        while (s := r.next(att, 1))[0] != "give_up":
            if s[0] == "send":
                loads[s[1:]] += 1
                r.report(att, "fail" if s[1:] in fails else "ok", 1, 1)
    return [loads[d] for d in index]


@pytest.mark.parametrize("mode", list(twins.MODES))
def test_retries_fallbacks_and_cooldown_through_the_fleet(fleet, gateway_factory, tmp_path, mode):
    from gateway import config as cfgmod

    path = write(tmp_path, fleet)
    want = predicted_loads(cfgmod.load(path).router)
    fleet.reset()
    gw = gateway_factory(None, config=path, ledger_dir=None, mode=mode)
    url = gw.url + "/v1/chat/completions"
    for k, group in enumerate(PLAN[:9]):
        status, headers, body = http("POST", url, chat_body(model=group, stream=k in STREAMED), auth())
        assert status == 200, (mode, group, body)
        if k in STREAMED:
            assert body.rstrip().endswith(b"data: [DONE]"), body
        else:
            assert json.loads(body)["model"] == group  # the public name, also after a fallback
    # lonely: its one deployment fails (connection dropped) and cools down; then none is left
    err = assert_openai_error(http("POST", url, chat_body(model="lonely"), auth())[::2], 502)
    assert err["code"] == "upstream_unavailable"
    err = assert_openai_error(http("POST", url, chat_body(model="lonely"), auth())[::2], 503)
    assert err["code"] == "no_deployment_available" and "'lonely'" in err["message"]
    assert err["type"] == "upstream_error"  # a 503 that is the upstreams', unlike `overloaded`
    assert fleet.requests() == want
    assert want[0] <= 1 and want[1] == 6 and want[2:] == [1, 3, 1]  # cooldown: a failed one is tried once
    assert gw.stop() == 0
