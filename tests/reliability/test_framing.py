"""The framing corpus (framing_cases.py) over raw sockets, against every rung under both
servers, with the native mock counting what reaches the upstream. Each case: the expected
4xx (505 for a version) with an OpenAI-shaped body, or a close with no status when the request
never ends; nothing forwarded; never two responses; and a good request right after gets 200."""

from __future__ import annotations

import pytest

from gateway.launch import start_gateway
from gateway.twins import NO_INTERPRETER_MODES
from tests.reliability.framing_cases import BARE, CASES, LIMITS, good_request, run_case
from tests.reliability.rungs import RUNGS

KEY = "sk-gatewaylab-framing"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mock():
    from harness.native_procs import start_mock

    with start_mock(seed=9) as m:
        yield m


# the Python rungs under both ASGI servers; rs-server is its own server (hyper, "rs-server")
@pytest.fixture(
    scope="module",
    params=[(r, s) for r in RUNGS if r not in NO_INTERPRETER_MODES for s in ("uvicorn", "granian")]
    + [(r, r) for r in RUNGS if r in NO_INTERPRETER_MODES],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def gateway(request, mock, tmp_path_factory):
    mode, server = request.param
    gw = start_gateway(
        mock.url,
        KEY,
        mode=mode,
        server="uvicorn" if mode in NO_INTERPRETER_MODES else server,
        ledger_dir=str(tmp_path_factory.mktemp("ledger")),
    )
    yield gw, server
    gw.stop()


def _total(mock) -> int:
    return mock.stats()["total"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_is_held(gateway, mock, case):
    gateway, server = gateway
    host, port = "127.0.0.1", int(gateway.url.rsplit(":", 1)[1])
    before = _total(mock)
    outcome = run_case(host, port, case, KEY)
    forwarded = _total(mock) - before
    good = good_request(host, port, KEY)
    problems = outcome.problems(
        case, forwarded, LIMITS.get((server, case.name)), BARE.get(server, frozenset())
    )
    if good != 200:
        problems.append(f"the next good request got {good}")
    assert _total(mock) - before == forwarded + 1 or good != 200
    assert not problems, f"{case.name} ({case.ref}): {problems}; raw answer {outcome.raw[:300]!r}"
