"""Fixtures for the gateway tests: the project's native mock upstream, a small counting
fixture upstream (in a thread of the test process) for what the mock cannot be told through
the gateway (faults chosen per request by model name, a gated stream, Anthropic events), and
gateways started as child processes on 127.0.0.1 with free ports."""
from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from upstream import FixtureUpstream  # noqa: E402

from gateway.launch import start_gateway  # noqa: E402

API_KEY = "sk-gatewaylab-test"


@pytest.fixture(scope="module")
def native_mock():
    """The project's own mock upstream (Rust, its own process)."""
    from harness.native_procs import start_mock

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


def http(method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None, timeout: float = 10):
    """(status, headers, body bytes) without raising on 4xx/5xx."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def chat_body(content: str = "Say hello.", model: str = "mock", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def auth(key: str = API_KEY) -> dict:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def assert_openai_error(status_body, status: int):
    got_status, body = status_body
    assert got_status == status, (got_status, body)
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    return err
