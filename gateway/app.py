"""The gateway's lifecycle, endpoints and I/O, around the pure pipeline (gateway/pipeline.py).

    shell -> Gateway.chat(Request, t0) -> Response | StreamResponse
             decide() -> Rejection            -> error answer (audited when decided so)
                      -> Forwarding -> forwarder -> respond() / StreamRelay -> answer
             every audited answer -> BackgroundAudit.submit(AuditJob)

Two implementations of one interface (`GatewayBase`), picked by `make_gateway` from the mode:
`Gateway` for rungs 0 and 1 (`py`, `py+rs`: the Python pipeline calling the twins the
switches choose) and `gateway.rs_core.RsCoreGateway` for rung 2 (`rs-core`: one awaitable
Rust call per request). Shells talk to `GatewayBase` only. Errors use the OpenAI shape
{"error": {"message", "type", "code"}} (gateway/errors.py has the status -> type table).
"""
from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
import os
import time
from typing import AsyncIterator

import orjson

from gateway.audit.job import AuditJob
from gateway.background import BackgroundAudit
from gateway.config import Config
from gateway.errors import AuditIndexError, AuditUnavailable, InvalidInput, UpstreamError, UpstreamStatusError
from gateway.metrics import Metrics
from gateway.pipeline import Context, Forwarding, Pipeline, Rejection, Request, error_body, stages_label
from gateway.plugins import PreCallHooks

_perf = time.perf_counter_ns
_JSON = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


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


def error(status: int, message: str, code: str, headers: list | None = None) -> Response:
    h = [_JSON] if headers is None else [_JSON, *headers]
    return Response(status, error_body(status, message, code), h)


def make_gateway(config: Config, *, shell: str = "asgi", server: str = "uvicorn") -> "GatewayBase":
    if config.switches.mode == "rs-core":
        from gateway.rs_core import RsCoreGateway
        return RsCoreGateway(config, shell=shell, server=server)
    return Gateway(config, shell=shell, server=server)


class GatewayBase(ABC):
    """What a shell calls. Subclasses provide the chat pipeline, the ledger and health details."""

    def __init__(self, config: Config, *, shell: str, server: str):
        self.config = config
        self.shell = shell
        self.server = server
        self.switches = config.switches
        self.metrics = Metrics()
        self.probes = None
        self._id_prefix = f"req-{os.getpid():x}-{time.time_ns() & 0xffffffff:x}-"

    # --- lifecycle ----------------------------------------------------------------------
    async def startup(self) -> None:
        if os.environ.get("GATEWAYLAB_PROBES") == "1":
            import asyncio

            from gateway import probes
            self.probes = probes.start(asyncio.get_running_loop())

    async def shutdown(self) -> None:
        if self.probes is not None:
            self.probes.stop()
            self.probes = None

    # --- the chat endpoint ----------------------------------------------------------------
    @abstractmethod
    async def chat(self, request: Request, t0: int) -> Response | StreamResponse:
        """`t0` is perf_counter_ns() when the shell started on the request."""

    # --- ledger ---------------------------------------------------------------------------
    @abstractmethod
    async def audit_root(self) -> Response:
        """{"count", "root", "durable_count"} of the ledger."""

    @abstractmethod
    async def _prove(self, kind: str, n: int) -> bytes:
        """An inclusion ("inclusion", leaf n) or consistency ("consistency", old n) proof as
        JSON; AuditIndexError when n is out of range."""

    async def audit_proof(self, index: str) -> Response:
        return await self._ledger_proof(index, "leaf index", "invalid_index", "inclusion", 404, "index_out_of_range")

    async def audit_consistency(self, old: str | None) -> Response:
        if old is None:
            return error(400, "query parameter 'old' is required", "missing_old")
        return await self._ledger_proof(old, "'old'", "invalid_old", "consistency", 400, "old_out_of_range")

    async def _ledger_proof(self, raw: str, what: str, invalid_code: str, kind: str, range_status: int,
                            range_code: str) -> Response:
        try:
            n = int(raw)
        except ValueError:
            return error(400, f"{what} must be an integer, got {raw!r}", invalid_code)
        try:
            proof = await self._prove(kind, n)
        except AuditIndexError as e:
            return error(range_status, str(e), range_code)
        return Response(200, proof)

    # --- other endpoints ------------------------------------------------------------------
    def models(self) -> Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "gatewaylab"} for name in self.config.models]
        return Response(200, orjson.dumps({"object": "list", "data": data}))

    @abstractmethod
    def _health_audit(self) -> tuple[dict, dict]:
        """The (queue, audit) sections of /health."""

    def health(self) -> Response:
        queue, audit = self._health_audit()
        return Response(200, orjson.dumps({
            "status": "ok", "pid": os.getpid(), "shell": self.shell, "server": self.server,
            "mode": self.switches.mode, "label": self.switches.label(), "switches": self.switches.as_dict(),
            "stages": stages_label(self.config.stages), "audit_enabled": self.config.audit,
            "queue": queue, "audit": audit,
        }))

    def metrics_text(self) -> Response:
        return Response(200, self.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])

    def debug_probes(self, reset: bool) -> Response:
        if self.probes is None:
            return error(404, "probes are off (start the gateway with GATEWAYLAB_PROBES=1)", "probes_off")
        from gateway import probes
        return Response(200, orjson.dumps(probes.snapshot(reset=reset)))


