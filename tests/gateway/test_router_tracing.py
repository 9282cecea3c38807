"""A routed request, traced, on every rung: each upstream attempt of the router (a retry, a
second deployment) is its own `attempt` span under the request's one `forward` span,
numbered from 1, with the status that attempt got (docs/router.md, docs/tracing.md)."""

from __future__ import annotations

import pytest

from gateway import twins
from harness.infra.fleet import start_fleet
from harness.infra.otlp import OtlpReceiver, traces
from tests.gateway.helpers import API_KEY, assert_openai_error, auth, chat_body, http

pytestmark = pytest.mark.slow

# two deployments that both answer 500: a request is tried 1 + num_retries times, then fails
ROUTER = {
    "strategy": "simple-shuffle",
    "seed": 3,
    "num_retries": 2,
    "backoff_base_ms": 1,
    "backoff_max_ms": 2,
    "allowed_fails": 100,
    "cooldown_ms": 1000,
}


@pytest.fixture(scope="module")
def fleet():
    with start_fleet([{"error_status": 500, "error_rate": 1.0}] * 2, seed=7) as f:
        yield f


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as rx:
        yield rx


@pytest.mark.parametrize("mode", list(twins.MODES))
def test_every_attempt_of_a_routed_request_is_a_span(mode, fleet, receiver, gateway_factory, tmp_path):
    receiver.clear()
    fleet.reset()
    path = fleet.write_config(str(tmp_path), API_KEY, router=ROUTER)
    gw = gateway_factory(
        None, config=path, ledger_dir=None, mode=mode, tracing="on", tracing_endpoint=receiver.endpoint
    )
    err = assert_openai_error(
        http("POST", gw.url + "/v1/chat/completions", chat_body(model="mock"), auth())[::2], 502
    )
    assert err["code"] == "upstream_status", err
    spans = receiver.wait_for(
        lambda s: sum(x.name == "attempt" for x in s) >= 3 and any(x.name == "request" for x in s)
    )
    assert gw.stop() == 0
    (trace,) = traces(spans).values()
    forward = [s for s in trace if s.name == "forward"]
    attempts = sorted((s for s in trace if s.name == "attempt"), key=lambda s: s.attributes["attempt"])
    assert [a.attributes["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a.attributes["http.status_code"] == 500 for a in attempts)
    assert {a.parent_span_id for a in attempts} <= {f.span_id for f in forward}
    assert sum(m.stats()["total"] for m in fleet.mocks) == 3  # the fleet saw the three attempts
