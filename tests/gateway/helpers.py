"""Helpers for the gateway tests: a plain HTTP call that does not raise on 4xx/5xx, request
bodies and headers, and the check every error answer must pass (OpenAI's error shape).
Imported as `tests.gateway.helpers` (the tests folder is a package; nothing edits sys.path)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

from gateway.ladder import RUNGS

API_KEY = "sk-gatewaylab-test"
# every rung under each of its ASGI shells (gateway/ladder.py; rs-server serves itself: None)
MODE_SHELLS = [(m, s) for m, r in RUNGS.items() for s in (r.shells or (None,))]


def http(
    method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None, timeout: float = 10
):
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


# --- raw HTTP/1.1 over a socket, for framing attacks ------------------------------------

GOOD = json.dumps(chat_body()).encode()


def raw(url: str, request: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    host, port = url.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep:
                    cl = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                    if cl and len(body) >= int(cl[0].split(b":")[1]):
                        break
        except TimeoutError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def head(extra: str, body: bytes = GOOD) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode() + body


FRAMING = {
    "duplicate content-length": (
        lambda: head(f"Content-Length: {len(GOOD)}\r\nContent-Length: {len(GOOD)}\r\n"),
        400,
    ),
    "content-length with transfer-encoding": (
        lambda: head(
            f"Content-Length: {len(GOOD)}\r\nTransfer-Encoding: chunked\r\n",
            f"{len(GOOD):x}\r\n".encode() + GOOD + b"\r\n0\r\n\r\n",
        ),
        400,
    ),
    "unknown transfer-encoding": (lambda: head("Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 400),
    "transfer-encoding not chunked": (
        lambda: head(f"Transfer-Encoding: identity\r\nContent-Length: {len(GOOD)}\r\n"),
        400,
    ),
    "invalid header bytes": (lambda: head(f"X-Evil: a\x01b\r\nContent-Length: {len(GOOD)}\r\n"), 400),
    "oversized headers": (
        lambda: head("X-Big: " + "a" * 40000 + f"\r\nContent-Length: {len(GOOD)}\r\n"),
        431,  # RFC 6585 §5, on every rung (docs/reliability.md)
    ),
    "oversized chunked body": (
        lambda: head(
            "Transfer-Encoding: chunked\r\n",
            b"".join(f"{65536:x}\r\n".encode() + b"a" * 65536 + b"\r\n" for _ in range(20)) + b"0\r\n\r\n",
        ),
        413,
    ),
}
