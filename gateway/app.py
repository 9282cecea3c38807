"""The gateway pipeline, independent of the ASGI shell that carries it.

    request -> guard -> auth -> parse -> WAF -> route -> rate limit -> adapter -> forwarder
            <- adapter (response) <- ...                 spawn background audit job ->

A shell reads the raw head and body (running the guard), calls `Gateway.chat(...)` and
writes the `Response` / `StreamResponse` it gets back. Errors use the OpenAI shape
{"error": {"message", "type", "code"}}. Audited: every request that passed auth and whose
body parsed (WAF blocks, unknown models, rate-limit rejections and upstream failures
included); guard, auth and malformed-body rejections are not (they carry no identity or
model to account for, and auditing them would let anyone fill the ledger).
"""
from __future__ import annotations

import itertools
import math
import os
import time
from typing import AsyncIterator

import orjson

from gateway.background import AuditJob, BackgroundAudit
from gateway.config import Config
from gateway.errors import InvalidInput
from gateway.metrics import Metrics
from gateway.stages.forwarder import UpstreamError, UpstreamMalformed, UpstreamStatusError

_perf = time.perf_counter_ns
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_ROLES = frozenset(("system", "user", "assistant", "tool", "developer", "function"))
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
                502: "upstream_error", 504: "upstream_error"}


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, body: bytes, headers: list | None = None):
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else [_JSON]


class StreamResponse:
    __slots__ = ("status", "headers", "chunks")

    def __init__(self, chunks: AsyncIterator[bytes], headers: list):
        self.status = 200
        self.headers = headers
        self.chunks = chunks


def error_body(status: int, message: str, code: str, etype: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": etype or _ERROR_TYPES.get(status, "invalid_request_error"),
                                   "code": code}})


def error(status: int, message: str, code: str, headers: list | None = None) -> Response:
    h = [_JSON] if headers is None else [_JSON, *headers]
    return Response(status, error_body(status, message, code), h)


class BadRequest(Exception):
    def __init__(self, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.message, self.code = message, code


def _prompt_text(req) -> str:
    """Validate an OpenAI chat request (already parsed) and return its prompt text for the WAF."""
    if type(req) is not dict:
        raise BadRequest("request body must be a JSON object")
    model = req.get("model")
    if type(model) is not str or not model:
        raise BadRequest("'model' is required and must be a non-empty string", "invalid_model")
    msgs = req.get("messages")
    if type(msgs) is not list or not msgs:
        raise BadRequest("'messages' is required and must be a non-empty array", "invalid_messages")
    parts = []
    for i, m in enumerate(msgs):
        if type(m) is not dict:
            raise BadRequest(f"messages[{i}] must be an object", "invalid_messages")
        role = m.get("role")
        if role not in _ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}", "invalid_messages")
        c = m.get("content")
        if type(c) is str:
            parts.append(c)
        elif type(c) is list:
            for j, p in enumerate(c):
                if type(p) is not dict or type(p.get("type")) is not str:
                    raise BadRequest(f"messages[{i}].content[{j}] must be a content part object", "invalid_messages")
                t = p.get("text")
                if t is not None:
                    if type(t) is not str:
                        raise BadRequest(f"messages[{i}].content[{j}].text must be a string", "invalid_messages")
                    parts.append(t)
        elif c is not None or role != "assistant":
            raise BadRequest(f"messages[{i}].content must be a string or an array of parts", "invalid_messages")
    stream = req.get("stream")
    if stream is not None and type(stream) is not bool:
        raise BadRequest("'stream' must be a boolean", "invalid_stream")
    mt = req.get("max_tokens")
    if mt is not None and (type(mt) is not int or mt < 1):
        raise BadRequest("'max_tokens' must be a positive integer", "invalid_max_tokens")
    return parts[0] if len(parts) == 1 else "\n".join(parts)


