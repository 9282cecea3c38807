"""The framing corpus (framing_cases.py) over raw sockets, against every rung under both
servers, with the native mock counting what reaches the upstream. Each case: the expected
4xx (505 for a version) with an OpenAI-shaped body, or a close with no status when the request
never ends; nothing forwarded; never two responses; and a good request right after gets 200."""

from __future__ import annotations

import pytest

from gateway.serving.launch import start_gateway
from gateway.twins import NO_INTERPRETER_MODES
from tests.reliability.framing_cases import BARE, CASES, LIMITS, good_request, run_case
from tests.reliability.rungs import RUNGS

KEY = "sk-gatewaylab-framing"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mock():
    from harness.infra.native_procs import start_mock

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
        server=None if mode in NO_INTERPRETER_MODES else server,
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


def test_pipelined_requests_are_each_answered(gateway, mock):
    """Three requests in one write (chunked with an extension and a trailer, Content-Length,
    chunked in many small chunks): three 200s in order, three forwards. The uvicorn protocol
    cuts the stream itself to count extensions and trailers (gateway/serving/framing.py); this is the
    case where a cut in the wrong place would show."""
    import socket
    import time

    from tests.reliability.framing_cases import AUTH, BODY, TE, _cl, _head, _parse_responses

    gateway, _server = gateway
    port = int(gateway.url.rsplit(":", 1)[1])
    raw = (
        _head(TE)
        + b"%x;e=1\r\n" % len(BODY)
        + BODY
        + b"\r\n0\r\nX-Sum: 1\r\n\r\n"
        + _head(_cl())
        + BODY
        + _head(TE)
        + b"".join(b"1\r\n" + BODY[i : i + 1] + b"\r\n" for i in range(len(BODY)))
        + b"0\r\n\r\n"
    ).replace(AUTH, b"Bearer " + KEY.encode())
    before = _total(mock)
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        deadline = time.monotonic() + 30
        while len(_parse_responses(data)) < 3 and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert _parse_responses(data) == [200, 200, 200], data[:600]
    assert _total(mock) - before == 3
