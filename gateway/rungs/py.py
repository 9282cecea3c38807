"""Rungs 0 and 1 (`py`, `py+rs`): the Python pipeline (gateway/pipeline.py) calling the twins
the switches choose, the forwarder twin, the router twin and the background audit path.

    Gateway.chat(Request, t0) -> Response | StreamResponse
        decide() -> Rejection            -> error answer (audited when decided so)
                 -> Forwarding -> forwarder -> respond() / StreamRelay -> answer
        every audited answer -> BackgroundAudit.submit(AuditJob)
"""

from __future__ import annotations

import asyncio
import itertools
import time

import orjson

from gateway.audit.job import AuditJob
from gateway.audit.writer_process import SingleWriterAudit
from gateway.background import BackgroundAudit
from gateway.config import Config
from gateway.errors import AuditUnavailable, InvalidInput, UpstreamError, UpstreamStatusError
from gateway.pipeline import Context, Forwarding, Pipeline, Rejection, Request, error_body, upstream_headers
from gateway.plugins import PreCallHooks
from gateway.rungs.base import (
    JSON_HEADER,
    SSE_HEADERS,
    GatewayBase,
    Response,
    StreamResponse,
    error,
)
from gateway.tracing import Tracer

_perf = time.perf_counter_ns


class Gateway(GatewayBase):
    """Rungs 0 and 1: the Python pipeline, the forwarder twin and the background audit path."""

    def __init__(self, config: Config):
        super().__init__(config)
        sw = self.switches
        self.pipeline = Pipeline(config, config.stages, config.audit)
        self.metrics.stage_runs = self.pipeline.stage_runs
        self.hooks = PreCallHooks(config.plugins.pre_call)
        self.forwarder = sw.load("forwarder")(timeout_s=config.upstream_timeout_s, pool=config.upstream_pool)
        # single-writer: records go to one ledger process (docs/single_writer.md)
        audit_cls = SingleWriterAudit if config.ledger_layout == "single-writer" else BackgroundAudit
        self.background = audit_cls(
            config.ledger_dir,
            sw,
            self.metrics,
            queue_size=config.queue_size,
            policy=config.queue_policy,
            fsync=config.fsync,
            group_delay_ms=config.group_delay_ms,
            batch_window_ms=config.batch_window_ms,
            ack=config.ack,
        )
        self._ids = itertools.count()
        # the router twin, only when the config has a group or a `router:` section (docs/router.md)
        self.router = sw.load("router")(config.router) if config.router is not None else None
        self._targets = {
            name: [(up, upstream_headers(up.kind, up.api_key)) for up in ups]
            for name, ups in config.groups.items()
        }
        # tracing off: no SDK imported, no tracer, and chat() pays one `is None` test
        self.tracer = None
        if config.tracing.enabled:
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
        if isinstance(d, Rejection):
            if d.code == "waf_blocked":
                self.metrics.counters["waf_blocks"] += 1
            resp = Response(d.status, d.body, [JSON_HEADER, *d.headers])
            if d.audit is None:
                stage["total"].observe_ns(_perf() - t0)
                return resp
            return await self._finish(resp, d.audit, t0)
        if self.hooks:  # Python pre_call plugins, in-process (rs-server runs them in a sidecar)
            rej = self.hooks.check(d.key_id, d.public_model, orjson.loads(request.body))
            if rej is not None:
                return await self._finish(error(rej.status, rej.message, rej.code), d.audit, t0)
        if self.router is not None and d.public_model in self._targets:
            return await self._routed(d, request.body, t0, ctx.request_id, tr)
        if d.stream:
            return await self._stream(d, t0, ctx.request_id, tr)
        try:
            status, rbody = await (
                self.forwarder.send(d.url, d.body, d.headers) if tr is None else self._send_traced(d, tr)
            )
            t2 = _perf()
            stage["forward"].observe_ns(t2 - t1)
            status, out, _ = self.pipeline.respond(d, status, rbody)
            stage["respond"].observe_ns(_perf() - t2)
            headers = (
                [JSON_HEADER, (b"x-request-id", ctx.request_id.encode())] if status == 200 else [JSON_HEADER]
            )
            resp = Response(status, out, headers)
        except UpstreamError as e:
            self.metrics.counters["upstream_errors"] += 1
            resp = error(e.http_status, str(e), e.code)
        return await self._finish(resp, d.audit, t0)

    # --- routed: a model group, retries, fallbacks (gateway/router.py drives, we do the I/O) ----
    def _target(self, fwd: Forwarding, group: str, index: int, request_body: bytes) -> Forwarding:
        up, headers = self._targets[group][index]
        first = self.config.models[fwd.public_model]
        if fwd.adapt and (up.kind, up.model) != (first.kind, first.model):
            body = self.pipeline.adapters[up.kind].to_upstream(request_body, up.model)
        else:  # decide() already adapted the body for this upstream model (or the adapter is off)
            body = fwd.body
        return Forwarding(
            up.url, headers, body, fwd.stream, up.kind, fwd.public_model, fwd.adapt, fwd.key_id, fwd.audit
        )

    async def _routed(self, fwd: Forwarding, request_body: bytes, t0: int, rid: str, tr=None):
        """Each attempt goes where the router says; 429, 5xx, timeouts and connection errors
        are reported as failures (the router retries, falls back or gives up); any other
        answer ends it. A stream is retried only until its first chunk arrives. `tr` (tracing
        on): one attempt span per attempt, each with its own traceparent upstream."""
        router, now = self.router, time.monotonic_ns
        assert router is not None  # _chat routes only with a router
        att = router.begin(fwd.public_model, (len(request_body) + 3) // 4, now())
        last: tuple | None = None  # ("status", Forwarding, status, body) | ("error", UpstreamError)
        if tr is not None:
            tr.forward()
        n = 0
        while True:
            step = router.next(att, now())
            if step[0] == "wait":
                await asyncio.sleep(step[1] / 1e9)
                continue
            if step[0] == "give_up":
                break
            target = self._target(fwd, step[1], step[2], request_body)
            n += 1
            span, headers = (
                (None, target.headers) if tr is None else tr.attempt(n, target.url, target.headers)
            )
            seen: int | None = None  # the attempt's status, for its span
            ts = _perf()
            outcome = "cancel"  # until we know better: the client went away
            try:
                if target.stream:
                    agen = self.forwarder.stream(target.url, target.body, headers)
                    try:
                        first = await agen.__anext__()
                    except StopAsyncIteration:
                        first = b""
                    outcome, seen = "ok", 200
                    return StreamResponse(
                        self._relay(target, first, agen, t0), [*SSE_HEADERS, (b"x-request-id", rid.encode())]
                    )
                status, rbody = await self.forwarder.send(target.url, target.body, headers)
                outcome, seen = ("fail" if status == 429 or status >= 500 else "ok"), status
                last = ("status", target, status, rbody)
            except UpstreamStatusError as e:  # a stream's status, before its first chunk
                outcome, seen = ("fail" if e.status == 429 or e.status >= 500 else "ok"), e.status
                last = ("error", e)
            except UpstreamError as e:
                outcome, last = "fail", ("error", e)
            finally:
                router.report(att, outcome, (_perf() - ts) // 1000, now())
                if tr is not None:
                    tr.attempt_done(span, seen)
            if outcome == "ok":
                break
        if last is None:
            self.metrics.counters["upstream_errors"] += 1
            resp = error(
                503,
                f"no deployment of model {fwd.public_model!r} is available (cooling down or at its "
                f"rate limit)",
                "no_deployment_available",
            )
        elif last[0] == "error":
            self.metrics.counters["upstream_errors"] += 1
            err = last[1]
            resp = error(err.http_status, str(err), err.code)
        else:
            _, target, status, rbody = last
            try:
                status, out, _ = self.pipeline.respond(target, status, rbody)
                headers = [JSON_HEADER, (b"x-request-id", rid.encode())] if status == 200 else [JSON_HEADER]
                resp = Response(status, out, headers)
            except UpstreamError as e:
                self.metrics.counters["upstream_errors"] += 1
                resp = error(e.http_status, str(e), e.code)
        return await self._finish(resp, fwd.audit, t0)

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
        return StreamResponse(
            self._relay(fwd, first, agen, t0), [*SSE_HEADERS, (b"x-request-id", rid.encode())]
        )

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
                    status, code, msg = (
                        502,
                        "upstream_malformed",
                        f"upstream sent a malformed stream event: {e}",
                    )
                yield b"data: " + error_body(status, msg, code) + b"\n\n"
        finally:
            # audit first (synchronous), so a cancelled client task cannot skip it
            if status == 499:
                self.metrics.counters["streams_abandoned"] += 1
            if fwd.audit is not None:  # no backpressure wait here: the stream is over (or cancelled)
                self.background.submit(
                    AuditJob(fwd.audit, status, relay.collected, True, (_perf() - t0) // 1000)
                )
            self.metrics.stage["total"].observe_ns(_perf() - t0)
            await agen.aclose()

    # --- ledger ---------------------------------------------------------------------------
    async def _root(self) -> dict:
        return await self.background.root_view()

    async def _prove(self, kind: str, n: int) -> bytes:
        return orjson.dumps(await self.background.prove(kind, n))

    def _health_audit(self) -> tuple[dict, dict]:
        bg = self.background
        return (
            {"policy": bg.policy, "size": bg.queue_size, "depth": bg.depth, "dropped": bg.dropped},
            {"records": bg.ledger.count, "spawned": bg.spawned, "ack": bg.ack},
        )
