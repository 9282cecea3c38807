"""Smuggling guard: checks the raw request head at the ASGI level, before anything else.

Rejects (status, code):
  duplicate Content-Length                       400 duplicate_content_length
  Content-Length together with Transfer-Encoding 400 ambiguous_framing
  Transfer-Encoding other than exactly `chunked` 400 unsupported_transfer_encoding
  a Content-Length that is not a decimal integer 400 invalid_content_length
  header names outside the RFC 9110 token set,
  or values with control bytes (not HTAB)        400 invalid_header
  header block larger than max_header_bytes,
  or more than MAX_HEADER_FIELDS header fields   431 headers_too_large (RFC 6585 §5)
  declared body larger than max_body_bytes       413 body_too_large
The body limit is also enforced while reading (`read_body`), for chunked bodies.

`check_scope` runs in front of the shell (gateway/serving/server.py wraps every app in
`FramingGuard`) on what the server decided from the request line, which the header checks
cannot see (found by tests/reliability/framing_cases.py under uvicorn's httptools):
  an HTTP version other than 1.0 / 1.1 (httptools passes 0.9 and 2.0 on) 505 unsupported_http_version
  HTTP/1.1 without Host, an empty Host, or more than one (RFC 9112 §3.2) 400 invalid_host
  Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)                400 ambiguous_framing

Most HTTP parsers (llhttp, h11) already refuse these; the guard makes the gateway's answer
the same whichever server runs it, and closes the gaps some servers leave open.
"""

from __future__ import annotations

import re
from operator import itemgetter

from gateway.errors import GuardError

# RFC 9110 token for names (lowercased by the server); field values: VCHAR, obs-text, SP, HTAB.
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]").search
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search


# hyper's default (granian, rs-server): a head with more header fields is refused with 431
MAX_HEADER_FIELDS = 100

# Header names already checked (clients send the same few names over and over); bounded.
_GOOD_NAMES: set[bytes] = set()

_name = itemgetter(0)  # the names of a header list in one pass in C: list(map(_name, headers))


def check_scope(scope) -> GuardError | None:
    """The request line's verdicts (see the module docstring); None when it is sound."""
    version = scope.get("http_version")
    if version != "1.1" and version != "1.0":
        return GuardError(
            505, "unsupported_http_version", f"HTTP/{version} is not supported (HTTP/1.0 and 1.1 only)"
        )
    headers = scope["headers"]
    names = list(map(_name, headers))
    hosts = names.count(b"host")
    if hosts > 1:
        return GuardError(400, "invalid_host", "more than one Host header")
    # granian fills in an empty Host when there is none
    if (hosts == 0 and version == "1.1") or (hosts and not headers[names.index(b"host")][1].strip()):
        return GuardError(
            400, "invalid_host", "an HTTP/1.1 request without a Host header (or with an empty one)"
        )
    if version == "1.0" and b"transfer-encoding" in names:
        return GuardError(400, "ambiguous_framing", "Transfer-Encoding in an HTTP/1.0 request")
    return None


def check_headers(headers, max_header_bytes: int, max_body_bytes: int) -> bytes | None:
    """Raw ASGI headers (list of (name, value) bytes pairs) -> the Authorization value (or
    None; found in the same pass so the hot path reads the headers once), or GuardError."""
    content_length = None
    authorization = None
    te = None
    total = 0
    for name, value in headers:
        total += len(name) + len(value) + 4
        if name == b"content-length":
            if content_length is not None:
                raise GuardError(400, "duplicate_content_length", "duplicate Content-Length header")
            if not value.isdigit() or len(value) > 18:
                raise GuardError(400, "invalid_content_length", "Content-Length is not a decimal integer")
            content_length = int(value)
        elif name == b"authorization":
            authorization = value
        elif name == b"transfer-encoding":
            if te is not None:
                raise GuardError(
                    400, "unsupported_transfer_encoding", "more than one Transfer-Encoding header"
                )
            te = value
        if name not in _GOOD_NAMES:
            if _BAD_NAME(name) is not None or not name:
                raise GuardError(400, "invalid_header", "invalid bytes in a header name")
            if len(_GOOD_NAMES) < 4096:
                _GOOD_NAMES.add(name)
        if _BAD_VALUE(value) is not None:
            raise GuardError(400, "invalid_header", "invalid bytes in a header value")
    if total > max_header_bytes:
        raise GuardError(431, "headers_too_large", f"request headers exceed {max_header_bytes} bytes")
    if len(headers) > MAX_HEADER_FIELDS:
        raise GuardError(431, "headers_too_large", f"more than {MAX_HEADER_FIELDS} header fields")
    if te is not None:
        if content_length is not None:
            raise GuardError(400, "ambiguous_framing", "Content-Length together with Transfer-Encoding")
        if te.strip().lower() != b"chunked":
            raise GuardError(400, "unsupported_transfer_encoding", "Transfer-Encoding other than chunked")
    if content_length is not None and content_length > max_body_bytes:
        raise GuardError(413, "body_too_large", f"request body exceeds {max_body_bytes} bytes")
    return authorization


def declared_too_large(headers, max_body_bytes: int) -> GuardError | None:
    """The one verdict a shell gives before reading the body: a declared Content-Length over
    the limit (413; the body is then discarded, not read). Everything else about the head is
    judged by the pipeline's guard (`check_headers`), after the bounded read."""
    names = list(map(_name, headers))
    if names.count(b"content-length") != 1 or b"transfer-encoding" in names:
        return None  # none, or ambiguous framing: the guard's 400, after the bounded read
    declared = headers[names.index(b"content-length")][1]
    if declared.isdigit() and len(declared) <= 18 and int(declared) > max_body_bytes:
        return GuardError(413, "body_too_large", f"request body exceeds {max_body_bytes} bytes")
    return None


async def discard_body(receive, cap: int) -> None:
    """Read and drop a rejected request's body, up to `cap` bytes, before answering: a client
    that sends `Connection: close` (or gets it after a 413) would otherwise see the socket
    reset while still sending, and never read the 413."""
    seen = 0
    while seen <= cap:
        msg = await receive()
        if msg["type"] != "http.request":
            return
        seen += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return


async def read_body(receive, max_body_bytes: int) -> bytes:
    """The whole request body from an ASGI `receive`, failing with 413 as soon as it grows
    past the limit (never buffering more than the limit plus one chunk)."""
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body", False):
        if len(body) > max_body_bytes:
            raise GuardError(413, "body_too_large", f"request body exceeds {max_body_bytes} bytes")
        return body
    parts = [body]
    size = len(body)
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise GuardError(400, "client_disconnected", "client disconnected while sending the body")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            if msg.get("more_body", False):
                await discard_body(receive, 8 * max_body_bytes)
            raise GuardError(413, "body_too_large", f"request body exceeds {max_body_bytes} bytes")
        parts.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(parts)
