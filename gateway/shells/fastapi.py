"""The FastAPI shell, in the style of the Aegis gateway (docs/claims.md): FastAPI routes, a smuggling-guard middleware
at the ASGI level, exception handlers for the OpenAI error shape. Same `Gateway` pipeline
as the lean shell, so the two differ only in what the framework costs.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response as FastResponse
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import GuardError
from gateway.pipeline import CHAT_PATH
from gateway.pipeline import Request as ChatRequest
from gateway.rungs.base import GatewayBase, Response, StreamResponse, error
from gateway.stages.guard import check_headers, declared_too_large, discard_body

_perf = time.perf_counter_ns


class GuardMiddleware:
    """Raw-header checks before routing; the body limit enforced on every `receive`."""

    def __init__(self, app, max_header_bytes: int, max_body_bytes: int):
        self.app = app
        self.max_header = max_header_bytes
        self.max_body = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = _perf()
        # the chat route's head is judged by the pipeline's guard after the bounded read
        # (only a declared oversize is refused first); every other route's here
        try:
            if scope["path"] == CHAT_PATH:
                too_large = declared_too_large(scope["headers"], self.max_body)
                if too_large is not None:
                    raise too_large
            else:
                check_headers(scope["headers"], self.max_header, self.max_body)
        except GuardError as e:
            if e.status == 413:
                await discard_body(receive, 8 * self.max_body)
            return await _asgi_send(send, error(e.status, e.message, e.code, e.headers))
        scope["gatewaylab.t0"] = t0
        seen = 0
        limit = self.max_body

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    if msg.get("more_body", False):
                        await discard_body(receive, 8 * limit)
                    raise GuardError(413, "body_too_large", f"request body exceeds {limit} bytes")
            return msg

        await self.app(scope, limited_receive, send)


async def _asgi_send(send, resp: Response) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": resp.status,
            "headers": [*resp.headers, (b"content-length", str(len(resp.body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": resp.body})


def _to_fastapi(resp):
    if isinstance(resp, StreamResponse):
        return StreamingResponse(
            resp.chunks, status_code=resp.status, headers={k.decode(): v.decode() for k, v in resp.headers}
        )
    return FastResponse(
        content=resp.body, status_code=resp.status, headers={k.decode(): v.decode() for k, v in resp.headers}
    )


def make_app(gw: GatewayBase):
    @asynccontextmanager
    async def lifespan(app):
        await gw.startup()
        try:
            yield
        finally:
            await gw.shutdown()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    count = gw.metrics.count_request

    @app.exception_handler(GuardError)
    async def guard_error(request: Request, e: GuardError):
        count("/v1/chat/completions" if request.url.path == "/v1/chat/completions" else "other", e.status)
        return _to_fastapi(error(e.status, e.message, e.code, e.headers))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        count("other", e.status_code)
        return _to_fastapi(error(e.status_code, f"{e.detail}: {request.method} {request.url.path}", code))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await request.body()
        resp = await gw.admitted_chat(
            ChatRequest("POST", CHAT_PATH, request.scope["headers"], body),
            request.scope.get("gatewaylab.t0") or _perf(),
        )
        count("/v1/chat/completions", resp.status)
        return _to_fastapi(resp)

    @app.get("/v1/models")
    async def models():
        count("/v1/models", 200)
        return _to_fastapi(gw.models())

    @app.get("/health")
    async def health():
        count("/health", 200)
        return _to_fastapi(gw.health())

    @app.get("/metrics")
    async def metrics():
        count("/metrics", 200)
        return _to_fastapi(gw.metrics_text())

    @app.get("/audit/root")
    async def audit_root():
        count("/audit/root", 200)
        return _to_fastapi(await gw.audit_root())

    @app.get("/audit/proof/{index}")
    async def audit_proof(index: str, request: Request):
        resp = await gw.audit_proof(index, request.query_params.get("shard"))
        count("/audit/proof", resp.status)
        return _to_fastapi(resp)

    @app.get("/audit/consistency")
    async def audit_consistency(request: Request):
        resp = await gw.audit_consistency(request.query_params.get("old"), request.query_params.get("shard"))
        count("/audit/consistency", resp.status)
        return _to_fastapi(resp)

    @app.get("/debug/probes")
    async def debug_probes(request: Request):
        return _to_fastapi(
            await gw.debug_probes(
                "reset" in request.query_params, request.query_params.get("workers") == "all"
            )
        )

    return GuardMiddleware(app, gw.config.max_header_bytes, gw.config.max_body_bytes)
