"""Fixtures for rung 3 (`rs-server`, the Rust gateway binary): the gateway tests' counting
upstream and helpers, and gateways started the way users start them
(`gateway.launch.start_gateway(mode="rs-server")` -> `python -m gateway.server` -> exec).

The helpers carry the same names as tests/gateway/conftest.py's, so the bad-input corpus of
tests/gateway/test_bad_input.py (which imports them from `conftest`) loads here unchanged."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import urllib.error
import urllib.request

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_GATEWAY_TESTS = os.path.join(os.path.dirname(_HERE), "gateway")
if _GATEWAY_TESTS not in sys.path:
    sys.path.append(_GATEWAY_TESTS)  # upstream.py (appended: this directory's conftest wins)

from upstream import FixtureUpstream  # noqa: E402

from gateway.rs_server import DEFAULT_BIN  # noqa: E402

API_KEY = "sk-gatewaylab-test"

if not os.access(DEFAULT_BIN, os.X_OK):  # make dev builds it; never skip silently
    raise RuntimeError(f"{DEFAULT_BIN} is not built: run `make dev`")


def load_gateway_test_module(name: str):
    """A module of tests/gateway by file path (for its data: the bad-input corpus)."""
    spec = importlib.util.spec_from_file_location(f"gateway_tests_{name}", os.path.join(_GATEWAY_TESTS, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def upstream():
    up = FixtureUpstream(slow_s=3.0).start()
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def native_mock():
    from harness.native_procs import start_mock

    with start_mock(seed=7) as mock:
        yield mock


@pytest.fixture
def gateway_factory(tmp_path):
    """start(upstream_url, **kw) -> GatewayProcess; every one started is stopped at teardown."""
    from gateway.launch import start_gateway

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


def wait_count(url: str, n: int, timeout: float = 10.0) -> dict:
    """/audit/root once it counts n records."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        root = json.loads(http("GET", url + "/audit/root")[2])
        if root["count"] >= n or time.monotonic() > deadline:
            return root
        time.sleep(0.02)
