"""Fixtures for the gateway tests: the project's native mock upstream, a small counting
fixture upstream (in a thread of the test process) for what the mock cannot be told through
the gateway (faults chosen per request by model name, a gated stream, Anthropic events), and
gateways started as child processes on 127.0.0.1 with free ports."""

from __future__ import annotations

import pytest

from gateway.serving.launch import start_gateway
from tests.gateway.helpers import API_KEY
from tests.gateway.upstream import FixtureUpstream


@pytest.fixture(scope="module")
def native_mock():
    """The project's own mock upstream (Rust, its own process)."""
    from harness.infra.native_procs import start_mock

    with start_mock(seed=7) as mock:
        yield mock


@pytest.fixture(scope="module")
def upstream():
    up = FixtureUpstream(slow_s=3.0).start()
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
def gateway_factory(tmp_path):
    """start(**kw) -> GatewayProcess; every one started is stopped at teardown."""
    started = []

    def start(upstream_url, **kw):
        kw.setdefault("ledger_dir", str(tmp_path / f"ledger{len(started)}"))
        gw = start_gateway(upstream_url, kw.pop("api_key", API_KEY), **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
