"""The gateway's lifecycle, endpoints and I/O, around the pure pipeline (gateway/pipeline.py).

    shell -> GatewayBase.admitted_chat (admission control: limits.max_in_flight, else 503)
          -> Gateway.chat(Request, t0) -> Response | StreamResponse
             decide() -> Rejection            -> error answer (audited when decided so)
                      -> Forwarding -> forwarder -> respond() / StreamRelay -> answer
             every audited answer -> BackgroundAudit.submit(AuditJob)

Two implementations of one interface (`GatewayBase`), picked by `make_gateway` from the mode:
`Gateway` for rungs 0 and 1 (`py`, `py+rs`: the Python pipeline calling the twins the
switches choose) and `gateway.rungs.rs_core.RsCoreGateway` for rung 2 (`rs-core`: one awaitable
Rust call per request). Shells talk to `GatewayBase` only. Errors use the OpenAI shape
{"error": {"message", "type", "code"}} (gateway/errors.py error_type: the type from the status, a 5xx's from its code).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from abc import ABC, abstractmethod
from typing import Protocol

import orjson

from gateway import probes
from gateway.audit.job import AuditJob
from gateway.audit.writer_process import SingleWriterAudit
from gateway.background import BackgroundAudit
from gateway.config import Config
from gateway.errors import (
    AuditIndexError,
    AuditUnavailable,
    InvalidInput,
    UpstreamError,
    UpstreamStatusError,
)
from gateway.metrics import Metrics
from gateway.pipeline import (
    Context,
    Forwarding,
    Pipeline,
    Rejection,
    Request,
    error_body,
    stages_label,
    upstream_headers,
)
from gateway.plugins import PreCallHooks
from gateway.serving import worker as workers

_perf = time.perf_counter_ns
RETRY_AFTER_S = 1  # Retry-After on a shed request (the Rust rungs': native/engine RETRY_AFTER_S)
JSON_HEADER = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, body: bytes, headers: list | None = None):
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else [JSON_HEADER]


class ChunkStream(Protocol):
    """A stream's body: an async generator of chunks, or one that frees its admission place
    (`_InFlightStream`); the shells close it when the client goes away."""

    def __aiter__(self) -> ChunkStream: ...
    async def __anext__(self) -> bytes: ...
    async def aclose(self) -> None: ...


class StreamResponse:
    __slots__ = ("status", "headers", "chunks")

    def __init__(self, chunks: ChunkStream, headers: list):
        self.status = 200
        self.headers = headers
        self.chunks = chunks


class _InFlightStream:
    """A stream's chunks that free its admission place once, when they end, fail or are
    closed (the shells close a stream whose client went away, even before its first chunk)."""

    __slots__ = ("_chunks", "_gw")

    def __init__(self, chunks: ChunkStream, gw: GatewayBase):
        self._chunks: ChunkStream = chunks
        self._gw: GatewayBase | None = gw

    def _release(self) -> None:
        if self._gw is not None:
            self._gw.in_flight -= 1
            self._gw = None

    def __aiter__(self) -> _InFlightStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except BaseException:  # the end (StopAsyncIteration), an error, a cancellation
            self._release()
            raise

    async def aclose(self) -> None:
        self._release()
        await self._chunks.aclose()


# The audit endpoints' indexes (/audit/proof/{index}, ?old=, ?shard=): ASCII digits only, as
# many as the client likes. A sign, space, `_` or letter is malformed (400); a well-formed
# number beyond the ledger is out of range (404 / 400 old_out_of_range), however many digits.
# Beyond INDEX_MAX (i64, what every ledger twin takes) no ledger is asked: the gateway says so.
INDEX_MAX = 2**63 - 1
_RANGE_WHAT = {"inclusion": "leaf index", "consistency": "old count"}


def index_digits(raw: str) -> str | None:
    """`raw` without its leading zeros when it is a non-negative integer in ASCII digits, else None
    (the Rust rungs': native/engine/src/ops.rs index_digits)."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    return raw.lstrip("0") or "0"


def out_of_range(kind: str, digits: str, count: int) -> str:
    """The MMR twins' own words (gateway/audit/mmr.py, native/core/src/mmr.rs)."""
    return f"{_RANGE_WHAT[kind]} {digits} out of range for an MMR of {count} leaves"


def error(status: int, message: str, code: str, headers: list | None = None) -> Response:
    h = [JSON_HEADER] if headers is None else [JSON_HEADER, *headers]
    return Response(status, error_body(status, message, code), h)


def make_gateway(config: Config, *, threads: int | None = None) -> GatewayBase:
    """The gateway of the config's rung (checked by gateway.options.build_config against the
    table of rungs, gateway/ladder.py). `threads`: rs-core's Tokio workers (None: one per CPU
    this process may run on)."""
    if config.switches.mode == "rs-core":
        from gateway.rungs.rs_core import RsCoreGateway

        return RsCoreGateway(config, threads=threads)
    return Gateway(config)


class GatewayBase(ABC):
    """What a shell calls. Subclasses provide the chat pipeline, the ledger and health details."""

    def __init__(self, config: Config):
        self.config = config
        self.shell = config.shell
        self.server = config.server
        self.switches = config.switches
        self.metrics = Metrics()
        self.probes: probes.ProbeHandle | None = None
        self.worker = workers.current()  # None: a lone process; else this worker of a unit
        self.peers: workers.Peers | None = None
        self._id_prefix = f"req-{os.getpid():x}-{time.time_ns() & 0xFFFFFFFF:x}-"
        self.in_flight = 0
        self.metrics.gauges["requests_in_flight"] = lambda: self.in_flight

    # --- lifecycle ----------------------------------------------------------------------
    async def startup(self) -> None:
        if os.environ.get("GATEWAYLAB_INJECT_DELAY_US"):  # a test-only slowdown (gateway/probes.py)
            probes.install_inject_delay(asyncio.get_running_loop())
        if os.environ.get("GATEWAYLAB_PROBES") == "1":
            self.probes = probes.start(asyncio.get_running_loop())
        if self.worker is not None:  # last: the supervisor takes the control socket as "ready"
            self.peers = workers.Peers(self.worker, self)
            await self.peers.start()

    async def shutdown(self) -> None:
        if self.peers is not None:
            await self.peers.stop()
        if self.probes is not None:
            self.probes.stop()
            self.probes = None

    # --- the chat endpoint ----------------------------------------------------------------
    async def admitted_chat(self, request: Request, t0: int) -> Response | StreamResponse:
        """What the shells call. Admission control: at most `limits.max_in_flight` chat
        requests are served at once (a stream counts until its last chunk); beyond it the
        answer is 503 `overloaded` with Retry-After, at once, never decided, forwarded or
        audited, and counted in `requests_shed`."""
        limit = self.config.max_in_flight
        if self.in_flight >= limit:
            self.metrics.counters["requests_shed"] += 1
            return error(
                503,
                f"the gateway is overloaded ({limit} requests in flight); retry after {RETRY_AFTER_S} s",
                "overloaded",
                [(b"retry-after", str(RETRY_AFTER_S).encode())],
            )
        self.in_flight += 1
        try:
            resp = await self.chat(request, t0)
        except BaseException:
            self.in_flight -= 1
            raise
        if type(resp) is StreamResponse:
            resp.chunks = _InFlightStream(resp.chunks, self)
        else:
            self.in_flight -= 1
        return resp

    @abstractmethod
    async def chat(self, request: Request, t0: int) -> Response | StreamResponse:
        """`t0` is perf_counter_ns() when the shell started on the request."""

    # --- ledger ---------------------------------------------------------------------------
    @abstractmethod
    async def _root(self) -> dict:
        """{"count", "root", "durable_count"} of this process's ledger (a worker's: its shard)."""

    @property
    def sharded(self) -> bool:
        return self.worker is not None and self.worker.sharded

    @property
    def _unit(self) -> workers.Peers:
        """The other workers of this one's unit (a sharded ledger's endpoints ask them)."""
        if self.peers is None:
            raise RuntimeError("not a worker of a unit, or not started")
        return self.peers

    async def audit_root(self) -> Response:
        """The ledger's root; sharded: every shard's root and the combined root (docs/workers.md)."""
        if not self.sharded:
            return Response(200, orjson.dumps(await self._root()))
        from gateway.audit.shards import root_document

        answers = await self._unit.ask_all({"op": "root"})
        down = [f"shard {k}: {a['error']}" for k, a in enumerate(answers) if "ok" not in a]
        if down:
            return error(503, "the combined root needs every shard; " + "; ".join(down), "shard_unavailable")
        return Response(200, orjson.dumps(root_document([a["ok"] for a in answers])))

    @abstractmethod
    async def _prove(self, kind: str, n: int) -> bytes:
        """An inclusion ("inclusion", leaf n) or consistency ("consistency", old n) proof as
        JSON; AuditIndexError when n is out of range."""

    async def audit_proof(self, index: str, shard: str | None = None) -> Response:
        return await self._ledger_proof(
            index, "leaf index", "invalid_index", "inclusion", 404, "index_out_of_range", shard
        )

    async def audit_consistency(self, old: str | None, shard: str | None = None) -> Response:
        if old is None:
            return error(400, "query parameter 'old' is required", "missing_old")
        return await self._ledger_proof(
            old, "'old'", "invalid_old", "consistency", 400, "old_out_of_range", shard
        )

    async def _ledger_proof(
        self,
        raw: str,
        what: str,
        invalid_code: str,
        kind: str,
        range_status: int,
        range_code: str,
        shard: str | None = None,
    ) -> Response:
        digits = index_digits(raw)
        if digits is None:
            return error(400, f"{what} must be a non-negative integer, got {raw!r}", invalid_code)
        n = int(digits) if len(digits) <= 19 and int(digits) <= INDEX_MAX else None
        if self.sharded:
            return await self._shard_proof(kind, n, digits, shard, range_status, range_code)
        if shard is not None:
            return error(400, "query parameter 'shard' applies to a sharded ledger only", "not_sharded")
        if n is None:
            return error(range_status, out_of_range(kind, digits, (await self._root())["count"]), range_code)
        try:
            proof = await self._prove(kind, n)
        except AuditIndexError as e:
            return error(range_status, str(e), range_code)
        return Response(200, proof)

    async def _shard_proof(
        self, kind: str, n: int | None, digits: str, shard: str | None, range_status: int, range_code: str
    ) -> Response:
        """Shard K's proof made by its owner, among every shard's state (docs/workers.md)."""
        from gateway.audit.shards import sharded_proof

        unit = self._unit
        count = unit.info.count
        if shard is None:
            return error(
                400,
                f"query parameter 'shard' (0..{count - 1}) is required: the ledger is sharded",
                "missing_shard",
            )
        k_digits = index_digits(shard)
        if k_digits is None:
            return error(400, f"'shard' must be a non-negative integer, got {shard!r}", "invalid_shard")
        if len(k_digits) > 19 or not int(k_digits) < count:
            return error(404, f"shard {k_digits} does not exist (0..{count - 1})", "shard_out_of_range")
        k = int(k_digits)
        if n is None:  # beyond any ledger: out of range against the shard's count, no proof to ask for
            got = await unit.ask(k, {"op": "root"})
            if "ok" not in got:
                return error(503, f"shard {k}: {got['error']}", "shard_unavailable")
            return error(range_status, out_of_range(kind, digits, got["ok"]["count"]), range_code)
        got = await unit.ask(k, {"op": kind, "n": n})
        if "ok" not in got:
            if got.get("index_error"):
                return error(range_status, got["error"], range_code)
            return error(503, f"shard {k}: {got['error']}", "shard_unavailable")
        roots = await unit.ask_all({"op": "root"})
        down = [f"shard {j}: {a['error']}" for j, a in enumerate(roots) if j != k and "ok" not in a]
        if down:
            return error(503, "the combined root needs every shard; " + "; ".join(down), "shard_unavailable")
        states = [got["ok"]["root"] if j == k else a["ok"] for j, a in enumerate(roots)]
        proof = got["ok"]["proof"]
        # the owner made the proof and read its root in one turn of its loop; if records were
        # appended in between, the proof's own end state is the shard's state it belongs to
        end = (
            {"count": proof["leaf_count"], "root": proof["root"]}
            if kind == "inclusion"
            else {"count": proof["new_count"], "root": proof["new_root"]}
        )
        states[k] = end
        return Response(200, orjson.dumps(sharded_proof(k, proof, states, kind)))

    # --- other endpoints ------------------------------------------------------------------
    def models(self) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "gatewaylab"}
            for name in self.config.models
        ]
        return Response(200, orjson.dumps({"object": "list", "data": data}))

    @abstractmethod
    def _health_audit(self) -> tuple[dict, dict]:
        """The (queue, audit) sections of /health."""

    def _threads(self) -> int:
        """Threads serving requests: the event loop (rs-core: its Tokio workers)."""
        return 1

    def health(self) -> Response:
        queue, audit = self._health_audit()
        return Response(
            200,
            orjson.dumps(
                {
                    "status": "ok",
                    "pid": os.getpid(),
                    "shell": self.shell,
                    "server": self.server,
                    "mode": self.switches.mode,
                    "label": self.switches.label(),
                    "switches": self.switches.as_dict(),
                    "stages": stages_label(self.config.stages),
                    "audit_enabled": self.config.audit,
                    "limits": {"max_in_flight": self.config.max_in_flight},
                    "tracing": self.config.tracing.label(),
                    "plugins": {"pre_call": list(self.config.plugins.pre_call)},
                    "queue": queue,
                    "audit": audit,
                    "workers": workers.health_section(
                        self.worker, self._threads(), self.config.ledger_layout
                    ),
                }
            ),
        )

    def metrics_text(self) -> Response:
        return Response(
            200, self.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
        )

    async def debug_probes(self, reset: bool, every_worker: bool = False) -> Response:
        """The in-gateway probes; `every_worker` (?workers=all): {"workers": [one per worker]}."""
        if self.probes is None:
            return error(404, "probes are off (start the gateway with GATEWAYLAB_PROBES=1)", "probes_off")
        if every_worker and self.peers is not None:
            answers = await self.peers.ask_all({"op": "probes", "reset": reset})
            return Response(
                200,
                orjson.dumps(
                    {
                        "workers": [
                            {"index": k, **(a["ok"] if "ok" in a else {"error": a["error"]})}
                            for k, a in enumerate(answers)
                        ]
                    }
                ),
            )
        return Response(200, orjson.dumps(probes.snapshot(reset=reset)))


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
