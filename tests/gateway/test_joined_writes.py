"""A response under uvicorn goes out in one send (gateway/serving/framing.py, `JoinedWrites`):
uvicorn writes a response's head and then its body, each its own send on uvloop; the cycle's
transport holds a write until the next one, the end of the loop iteration, or a close.

The unit tests drive `JoinedWrites` over a recording transport on a real event loop; the
server tests check what holding could break: an interim `100 Continue` (held alone, it must
still go out, or the client never sends the body), streams, and a response followed at once by
another on the same connection."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from gateway.serving.framing import JoinedWrites, _flusher
from gateway.serving.launch import start_gateway
from tests.reliability.framing_cases import BODY, PATH


class Recorder:
    """The slice of a transport `JoinedWrites` uses, recording each send."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


async def _joined() -> tuple[JoinedWrites, Recorder]:
    t = Recorder()
    return JoinedWrites(t, _flusher(asyncio.get_running_loop())), t


async def _iterations(n: int = 2) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_head_and_body_are_one_send():
    async def go():
        w, t = await _joined()
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        w.write(b"{}")
        assert t.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        await _iterations()
        assert len(t.sends) == 1  # nothing held, nothing sent again

    asyncio.run(go())


def test_a_lone_write_goes_out_at_the_end_of_the_iteration():
    async def go():
        w, t = await _joined()
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert t.sends == []
        await _iterations()
        assert t.sends == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        # a stream: its head goes with its first chunk, later chunks one by one
        w.write(b"head")
        w.write(b"chunk1")
        w.write(b"chunk2")
        await _iterations()
        assert t.sends[1:] == [b"headchunk1", b"chunk2"]

    asyncio.run(go())


def test_every_connection_holding_a_write_is_flushed():
    async def go():
        pairs = [await _joined() for _ in range(3)]
        for i, (w, _) in enumerate(pairs):
            w.write(b"head%d" % i)
        await _iterations()
        assert [t.sends for _, t in pairs] == [[b"head0"], [b"head1"], [b"head2"]]

    asyncio.run(go())


def test_close_sends_what_is_held_first_and_a_gone_client_gets_nothing():
    async def go():
        w, t = await _joined()
        w.write(b"last")
        w.close()
        assert t.sends == [b"last"] and t.closing
        w2, t2 = await _joined()
        w2.write(b"held")
        t2.closing = True  # the client went away before the iteration ended
        await _iterations()
        assert t2.sends == [] and w2.is_closing()

    asyncio.run(go())


class SocketRecorder(Recorder):
    """A transport as uvicorn's protocol sees it on connection_made."""

    def get_extra_info(self, name: str, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def set_protocol(self, protocol) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.mark.parametrize("closer", ["shutdown", "timeout_keep_alive_handler"])
def test_the_protocols_own_close_sends_what_is_held_first(closer):
    """uvicorn closes the connection itself (not through the cycle) on a graceful shutdown
    after a response and when a kept-alive connection idles; a response's last write may still
    be held then (a stream's terminating chunk) and must not be lost."""
    import uvicorn
    from uvicorn.server import ServerState

    from gateway.serving.framing import protocol_class

    async def go():
        config = uvicorn.Config(app=None, log_level="warning")
        config.load()
        p = protocol_class()(config=config, server_state=ServerState(), app_state={})
        t = SocketRecorder()
        p.connection_made(t)
        p._joined.write(b"0\r\n\r\n")  # held: the last write of a stream, as the cycle writes it
        getattr(p, closer)()
        assert t.sends == [b"0\r\n\r\n"] and t.closing

    asyncio.run(go())


# --- through the server -----------------------------------------------------------------------

KEY = "sk-gatewaylab-joined"


@pytest.fixture(scope="module")
def mock():
    from harness.infra.native_procs import start_mock

    with start_mock(seed=5) as m:
        yield m


@pytest.fixture(scope="module", params=["py", "rs-core"])
def gateway(request, mock, tmp_path_factory):
    gw = start_gateway(
        mock.url, KEY, mode=request.param, server="uvicorn", ledger_dir=str(tmp_path_factory.mktemp("l"))
    )
    yield gw
    gw.stop()


def _port(gw) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def _head(*extra: bytes, body: bytes = BODY) -> bytes:
    lines = [
        b"POST " + PATH + b" HTTP/1.1",
        b"Host: gateway",
        b"Authorization: Bearer " + KEY.encode(),
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _read(s: socket.socket, data: bytes = b"", interim: bool = False) -> tuple[bytes, bytes, bytes]:
    """One response from `data` and then the socket: (head, body, the bytes after it). An
    interim response (100) has no body; others carry a Content-Length."""
    deadline = time.monotonic() + 5.0

    def more() -> bytes:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            pytest.fail(f"nothing more within 5 s after {data!r}")
        assert chunk, f"closed after {data!r}"
        return chunk

    while b"\r\n\r\n" not in data:
        data += more()
    head, _, rest = data.partition(b"\r\n\r\n")
    if interim:
        return head, b"", rest
    fields = (line.partition(b":") for line in head.split(b"\r\n")[1:])
    n = next(int(v) for k, _, v in fields if k.lower() == b"content-length")
    while len(rest) < n:
        rest += more()
    return head, rest[:n], rest[n:]


@pytest.mark.slow
def test_100_continue_is_sent_before_the_body_arrives(gateway):
    """The interim response is the only write of its iteration: held, it must still go out,
    or the client (which waits for it before sending the body) and the server wait forever."""
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as s:
        s.sendall(_head(b"Expect: 100-continue"))
        head, _, rest = _read(s, interim=True)
        assert head.startswith(b"HTTP/1.1 100") and rest == b"", head
        s.sendall(BODY)
        head, body, rest = _read(s)
        assert head.startswith(b"HTTP/1.1 200") and b'"choices"' in body and rest == b""


@pytest.mark.slow
def test_keep_alive_responses_arrive_whole_and_in_order(gateway):
    """Requests one after another on one connection, then two pipelined: each answer whole,
    and nothing of the next one mixed in."""
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as s:
        for _ in range(20):
            s.sendall(_head() + BODY)
            head, body, rest = _read(s)
            assert head.startswith(b"HTTP/1.1 200") and b'"choices"' in body and rest == b""
        s.sendall((_head() + BODY) * 2)
        head, body, rest = _read(s)
        assert head.startswith(b"HTTP/1.1 200") and b'"choices"' in body
        head, body, rest = _read(s, rest)
        assert head.startswith(b"HTTP/1.1 200") and b'"choices"' in body and rest == b""


@pytest.mark.slow
def test_a_stream_arrives_head_first_and_whole(gateway):
    body = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as s:
        s.sendall(_head(body=body) + body)
        data = b""
        deadline = time.monotonic() + 10.0
        while not data.endswith(b"0\r\n\r\n"):
            s.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = s.recv(65536)
            assert chunk, f"closed after {data!r}"
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head.lower()
    assert b"data: [DONE]" in rest


def test_a_loops_flusher_goes_with_its_loop():
    """The flushers are kept per event loop, keyed weakly: a loop that is done is not kept
    alive by its flusher (whatever else the process has run before)."""
    import gc
    import weakref

    from gateway.serving import framing

    loop = asyncio.new_event_loop()
    framing._flusher(loop)
    gone = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert gone() is None
