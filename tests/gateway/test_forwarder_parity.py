"""Forwarder twins against the same local upstreams: same status, body and streamed chunks,
and the same UpstreamError classes for refused / reset / timeout / 5xx. Hypothesis drives
random paths, queries, bodies, caller headers, answer statuses and stream chunkings; the
upstream reports what it received so that the request each twin sends is compared too.
(The forwarder's interface sends a POST and returns status and body only: it has no
method to vary and no response headers to compare.)

Two upstreams, both on 127.0.0.1 and started and stopped by fixtures: a deterministic raw
asyncio server (exact framing: chunk pacing, early close) and the project's native mock."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import twins
from gateway.stages.forwarder import UpstreamStatusError, UpstreamTimeout, UpstreamUnavailable
from harness.infra.native_procs import start_mock

IMPLS = {impl: twins.load("forwarder", impl) for impl in twins.IMPLS}
# The twins' total timeout where a test makes it fire (/slow answers after 2 s, /stall never
# finishes, the mock's x-mock-latency-ms 2000). Every other test runs under LOOSE_S, a
# deadline no loaded machine reaches: a fresh clone's CI run once saw the last of 64 pooled
# requests time out at 0.5 s, and those tests are about bytes and classes, not time.
TIMEOUT_S = 0.5
LOOSE_S = 30.0


class RawUpstream:
    """HTTP/1.1 on a raw asyncio server. Paths: /seen/... (JSON of what arrived: target,
    body, content-length and the caller's headers), /answer/STATUS (the body back with that
    status), /split/DELAY_MS/SIZES (the body streamed back in chunks of those sizes),
    /echo (JSON echo of the request),
    /status/N, /chunks/N/DELAY_MS (N chunked pieces, paced), /slow (answers after 2 s),
    /stall (headers, one chunk, then silence), /reset (promises 100 bytes, sends 10, closes),
    /close (closes without answering)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None
        self.url = ""

    def __enter__(self):
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result(10)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc):
        async def stop():
            self.server.close()
            await self.server.wait_closed()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in handlers:
                t.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter):
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await r.readexactly(int(hdrs.get("content-length", "0")))
                if not await self._answer(path, hdrs, body, w):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _answer(self, path, hdrs, body, w) -> bool:
        def plain(status: int, data: bytes):
            w.write(
                b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % (status, len(data))
                + data
            )

        parts = path.split("?", 1)[0].strip("/").split("/")
        if parts[0] == "seen":  # what the upstream received, for any path below /seen/
            seen = {
                "target": path,
                "body": body.hex(),
                "content-length": hdrs.get("content-length"),
                "caller": {k: v for k, v in hdrs.items() if k.startswith("x-") or k == "content-type"},
            }
            plain(200, json.dumps(seen, sort_keys=True).encode())
        elif parts[0] == "answer":  # /answer/STATUS: the request body comes back as the response body
            w.write(
                b"HTTP/1.1 %d X\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n"
                % (int(parts[1]), len(body))
                + body
            )
        elif (
            parts[0] == "split"
        ):  # /split/DELAY_MS/S1-S2-...: the request body streamed back in pieces of these sizes
            delay, sizes = (
                int(parts[1]) / 1000,
                [int(x) for x in (parts[2] if len(parts) > 2 else "").split("-") if x],
            )
            w.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            at = 0
            for n in sizes:
                piece = body[at : at + n]
                at += n
                if piece:
                    w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await w.drain()
                    if delay:
                        await asyncio.sleep(delay)
            if body[at:]:
                w.write(b"%x\r\n%s\r\n" % (len(body) - at, body[at:]))
            w.write(b"0\r\n\r\n")
        elif parts[0] == "echo":
            echo = {"body": body.decode("utf-8", "replace"), "x-test": hdrs.get("x-test"), "bytes": len(body)}
            plain(200, json.dumps(echo, sort_keys=True).encode())
        elif parts[0] == "status":
            plain(int(parts[1]), b'{"error":{"message":"status %s"}}' % parts[1].encode())
        elif parts[0] == "chunks":
            n, delay = int(parts[1]), int(parts[2]) / 1000
            w.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for i in range(n):
                data = b'data: {"i": %d, "pad": "%s"}\n\n' % (i, b"x" * (i * 37 % 300))
                w.write(b"%x\r\n%s\r\n" % (len(data), data))
                await w.drain()
                await asyncio.sleep(delay)
            w.write(b"0\r\n\r\n")
        elif parts[0] == "slow":
            await asyncio.sleep(2.0)
            plain(200, b"{}")
        elif parts[0] == "stall":
            w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await w.drain()
            await asyncio.sleep(2.0)
            return False
        elif parts[0] == "reset":
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            await w.drain()
            return False
        elif parts[0] == "close":
            return False
        await w.drain()
        return True


