"""Fixtures for rung 3 (`rs-server`, the Rust gateway binary): the gateway tests' counting
upstream and native mock, and gateways started the way users start them
(`gateway.serving.launch.start_gateway(mode="rs-server")` -> `python -m gateway.serving.server` -> exec)."""

from __future__ import annotations

import os

import pytest

from gateway.rungs.rs_server import DEFAULT_BIN
from tests.gateway.helpers import API_KEY
from tests.gateway.upstream import FixtureUpstream

if not os.access(DEFAULT_BIN, os.X_OK):  # make dev builds it; never skip silently
    raise RuntimeError(f"{DEFAULT_BIN} is not built: run `make dev`")


@pytest.fixture(scope="module")
def upstream():
    up = FixtureUpstream(slow_s=3.0).start()
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def native_mock():
    from harness.infra.native_procs import start_mock

    with start_mock(seed=7) as mock:
        yield mock


@pytest.fixture
def gateway_factory(tmp_path):
    """start(upstream_url, **kw) -> GatewayProcess (mode rs-server unless given); every one
    started is stopped at teardown."""
    from gateway.serving.launch import start_gateway

    started = []

    def start(upstream_url, **kw):
        kw.setdefault("ledger_dir", str(tmp_path / f"ledger{len(started)}"))
        kw.setdefault("mode", "rs-server")
        gw = start_gateway(upstream_url, kw.pop("api_key", API_KEY), **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
