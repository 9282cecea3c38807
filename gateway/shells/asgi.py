"""The lean shell: a raw ASGI application around `gateway.rungs.base.GatewayBase`, no framework.

Routing is a dict lookup on (method, path); the guard runs on the raw header list and the
body limit while reading; responses go out as one `http.response.start` and one body
message (streams: one message per upstream chunk).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from gateway.errors import GuardError
from gateway.pipeline import CHAT_PATH as CHAT
from gateway.pipeline import Request
from gateway.rungs.base import GatewayBase, Response, StreamResponse, error
from gateway.stages.guard import check_headers, declared_too_large, discard_body, read_body

_perf = time.perf_counter_ns
_ROUTES = frozenset(
    ("/health", "/v1/models", "/metrics", "/audit/root", "/audit/consistency", "/debug/probes")
)


def _query(scope, name: str) -> str | None:
    vals = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get(name)
    return vals[0] if vals else None


class AsgiShell:
    def __init__(self, gateway: GatewayBase):
        self.gateway = gateway
        self._max_header = gateway.config.max_header_bytes
        self._max_body = gateway.config.max_body_bytes
        self._count = gateway.metrics.count_request

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope["path"]
            if path == CHAT and scope["method"] == "POST":
                t0 = _perf()
                headers = scope["headers"]
                too_large = declared_too_large(headers, self._max_body)
                if too_large is not None:  # declared too large: drop the body, then answer
                    await discard_body(receive, 8 * self._max_body)
                    resp = error(too_large.status, too_large.message, too_large.code, too_large.headers)
                else:
                    try:
                        body = await read_body(receive, self._max_body)
                    except GuardError as e:
                        resp = error(e.status, e.message, e.code, e.headers)
                    else:
                        resp = await self.gateway.admitted_chat(Request("POST", CHAT, headers, body), t0)
                self._count(CHAT, resp.status)
                if type(resp) is StreamResponse:
                    await _send_stream(send, receive, resp)
                else:
                    await _send(send, resp)
                return
            resp = await self._other(scope, receive, path)
            # bounded label set: one per route, never the raw path (proof indexes, scans)
            route = (
                path if path in _ROUTES else "/audit/proof" if path.startswith("/audit/proof/") else "other"
            )
            self._count(route, resp.status)
            await _send(send, resp)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _other(self, scope, receive, path: str) -> Response:
        g = self.gateway
        method = scope["method"]
        try:
            check_headers(scope["headers"], self._max_header, self._max_body)
            await read_body(receive, self._max_body)
        except GuardError as e:
            return error(e.status, e.message, e.code, e.headers)
        if method == "GET":
            if path == "/health":
                return g.health()
            if path == "/v1/models":
                return g.models()
            if path == "/metrics":
                return g.metrics_text()
            if path == "/audit/root":
                return await g.audit_root()
            if path == "/audit/consistency":
                return await g.audit_consistency(_query(scope, "old"), _query(scope, "shard"))
            if path.startswith("/audit/proof/"):
                return await g.audit_proof(path[len("/audit/proof/") :], _query(scope, "shard"))
            if path == "/debug/probes":
                return await g.debug_probes(
                    "reset"
                    in parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True),
                    _query(scope, "workers") == "all",
                )
        known = path in (
            "/health",
            "/v1/models",
            "/metrics",
            "/audit/root",
            "/audit/consistency",
            CHAT,
            "/debug/probes",
        ) or path.startswith("/audit/proof/")
        if known:
            return error(405, f"method {method} not allowed on {path}", "method_not_allowed")
        return error(404, f"no route for {method} {path}", "not_found")

    async def _lifespan(self, receive, send):
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.gateway.startup()
                except Exception as e:  # report, so the server refuses to start
                    await send({"type": "lifespan.startup.failed", "message": f"{type(e).__name__}: {e}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                try:
                    await self.gateway.shutdown()
                except Exception as e:
                    await send({"type": "lifespan.shutdown.failed", "message": f"{type(e).__name__}: {e}"})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send_stream(send, receive, resp: StreamResponse) -> None:
    """Relay a stream. Servers drop sends after a client hangs up without telling the app, so
    a watcher on `receive` notices the disconnect and cancels the relay at once (the pipeline
    then audits the request as 499 and closes the upstream stream), as Starlette does."""
    import asyncio

    relay = asyncio.current_task()
    assert relay is not None  # the server runs each request as a task
    gone = False

    async def watch():
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        relay.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await send({"type": "http.response.start", "status": resp.status, "headers": resp.headers})
        async for chunk in resp.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not gone:
            raise  # cancelled by someone else (shutdown): not ours to swallow
        relay.uncancel()
    finally:
        watcher.cancel()
        await resp.chunks.aclose()


async def _send(send, resp) -> None:
    body = resp.body
    await send(
        {
            "type": "http.response.start",
            "status": resp.status,
            "headers": [*resp.headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