class Gateway:
    def __init__(self, config: Config, *, shell: str = "asgi", server: str = "uvicorn"):
        self.config = config
        self.shell = shell
        self.server = server
        sw = self.switches = config.switches
        self.metrics = Metrics()
        self.auth = sw.load("auth")({k.id: k.sha256 for k in config.keys})
        self.waf = sw.load("waf")([dict(r) for r in config.waf_rules])
        self.ratelimit = sw.load("ratelimit")({k.id: (k.rpm, k.tpm) for k in config.keys if k.rpm is not None})
        adapter_cls = sw.load("adapter")
        self.adapters = {"openai": adapter_cls("openai"), "anthropic": adapter_cls("anthropic")}
        self.forwarder = sw.load("forwarder")(timeout_s=config.upstream_timeout_s, pool=config.upstream_pool)
        self.background = BackgroundAudit(
            config.ledger_dir, sw, self.metrics, queue_size=config.queue_size, policy=config.queue_policy,
            fsync=config.fsync, group_delay_ms=config.group_delay_ms, batch_window_ms=config.batch_window_ms)
        self._ids = itertools.count()
        self._id_prefix = f"req-{os.getpid():x}-{time.time_ns() & 0xffffffff:x}-"
        # upstream request headers per upstream (fixed at start)
        self._up_headers = {}
        for up in config.models.values():
            h = [("Content-Type", "application/json")]
            if up.kind == "anthropic":
                h.append(("anthropic-version", "2023-06-01"))
                if up.api_key:
                    h.append(("x-api-key", up.api_key))
            elif up.api_key:
                h.append(("Authorization", f"Bearer {up.api_key}"))
            self._up_headers[up] = h
        self.probes = None

    # --- lifecycle ----------------------------------------------------------------------
    async def startup(self) -> None:
        self.background.start()
        if os.environ.get("GATEWAYLAB_PROBES") == "1":
            import asyncio

            from gateway import probes
            self.probes = probes.start(asyncio.get_running_loop())

    async def shutdown(self) -> None:
        await self.background.drain()
        await self.forwarder.aclose()
        if self.probes is not None:
            self.probes.stop()
            self.probes = None

    # --- the chat pipeline --------------------------------------------------------------
    async def chat(self, authorization: bytes | None, body: bytes, t0: int) -> Response | StreamResponse:
        """`t0` is perf_counter_ns() when the shell started on the request (guard included)."""
        stage = self.metrics.stage
        t1 = _perf()
        stage["guard"].observe_ns(t1 - t0)
        key_id = self.auth.check(authorization)
        t2 = _perf()
        stage["auth"].observe_ns(t2 - t1)
        if key_id is None:
            return error(401, "missing or invalid API key" if authorization else "missing API key (Authorization: Bearer ...)",
                         "invalid_api_key")
        try:
            req = orjson.loads(body)
            text = _prompt_text(req)
        except orjson.JSONDecodeError as e:
            return error(400, f"invalid JSON body: {e}", "invalid_json")
        except BadRequest as e:
            return error(400, e.message, e.code)
        t3 = _perf()
        model = req["model"]
        time_ns = time.time_ns()
        rid = self._id_prefix + str(next(self._ids))
        rule = self.waf.scan(text)
        t4 = _perf()
        stage["waf"].observe_ns(t4 - t3)
        prompt_tokens = (len(text) + 3) // 4
        if rule is not None:
            self.metrics.counters["waf_blocks"] += 1
            resp = error(403, f"request blocked by WAF rule {rule}", "waf_blocked")
            return await self._finish(resp, t0, time_ns, rid, key_id, model, body, prompt_tokens, "block:" + rule)
        route = self.config.route(model)
        if route is None:
            resp = error(404, f"the model {model!r} does not exist", "model_not_found")
            return await self._finish(resp, t0, time_ns, rid, key_id, model, body, prompt_tokens, "allow")
        upstream, upstream_model = route
        cost = prompt_tokens + (req.get("max_tokens") or 0)
        wait = self.ratelimit.check(key_id, cost, time.monotonic_ns())
        t5 = _perf()
        stage["ratelimit"].observe_ns(t5 - t4)
        if wait > 0.0:
            if math.isinf(wait):
                resp = error(429, f"request needs {cost} tokens, more than this key's per-minute limit",
                             "tokens_exceed_limit")
            else:
                resp = error(429, f"rate limit exceeded; retry after {wait:.3f}s", "rate_limit_exceeded",
                             [(b"retry-after", str(max(1, math.ceil(wait))).encode())])
            return await self._finish(resp, t0, time_ns, rid, key_id, model, body, prompt_tokens, "allow")
        adapter = self.adapters[upstream.kind]
        try:
            up_body = adapter.to_upstream(body, upstream_model)
        except InvalidInput as e:
            resp = error(400, f"request cannot be sent to a {upstream.kind} upstream: {e}", "invalid_request")
            return await self._finish(resp, t0, time_ns, rid, key_id, model, body, prompt_tokens, "allow")
        t6 = _perf()
        stage["adapter_request"].observe_ns(t6 - t5)
        headers = self._up_headers[upstream]
        if req.get("stream") is True:
            return await self._stream(adapter, upstream, up_body, headers, t0, time_ns, rid, key_id, model,
                                      body, prompt_tokens)
        try:
            status, rbody = await self.forwarder.send(upstream.url, up_body, headers)
            t7 = _perf()
            stage["forward"].observe_ns(t7 - t6)
            if status >= 500 or status < 200 or 300 <= status < 400:
                raise UpstreamStatusError(status, rbody)
            if status >= 400:
                resp = Response(status, rbody if _is_openai_error(rbody) else error_body(
                    status, f"upstream answered HTTP {status}", "upstream_status"))
            else:
                try:
                    out = adapter.from_upstream(rbody, model)
                except InvalidInput as e:
                    raise UpstreamMalformed(f"upstream sent a malformed response: {e}") from None
                stage["adapter_response"].observe_ns(_perf() - t7)
                resp = Response(200, out, [_JSON, (b"x-request-id", rid.encode())])
        except UpstreamError as e:
            self.metrics.counters["upstream_errors"] += 1
            resp = error(e.http_status, str(e), e.code)
        return await self._finish(resp, t0, time_ns, rid, key_id, model, body, prompt_tokens, "allow")

    async def _finish(self, resp: Response, t0, time_ns, rid, key_id, model, body, prompt_tokens, waf) -> Response:
        ts = _perf()
        job = AuditJob(time_ns, rid, key_id, model, resp.status, body, resp.body, False, prompt_tokens,
                       (ts - t0) // 1000, waf)
        task = self.background._spawn_background(job)
        if self.background.saturated:
            await task  # backpressure: the queue is full and the policy loses nothing
        te = _perf()
        stage = self.metrics.stage
        stage["spawn"].observe_ns(te - ts)
        stage["total"].observe_ns(te - t0)
        return resp

    async def _stream(self, adapter, upstream, up_body, headers, t0, time_ns, rid, key_id, model, body,
                      prompt_tokens):
        agen = self.forwarder.stream(upstream.url, up_body, headers)
        try:
            first = await agen.__anext__()
        except StopAsyncIteration:
            first = b""
        except UpstreamError as e:
            self.metrics.counters["upstream_errors"] += 1
            resp = error(e.http_status, str(e), e.code)
            return await self._finish(resp, t0, time_ns, rid, key_id, model, body, prompt_tokens, "allow")
        return StreamResponse(self._relay(adapter, first, agen, t0, time_ns, rid, key_id, model, body, prompt_tokens),
                              [*_SSE_HEADERS, (b"x-request-id", rid.encode())])

    async def _relay(self, adapter, first, agen, t0, time_ns, rid, key_id, model, body, prompt_tokens):
        """Upstream SSE bytes -> OpenAI SSE events, sent as each upstream chunk arrives."""
        collected: list[bytes] = []
        status = 499  # until we know better: the client went away
        buf = b""
        chunk = first
        try:
            try:
                while True:
                    if chunk:
                        if b"\r" in chunk:
                            chunk = chunk.replace(b"\r\n", b"\n")
                        buf += chunk
                        out = []
                        while True:
                            end = buf.find(b"\n\n")
                            if end < 0:
                                break
                            event, buf = buf[:end], buf[end + 2:]
                            data = _sse_data(event)
                            if data is not None:
                                for c in adapter.stream_event(data, model):
                                    collected.append(c)
                                    out.append(b"data: " + c + b"\n\n")
                        if out:
                            yield b"".join(out)
                    try:
                        chunk = await agen.__anext__()
                    except StopAsyncIteration:
                        break
                status = 200
                yield b"data: [DONE]\n\n"
            except (UpstreamError, InvalidInput) as e:
                self.metrics.counters["upstream_errors"] += 1
                if isinstance(e, UpstreamError):
                    status, code, msg = e.http_status, e.code, str(e)
                else:
                    status, code, msg = 502, "upstream_malformed", f"upstream sent a malformed stream event: {e}"
                yield b"data: " + error_body(status, msg, code) + b"\n\n"
        finally:
            # audit first (synchronous), so a cancelled client task cannot skip it
            if status == 499:
                self.metrics.counters["streams_abandoned"] += 1
            ts = _perf()
            job = AuditJob(time_ns, rid, key_id, model, status, body, collected, True, prompt_tokens,
                           (ts - t0) // 1000, "allow")
            self.background._spawn_background(job)
            self.metrics.stage["total"].observe_ns(_perf() - t0)
            await agen.aclose()

    # --- other endpoints ----------------------------------------------------------------
    def models(self) -> Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "gatewaylab"} for name in self.config.models]
        return Response(200, orjson.dumps({"object": "list", "data": data}))

    def health(self) -> Response:
        bg = self.background
        return Response(200, orjson.dumps({
            "status": "ok", "pid": os.getpid(), "shell": self.shell, "server": self.server,
            "mode": self.switches.mode, "label": self.switches.label(), "switches": self.switches.as_dict(),
            "queue": {"policy": bg.policy, "size": bg.queue_size, "depth": bg._queue.qsize() if bg._queue else 0,
                      "dropped": bg.dropped},
            "audit": {"records": bg.ledger.count, "spawned": bg.spawned},
        }))

    def metrics_text(self) -> Response:
        return Response(200, self.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])

    async def audit_root(self) -> Response:
        async with self.background.io_lock:
            led = self.background.ledger
            return Response(200, orjson.dumps({"count": led.count, "root": led.root(),
                                               "durable_count": led.durable_count}))

    async def audit_proof(self, index: str) -> Response:
        return await self._ledger_proof(index, "leaf index", "invalid_index",
                                        self.background.ledger.inclusion_proof, 404, "index_out_of_range")

    async def audit_consistency(self, old: str | None) -> Response:
        if old is None:
            return error(400, "query parameter 'old' is required", "missing_old")
        return await self._ledger_proof(old, "'old'", "invalid_old",
                                        self.background.ledger.consistency_proof, 400, "old_out_of_range")

    async def _ledger_proof(self, raw: str, what: str, invalid_code: str, prove, range_status: int,
                            range_code: str) -> Response:
        """Parse an integer argument, then build a proof under the ledger's I/O lock."""
        from gateway.errors import AuditIndexError
        try:
            n = int(raw)
        except ValueError:
            return error(400, f"{what} must be an integer, got {raw!r}", invalid_code)
        async with self.background.io_lock:
            try:
                proof = prove(n)
            except AuditIndexError as e:
                return error(range_status, str(e), range_code)
        return Response(200, orjson.dumps(proof))

    def debug_probes(self, reset: bool) -> Response:
        if self.probes is None:
            return error(404, "probes are off (start the gateway with GATEWAYLAB_PROBES=1)", "probes_off")
        from gateway import probes
        return Response(200, orjson.dumps(probes.snapshot(reset=reset)))


def _sse_data(event: bytes) -> bytes | None:
    """The `data:` payload of one SSE event block (several data lines joined by \\n)."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].lstrip(b" ")
    lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _is_openai_error(body: bytes) -> bool:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return type(obj) is dict and type(obj.get("error")) is dict
