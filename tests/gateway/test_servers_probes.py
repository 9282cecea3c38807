"""granian as the server, and the probes endpoint (on with GATEWAYLAB_PROBES=1, else 404)."""

from __future__ import annotations

import json

import openai
import pytest

from gateway.audit.wal import WriteAheadLog
from gateway.twins import MODES, NO_INTERPRETER_MODES
from tests.gateway.helpers import API_KEY, FRAMING, GOOD, assert_openai_error, auth, chat_body, http, raw

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "mode", [m for m in MODES if m not in NO_INTERPRETER_MODES]
)  # rs-server: tests/rs_server
def test_granian_serves_streams_and_drains(upstream, gateway_factory, mode):
    gw = gateway_factory(upstream.url, server="granian", shell="asgi", mode=mode)
    assert gw.health()["server"] == "granian"
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=10)
    r = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "the quick brown fox jumps over the lazy dog"
    chunks = list(
        client.chat.completions.create(
            model="mock", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks)
        == "the quick brown fox jumps over the lazy dog"
    )
    assert_openai_error(http("POST", gw.url + "/v1/chat/completions", b"{bad", auth())[::2], 400)
    # hyper (granian's HTTP layer) resolves two framings itself before the app sees them, the
    # RFC 9112 way: identical duplicate Content-Lengths fold into one, and Transfer-Encoding
    # wins over Content-Length (which it drops). The guard never sees those, so under granian
    # they are not rejected -- but they are framed one way only: one intact request upstream.
    normalised = {"duplicate content-length", "content-length with transfer-encoding"}
    for name, (make, status) in FRAMING.items():
        before = upstream.count
        got = raw(gw.url, make())
        if name in normalised:
            assert got[0] == 200 and upstream.count == before + 1, (name, got)
            assert upstream.requests[-1]["body"]["messages"] == json.loads(GOOD)["messages"]
        else:
            assert got[0] == status and upstream.count == before, (name, got)
    assert gw.stop() == 0
    assert len(WriteAheadLog.replay(gw.ledger_dir + "/audit.wal")) == 2 + len(normalised)


@pytest.mark.parametrize("shell", ["asgi", "fastapi"])
def test_probes_endpoint(upstream, gateway_factory, shell):
    on = gateway_factory(upstream.url, shell=shell, env={"GATEWAYLAB_PROBES": "1"})
    assert http("POST", on.url + "/v1/chat/completions", chat_body(), auth())[0] == 200
    status, _, body = http("GET", on.url + "/debug/probes")
    snap = json.loads(body)
    assert status == 200 and snap["pid"] == on.health()["pid"] and "gil_wait" in snap and "loop_lag" in snap
    assert http("GET", on.url + "/debug/probes?reset")[0] == 200
    off = gateway_factory(upstream.url, shell=shell, env={"GATEWAYLAB_PROBES": "0"})
    err = assert_openai_error(http("GET", off.url + "/debug/probes")[::2], 404)
    assert err["code"] == "probes_off"