class Gateway(GatewayBase):
    """Rungs 0 and 1: the Python pipeline, the forwarder twin and the background audit path."""

    def __init__(self, config: Config, *, shell: str = "asgi", server: str = "uvicorn"):
        super().__init__(config, shell=shell, server=server)
        sw = self.switches
        self.pipeline = Pipeline(config, config.stages, config.audit)
        self.hooks = PreCallHooks(config.plugins.pre_call)
        self.forwarder = sw.load("forwarder")(timeout_s=config.upstream_timeout_s, pool=config.upstream_pool)
        self.background = BackgroundAudit(
            config.ledger_dir, sw, self.metrics, queue_size=config.queue_size, policy=config.queue_policy,
            fsync=config.fsync, group_delay_ms=config.group_delay_ms, batch_window_ms=config.batch_window_ms,
            ack=config.ack)
        self._ids = itertools.count()
        # tracing off: no SDK imported, no tracer, and chat() pays one `is None` test
        self.tracer = None
        if config.tracing.enabled:
            from gateway.tracing import Tracer
            self.tracer = Tracer(config.tracing, config.tracing_endpoint, rung=sw.mode)

    async def startup(self) -> None:
        self.background.start()
        await super().startup()

    async def shutdown(self) -> None:
        await self.background.drain()
        await self.forwarder.aclose()
        if self.tracer is not None:
            self.tracer.shutdown()
        await super().shutdown()

    # --- chat -----------------------------------------------------------------------------
    async def chat(self, request: Request, t0: int) -> Response | StreamResponse:
        rid = self._id_prefix + str(next(self._ids))
        if self.tracer is None:
            return await self._chat(request, t0, rid, None)
        tr = self.tracer.request(request.headers, rid)
        try:
            return await self._chat(request, t0, rid, tr)
        finally:
            tr.end()

    async def _chat(self, request: Request, t0: int, rid: str, tr) -> Response | StreamResponse:
        """`tr`: the request's RequestTrace (gateway/tracing.py), None with tracing off."""
        stage = self.metrics.stage
        ctx = Context(time.time_ns(), time.monotonic_ns(), rid, None if tr is None else tr.marks)
        d = self.pipeline.decide(request, ctx)
        t1 = _perf()
        stage["decide"].observe_ns(t1 - t0)
        if tr is not None:
            tr.decided(d.audit)
        if type(d) is Rejection:
            if d.code == "waf_blocked":
                self.metrics.counters["waf_blocks"] += 1
            resp = Response(d.status, d.body, [_JSON, *d.headers])
            if d.audit is None:
                stage["total"].observe_ns(_perf() - t0)
                return resp
            return await self._finish(resp, d.audit, t0)
        if self.hooks:  # Python pre_call plugins, in-process (rs-server runs them in a sidecar)
            rej = self.hooks.check(d.key_id, d.public_model, orjson.loads(request.body))
            if rej is not None:
                return await self._finish(error(rej.status, rej.message, rej.code), d.audit, t0)
        if d.stream:
            return await self._stream(d, t0, ctx.request_id, tr)
        try:
            status, rbody = await (self.forwarder.send(d.url, d.body, d.headers) if tr is None
                                   else self._send_traced(d, tr))
            t2 = _perf()
            stage["forward"].observe_ns(t2 - t1)
            status, out, _ = self.pipeline.respond(d, status, rbody)
            stage["respond"].observe_ns(_perf() - t2)
            headers = [_JSON, (b"x-request-id", ctx.request_id.encode())] if status == 200 else [_JSON]
            resp = Response(status, out, headers)
        except UpstreamError as e:
            self.metrics.counters["upstream_errors"] += 1
            resp = error(e.http_status, str(e), e.code)
        return await self._finish(resp, d.audit, t0)

    async def _send_traced(self, d: Forwarding, tr) -> tuple[int, bytes]:
        """The forward stage with its attempt spans (one attempt: the router adds more)."""
        tr.forward()
        span, headers = tr.attempt(1, d.url, d.headers)
        status = None
        try:
            status, body = await self.forwarder.send(d.url, d.body, headers)
            return status, body
        finally:
            tr.attempt_done(span, status)
            tr.forward_done()

    async def _finish(self, resp: Response, audit, t0: int) -> Response:
        ts = _perf()
        if audit is not None:
            job = AuditJob(audit, resp.status, resp.body, False, (ts - t0) // 1000)
            task = self.background.submit(job)
            if task is not None:
                await task  # backpressure: the queue is full and the policy loses nothing
            if job.durable is not None:  # ledger.ack durable: answer once the record is durable
                try:
                    await job.durable
                except AuditUnavailable as e:
                    resp = error(e.http_status, str(e), e.code)
        te = _perf()
        stage = self.metrics.stage
        stage["spawn"].observe_ns(te - ts)
        stage["total"].observe_ns(te - t0)
        return resp

    async def _stream(self, fwd: Forwarding, t0: int, rid: str, tr=None):
        span, headers = (None, fwd.headers)
        if tr is not None:  # the attempt span covers the upstream's head and first chunk
            tr.forward()
            span, headers = tr.attempt(1, fwd.url, fwd.headers)
        agen = self.forwarder.stream(fwd.url, fwd.body, headers)
        try:
            first = await agen.__anext__()
        except StopAsyncIteration:
            first = b""
        except UpstreamError as e:
            self.metrics.counters["upstream_errors"] += 1
            if tr is not None:
                tr.attempt_done(span, e.status if isinstance(e, UpstreamStatusError) else None)
                tr.forward_done()
            return await self._finish(error(e.http_status, str(e), e.code), fwd.audit, t0)
        if tr is not None:
            tr.attempt_done(span, 200)
            tr.forward_done()
        return StreamResponse(self._relay(fwd, first, agen, t0), [*SSE_HEADERS, (b"x-request-id", rid.encode())])

    async def _relay(self, fwd: Forwarding, first: bytes, agen, t0: int):
        relay = self.pipeline.relay(fwd)
        status = 499  # until we know better: the client went away
        chunk = first
        try:
            try:
                while True:
                    out = relay.feed(chunk)
                    if out:
                        yield out
                    try:
                        chunk = await agen.__anext__()
                    except StopAsyncIteration:
                        break
                status = 200
                yield relay.done()
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
            if fwd.audit is not None:  # no backpressure wait here: the stream is over (or cancelled)
                self.background.submit(AuditJob(fwd.audit, status, relay.collected, True, (_perf() - t0) // 1000))
            self.metrics.stage["total"].observe_ns(_perf() - t0)
            await agen.aclose()

    # --- ledger ---------------------------------------------------------------------------
    async def audit_root(self) -> Response:
        async with self.background.io_lock:
            led = self.background.ledger
            return Response(200, orjson.dumps({"count": led.count, "root": led.root(),
                                               "durable_count": led.durable_count}))

    async def _prove(self, kind: str, n: int) -> bytes:
        led = self.background.ledger
        async with self.background.io_lock:
            return orjson.dumps(led.inclusion_proof(n) if kind == "inclusion" else led.consistency_proof(n))

    def _health_audit(self) -> tuple[dict, dict]:
        bg = self.background
        return ({"policy": bg.policy, "size": bg.queue_size, "depth": bg.depth, "dropped": bg.dropped},
                {"records": bg.ledger.count, "spawned": bg.spawned, "ack": bg.ack})