@pytest.fixture(scope="module")
def raw():
    with RawUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def mock():
    m = start_mock()
    try:
        yield m
    finally:
        m.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _outcome(coro):
    try:
        return ("ok", await coro)
    except Exception as e:  # noqa: BLE001 - the class is what we compare
        return ("err", type(e), getattr(e, "status", None), getattr(e, "body", None))


async def _collect(fwd, url, body=b"{}", headers=()):
    return [c async for c in fwd.stream(url, body, list(headers))]


def both(fn, timeout_s=LOOSE_S):
    """Run `fn(forwarder)` once per twin on a fresh loop; return {impl: result}."""

    async def run(impl):
        f = IMPLS[impl](timeout_s=timeout_s, pool=8, connect_timeout_s=1.0)
        try:
            return await fn(f)
        finally:
            await f.aclose()

    return {impl: asyncio.run(run(impl)) for impl in IMPLS}


# valid URL pieces: unreserved characters and well-formed percent-escapes (a bare '%' is an
# invalid URL, which the twins' HTTP clients treat differently: yarl re-escapes it as %25)
_token = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-._~") + ["%20", "%2F", "%C3%A9", "%25"]
)
segment = st.lists(_token, min_size=1, max_size=10).map("".join)
query = st.lists(st.tuples(segment, st.lists(_token, max_size=6).map("".join)), max_size=3)
header_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).map(
    lambda s: "x-" + s
)
header_value = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], max_size=40)
headers = st.dictionaries(header_name, header_value, max_size=6)
PARITY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _target(segments, q) -> str:
    return "/seen/" + "/".join(segments) + ("?" + "&".join(f"{k}={v}" for k, v in q) if q else "")


@PARITY
@given(segments=st.lists(segment, max_size=4), q=query, body=st.binary(max_size=5000), hdrs=headers)
def test_send_delivers_the_same_request_upstream(raw, segments, q, body, hdrs):
    """Random paths, queries, bodies and caller headers: the upstream sees the same target,
    the same bytes and the same caller headers from both twins (and the caller gets it all)."""
    target = _target(segments, q)
    hs = [("content-type", "application/json"), *hdrs.items()]
    r = both(lambda f: _outcome(f.send(raw.url + target, body, hs)))
    assert r["python"] == r["rust"], (r["python"], r["rust"])
    status, seen = r["rust"][1]
    seen = json.loads(seen)
    assert status == 200 and seen["target"] == _resolved(target) and bytes.fromhex(seen["body"]) == body
    assert seen["content-length"] == str(len(body))
    assert seen["caller"] == {"content-type": "application/json", **hdrs}


def _resolved(target: str) -> str:
    from gateway.stages.forwarder import without_dot_segments

    return without_dot_segments("http://h" + target)[len("http://h") :]


@pytest.mark.parametrize(
    "segments,want",
    [
        (["."], "/seen/"),
        (["a", ".."], "/seen/"),
        ([".", "a"], "/seen/a"),
        (["a", "..", "x"], "/seen/x"),
        (["a", "%2E%2e", "b"], "/seen/b"),
        (["..."], "/seen/..."),
        (["a.", ".b"], "/seen/a./.b"),
    ],
)
def test_dot_segments_resolve_alike(raw, segments, want):
    """Found by the random test above: `/seen/.` reached the upstream as `/seen/.` from the
    Python twin and `/seen/` from the Rust twin (its URL parser resolves dot segments, as
    WHATWG says). Both resolve them now."""
    target = _target(segments, [("q", "1")])
    r = both(lambda f: _outcome(f.send(raw.url + target, b"{}", [])))
    assert r["python"] == r["rust"], (r["python"], r["rust"])
    assert json.loads(r["rust"][1][1])["target"] == want + "?q=1"


@PARITY
@given(
    status=st.sampled_from([200, 201, 204, 299, 400, 401, 404, 413, 429, 500, 502, 503, 504]),
    body=st.binary(max_size=3000),
)
def test_send_same_status_and_body_for_any_answer(raw, status, body):
    if status == 204:
        body = b""  # a 204 has no body by definition
    r = both(lambda f: _outcome(f.send(f"{raw.url}/answer/{status}", body, [])))
    assert r["python"] == r["rust"] == ("ok", (status, body))


@PARITY
@given(
    body=st.binary(min_size=1, max_size=4000),
    cuts=st.lists(st.integers(1, 700), max_size=12),
    delay_ms=st.sampled_from([0, 0, 1, 3]),
)
def test_stream_same_bytes_for_any_chunking(raw, body, cuts, delay_ms):
    """The upstream's chunk boundaries fall anywhere (mid-line, mid-UTF-8, one byte): both
    twins yield the same bytes in order, with no empty pieces."""
    path = f"{raw.url}/split/{delay_ms}/" + "-".join(map(str, cuts))
    r = both(lambda f: _outcome(_collect(f, path, body)))
    assert r["python"][0] == r["rust"][0] == "ok", (r["python"], r["rust"])
    py, rs = r["python"][1], r["rust"][1]
    assert b"".join(py) == b"".join(rs) == body
    assert all(py) and all(rs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=3000), tag=st.text(alphabet="abcXYZ-_019", max_size=10))
