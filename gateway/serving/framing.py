"""uvicorn's HTTP/1 protocol (httptools, i.e. llhttp) with the limits llhttp lacks and the
other servers have, OpenAI-shaped answers for what it refuses, and each response written in
one send (`JoinedWrites`, at the end).

llhttp reads a request head of any size (uvicorn buffers it whole before the gateway's guard
can judge it), chunk extensions of any length (it skips them without counting: they do not
count against the body limit either; Node.js capped them at 16 KiB for CVE-2024-22019) and
any number of trailer fields, which uvicorn appends to the request's header list, where the
guard and the pipeline read them as headers. hyper, under granian and rs-server, caps all
three. So does `FramingProtocol`, with hyper's numbers:

  a head (request line and header lines) over MAX_HEAD_BYTES  431 headers_too_large
  chunk extensions over MAX_CHUNK_EXT_BYTES in one request   400 bad_http_framing
  trailer fields over MAX_TRAILER_BYTES or MAX_TRAILER_FIELDS 400 bad_http_framing
  anything llhttp itself refuses                              400 bad_http_framing

each with `connection: close`, before the gateway forwards anything (the body is not
complete until the last chunk, and the refusal comes first). Trailer fields are counted and
dropped: they never reach the request's headers. (The guard's own limit on the header block,
`limits.max_header_bytes`, answers 431 headers_too_large the same way for heads under
MAX_HEAD_BYTES: gateway/stages/guard.py.)

How the caps are measured: httptools reports chunk extensions and byte positions to no
callback, so the protocol cuts the byte stream itself and feeds llhttp one framing piece at a
time: the head up to its blank line, a Content-Length body, each chunk-size line up to its
LF, each chunk's data and CRLF, each trailer line. After each piece llhttp must report the
event that piece ends (headers complete, chunk header, chunk complete, message complete);
if it does not, the two readings disagree and the request is refused (400), never forwarded.
llhttp stays the only judge of the grammar; the cuts only count.

uvicorn's cycle writes a response's head and then its body, and uvloop sends each write at once:
two sends per answer, each a trip through the kernel's TCP stack on the gateway's core. The
cycle's transport is a `JoinedWrites`, which holds a write until the next one (the two go out
as one send), the end of the loop iteration, or a close; the protocol's own refusals flush it
first, so a connection's bytes keep their order.
"""

from __future__ import annotations

import asyncio
import json
import weakref

MAX_HEAD_BYTES = 64 * 1024  # hyper's default read buffer under rs-server's net layer is 36 KiB
MAX_CHUNK_EXT_BYTES = 16 * 1024  # hyper's CHUNKED_EXTENSIONS_LIMIT (all chunks of one request)
MAX_TRAILER_BYTES = 16 * 1024  # hyper's TRAILER_LIMIT
MAX_TRAILER_FIELDS = 100  # hyper's default header count, which it applies to trailers too

_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}

# where the next byte belongs
_HEAD, _BODY, _SIZE_LINE, _DATA, _TRAILER, _CLOSED = range(6)


def answer(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with an OpenAI-shaped error body that closes the connection."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}}).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
    ) + body


class JoinedWrites(asyncio.Transport):
    """The transport a response is written through (uvicorn's cycle writes its head and then
    its body, each a send of its own on uvloop): a write is held until the next one, which goes
    out joined with it, or until the end of the loop iteration, or a close, whichever comes
    first. A response with a body is one send; a stream's head goes with its first chunk, or
    alone at the end of the iteration that wrote it."""

    __slots__ = ("_transport", "_flusher", "_held")

    def __init__(self, transport: asyncio.Transport, flusher: _Flusher) -> None:
        super().__init__()
        self._transport = transport
        self._flusher = flusher
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = data if type(data) is bytes else bytes(data)
            self._flusher.add(self)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():  # the client is gone: nobody to send it to
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class _Flusher:
    """One callback per loop iteration flushes every response still holding a write."""

    __slots__ = ("_loop", "_held")

    def __init__(self, loop) -> None:
        self._loop = weakref.ref(loop)  # weak: `_FLUSHERS` drops the flusher with its loop
        self._held: list[JoinedWrites] = []

    def add(self, w: JoinedWrites) -> None:
        if not self._held:
            loop = self._loop()
            assert loop is not None  # a connection writing keeps its loop running
            loop.call_soon(self._flush)
        self._held.append(w)

    def _flush(self) -> None:
        held, self._held = self._held, []
        for w in held:
            w.flush()


_FLUSHERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _flusher(loop) -> _Flusher:
    f = _FLUSHERS.get(loop)
    if f is None:
        f = _FLUSHERS[loop] = _Flusher(loop)
    return f


def protocol_class():
    """The uvicorn protocol class (`uvicorn.Config(http=...)`)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class FramingProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._pending = b""  # bytes not yet given to llhttp
            self._state = _HEAD
            self._left = 0  # bytes left in a Content-Length body, or in a chunk and its CRLF
            self._line = 0  # bytes of the size or trailer line read so far
            self._line_start = b""  # its first bytes (a size line's hex digits)
            self._ext = self._trailer_bytes = self._trailer_fields = 0
            self._seen: list[str] = []  # llhttp's events in this piece: head, chunk, chunk_done, message
            self._joined = JoinedWrites(transport, _flusher(self.loop))

        # --- llhttp's events, noted so that each piece is checked against its event --------
        def on_headers_complete(self) -> None:
            self._seen.append("head")
            before = self.cycle
            super().on_headers_complete()
            if self.cycle is not before:  # a request's cycle (not an upgrade): its writes joined
                self.cycle.transport = self._joined

        def on_chunk_header(self) -> None:
            self._seen.append("chunk")

        def on_chunk_complete(self) -> None:
            self._seen.append("chunk_done")

        def on_message_complete(self) -> None:
            self._seen.append("message")
            super().on_message_complete()

        # Trailer fields (counted from the raw lines) never become request headers: while they
        # are read, uvicorn's `on_header` appends to a list nobody reads (`_step`, entering
        # _TRAILER), not to the request's (the scope's, which `on_message_begin` made). No
        # override of `on_header`: a Python call per header of every request saved.

        # --- the stream, cut into pieces ----------------------------------------------------
        def data_received(self, data: bytes) -> None:
            self._pending += data
            while self._pending and self._state != _CLOSED and self._step():
                pass

        def _feed(self, n: int, expect: str) -> bool:
            """Give llhttp the next `n` pending bytes; False (the connection closed) when it
            refused them, or the piece did not end with the event `expect` (none: no event)."""
            piece, self._pending = self._pending[:n], self._pending[n:]
            self._seen.clear()
            super().data_received(piece)  # uvicorn's: what llhttp refuses gets its 400
            if self.transport.is_closing():
                self._state = _CLOSED
                return False
            if (expect not in self._seen) if expect else self._seen:
                self._refuse(400, "bad_http_framing", "malformed HTTP request: inconsistent framing")
                return False
            return True

        def _refuse(self, status: int, code: str, message: str) -> bool:
            self._state = _CLOSED
            self._pending = b""
            self._joined.flush()  # a response's write still held goes first
            self.transport.write(answer(status, code, message))
            self.transport.close()
            return False

        def _step(self) -> bool:
            """Feed the next piece; False when nothing more can be fed now."""
            st = self._state
            if st == _HEAD:
                # empty lines before a request line are skipped (RFC 9112 §2.2)
                lead = len(self._pending) - len(self._pending.lstrip(b"\r\n"))
                end = self._pending.find(b"\r\n\r\n", lead)
                if (end if end >= 0 else len(self._pending)) > MAX_HEAD_BYTES:
                    return self._refuse(
                        431, "headers_too_large", f"request head exceeds {MAX_HEAD_BYTES} bytes"
                    )
                if end < 0:
                    if b"\n\n" in self._pending:  # bare LF: llhttp refuses it (its 400)
                        return self._feed(len(self._pending), "")
                    return False  # wait for the blank line
                if not self._feed(end + 4, "head"):
                    return False
                self._ext = self._trailer_bytes = self._trailer_fields = 0
                framing = dict(self.headers)  # one pass in C; the last of repeated names, as before
                if b"transfer-encoding" in framing:  # llhttp frames it by the chunked coding (or refused it)
                    self._state = _SIZE_LINE
                    return True
                cl = framing.get(b"content-length")
                if cl is None:
                    return True  # no body: llhttp completed the message with the head
                # llhttp read it as a decimal length
                if not cl.strip().isdigit():
                    return self._refuse(
                        400, "bad_http_framing", "malformed HTTP request: inconsistent framing"
                    )
                left = int(cl)
                if not left:
                    return True
                if len(self._pending) < left:
                    self._state, self._left = _BODY, left
                    return True
                # the whole body has arrived (the usual case): its piece now, as the next step would
                return self._feed(left, "message")
            if st == _BODY or st == _DATA:
                n = min(self._left, len(self._pending))
                self._left -= n
                if self._left:
                    return self._feed(n, "")
                if not self._feed(n, "message" if st == _BODY else "chunk_done"):
                    return False
                self._state = _HEAD if st == _BODY else _SIZE_LINE
                return True
            # a chunk-size line or a trailer line: fed as far as it has arrived
            lf = self._pending.find(b"\n")
            n = len(self._pending) if lf < 0 else lf + 1
            if self._line < 40:
                self._line_start += self._pending[: min(n, 40 - self._line)]
            self._line += n
            if st == _SIZE_LINE:
                # beyond 16 hex digits and CRLF, a size line's bytes are extensions (RFC 9112 §7.1.1)
                if self._ext + max(0, self._line - 18) > MAX_CHUNK_EXT_BYTES:
                    return self._refuse(
                        400,
                        "bad_http_framing",
                        f"malformed HTTP request: chunk extensions exceed {MAX_CHUNK_EXT_BYTES} bytes",
                    )
                if lf < 0:
                    return self._feed(n, "")
                if not self._feed(n, "chunk"):
                    return False
                self._ext += max(0, self._line - 18)
                size = int(self._line_start.split(b";")[0].strip(b"\r\n") or b"0", 16)
                self._line, self._line_start = 0, b""
                if size:
                    self._state, self._left = _DATA, size + 2
                else:
                    self._state = _TRAILER
                    self.headers = []  # trailer fields go here, not into the request's headers
                return True
            # a trailer field line, or the blank line that ends the message
            blank = lf >= 0 and self._line <= 2
            if not blank:
                self._trailer_bytes += n
                self._trailer_fields += lf >= 0
            if self._trailer_bytes > MAX_TRAILER_BYTES or self._trailer_fields > MAX_TRAILER_FIELDS:
                return self._refuse(
                    400,
                    "bad_http_framing",
                    f"malformed HTTP request: trailer fields exceed {MAX_TRAILER_BYTES} bytes "
                    f"or {MAX_TRAILER_FIELDS} fields",
                )
            if lf < 0:
                return self._feed(n, "")
            if not self._feed(n, "message" if blank else ""):
                return False
            self._line, self._line_start = 0, b""
            if blank:
                self._state = _HEAD
            return True

        # uvicorn closes the connection itself, not through the cycle, when the server shuts
        # down after a response and when a kept-alive connection idles: the response's last
        # write may still be held (a stream's terminating chunk), so it goes first
        def shutdown(self) -> None:
            self._joined.flush()
            super().shutdown()

        def timeout_keep_alive_handler(self) -> None:
            self._joined.flush()
            super().timeout_keep_alive_handler()

        def send_400_response(self, msg: str) -> None:
            # llhttp refused the bytes: an OpenAI-shaped 400 instead of uvicorn's plain text
            self._state = _CLOSED
            self._joined.flush()
            self.transport.write(answer(400, "bad_http_framing", f"malformed HTTP request: {msg}"))
            self.transport.close()

    return FramingProtocol