def test_send_same_status_and_body(raw, body, tag):
    async def go(f):
        return await _outcome(
            f.send(raw.url + "/echo", body, [("x-test", tag), ("content-type", "application/json")])
        )

    r = both(go)
    assert r["python"] == r["rust"]
    assert r["python"][1][0] == 200


@pytest.mark.parametrize("status", [200, 201, 400, 404, 429, 500, 502, 503])
def test_send_passes_statuses_through(raw, status):
    r = both(lambda f: _outcome(f.send(f"{raw.url}/status/{status}", b"{}", [])))
    assert r["python"] == r["rust"] == ("ok", (status, b'{"error":{"message":"status %d"}}' % status))


@pytest.mark.parametrize("n,delay_ms", [(1, 0), (5, 30), (12, 15)])
def test_stream_same_chunks(raw, n, delay_ms):
    r = both(lambda f: _outcome(_collect(f, f"{raw.url}/chunks/{n}/{delay_ms}")))
    assert r["python"][0] == r["rust"][0] == "ok"
    py, rs = r["python"][1], r["rust"][1]
    assert b"".join(py) == b"".join(rs) and b"".join(rs).count(b"data: ") == n
    if delay_ms:  # paced pieces arrive one by one in both twins
        assert py == rs and len(rs) == n


@pytest.mark.parametrize(
    "path,err",
    [
        ("/slow", UpstreamTimeout),
        ("/reset", UpstreamUnavailable),
        ("/close", UpstreamUnavailable),
    ],
)
def test_send_faults_same_class(raw, path, err):
    r = both(lambda f: _outcome(f.send(raw.url + path, b"{}", [])), timeout_s=TIMEOUT_S)
    assert r["python"][:2] == r["rust"][:2] == ("err", err)


@pytest.mark.parametrize(
    "path,err",
    [
        ("/slow", UpstreamTimeout),
        ("/stall", UpstreamTimeout),
        ("/reset", UpstreamUnavailable),
        ("/close", UpstreamUnavailable),
        ("/status/503", UpstreamStatusError),
        ("/status/429", UpstreamStatusError),
    ],
)
def test_stream_faults_same_class(raw, path, err):
    r = both(lambda f: _outcome(_collect(f, raw.url + path)), timeout_s=TIMEOUT_S)
    assert r["python"] == r["rust"]
    assert r["rust"][:2] == ("err", err)


def test_refused_is_unavailable_in_both():
    url = f"http://127.0.0.1:{_free_port()}/v1/chat/completions"
    r = both(lambda f: _outcome(f.send(url, b"{}", [])))
    assert r["python"][:2] == r["rust"][:2] == ("err", UpstreamUnavailable)
    r = both(lambda f: _outcome(_collect(f, url)))
    assert r["python"][:2] == r["rust"][:2] == ("err", UpstreamUnavailable)


def test_status_error_http_status_mapping():
    assert UpstreamStatusError(503).http_status == 502 and UpstreamStatusError(429).http_status == 429


def test_against_the_native_mock(mock):
    url = mock.url + "/v1/chat/completions"
    req = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "hi"}]}).encode()
    sreq = json.dumps(
        {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()

    async def go(f):
        status, body = await f.send(url, req, [("content-type", "application/json")])
        chunks = await _collect(f, url, sreq, [("x-mock-itl-ms", "5"), ("x-mock-tokens", "4")])
        faults = [
            await _outcome(f.send(url, req, [(h, v)]))
            for h, v in (
                ("x-mock-error-status", "500"),
                ("x-mock-drop-rate", "1"),
                ("x-mock-latency-ms", "2000"),
            )
        ]
        return (
            status,
            sorted(json.loads(body)),
            b"".join(chunks).count(b"data: "),
            [x[:2] if x[0] == "err" else x[1][0] for x in faults],
        )

    r = both(go, timeout_s=TIMEOUT_S)
    assert r["python"] == r["rust"]
    assert r["rust"][0] == 200 and r["rust"][3] == [
        500,
        ("err", UpstreamUnavailable),
        ("err", UpstreamTimeout),
    ]


def test_many_concurrent_requests_share_the_pool(raw):
    async def go(f):
        rs = await asyncio.gather(*(f.send(raw.url + "/echo", b"%d" % i, []) for i in range(64)))
        return sorted(json.loads(b)["body"] for _, b in rs)

    r = both(go)
    assert r["python"] == r["rust"] == sorted(str(i) for i in range(64))
