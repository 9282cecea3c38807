"""Rung 2 (`--mode rs-core`): the Python server and shell read the request; the Rust engine
(native/engine, bound in native/py/src/engine.rs) runs the whole request path: admission,
the pipeline (guard verdicts, auth, parse, WAF, route, rate limit, adapter), forward, the
response adapter or the stream relay, and the audit hand-off to its ledger thread, with the
GIL released throughout. The same engine is rung 3 (`rs-server`) behind hyper instead of
this shell.

The crossing from asyncio to Tokio and back is the whole game on this rung, so it is batched
both ways. Going in: the requests the loop reads in one iteration are handed over in one
`submit` call at the end of it (one wake-up of the Tokio runtime for all of them). Coming
back: completions do not return one asyncio future per call through pyo3-async-runtimes; the
Rust side queues them and writes an eventfd when the queue turns non-empty, and the loop's
reader drains every completion waiting in one call and sets the futures this module created
(`wakeups` against `completed` in /health).

Admission control (`limits.max_in_flight`) and `ledger.ack: durable` are the engine's: a shed
or a durable answer completes through the same queue; nothing changes on this side.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import orjson

from gateway import _native
from gateway.config import Config, engine_spec
from gateway.errors import AuditIndexError
from gateway.pipeline import Request
from gateway.rungs.base import JSON_HEADER, SSE_HEADERS, GatewayBase, Response, StreamResponse


class RsCoreGateway(GatewayBase):
    def __init__(self, config: Config, *, threads: int | None = None):
        super().__init__(config)
        spec = engine_spec(config, threads)
        self._tokio_workers = spec["engine"]["threads"]
        self.core = _native.RsCore(orjson.dumps(spec).decode())
        self._pending: dict[int, asyncio.Future] = {}
        self._outbox: list[tuple] = []  # requests read in this loop iteration, submitted at its end
        self._tokens = itertools.count()
        self._loop: asyncio.AbstractEventLoop  # set by startup(), before any request
        self.metrics.refresh = self._refresh_metrics
        self.metrics.stage_runs = self.core.stage_runs
        # the engine's gauges, read at scrape time
        for name in ("background_queue_depth", "requests_in_flight", "audit_records_in_ledger"):
            self.metrics.gauges[name] = self._gauge(name)

    def _gauge(self, name: str) -> Callable[[], float]:
        return lambda: self.core.stats()[name]

    # --- lifecycle ----------------------------------------------------------------------
    async def startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.core.fileno(), self._ready)
        await super().startup()

    async def shutdown(self) -> None:
        # the server has finished in-flight requests; the ledger thread appends what is queued
        self.core.shutdown()
        self._loop.remove_reader(self.core.fileno())
        await super().shutdown()

    # --- the crossing ---------------------------------------------------------------------
    def _ready(self) -> None:
        pending = self._pending
        for token, value in self.core.drain():
            fut = pending.pop(token, None)
            if fut is not None and not fut.done():  # a cancelled waiter (client gone) is skipped
                fut.set_result(value)

    def _future(self) -> tuple[int, asyncio.Future]:
        token = next(self._tokens)
        fut = self._pending[token] = self._loop.create_future()
        return token, fut

    def _submit(self, request: Request) -> asyncio.Future:
        """Queue the request; every request read in this loop iteration is handed to Rust in
        one call (one wake-up of the runtime) when the iteration's callbacks are done."""
        token = next(self._tokens)  # _future(), inlined: once per request
        fut = self._pending[token] = self._loop.create_future()
        self._outbox.append((token, request.headers, request.body))
        if len(self._outbox) == 1:
            self._loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        self.core.submit(batch)

    def _next_chunk(self, stream_id: int) -> asyncio.Future:
        token, fut = self._future()
        self.core.next_chunk(token, stream_id)
        return fut

    # --- chat -----------------------------------------------------------------------------
    async def chat(self, request: Request, t0: int) -> Response | StreamResponse:
        """Admission control is the engine's (a shed answer completes like any other), so
        the shells' entry point is this coroutine itself: no second coroutine to create, and
        to pass through again when the answer wakes the request's task."""
        status, headers, body, stream_id = await self._submit(request)
        if stream_id is None:
            return Response(status, body, [JSON_HEADER, *headers])
        return StreamResponse(self._chunks(stream_id), [*SSE_HEADERS, *headers])

    admitted_chat = chat

    async def _chunks(self, stream_id: int):
        try:
            while (chunk := await self._next_chunk(stream_id)) is not None:
                yield chunk
        finally:  # the client went away or the stream ended: either way the relay may stop
            self.core.close_stream(stream_id)

    # --- ledger ---------------------------------------------------------------------------
    async def _root(self) -> dict:
        count, root, durable = self.core.root()
        return {"count": count, "root": root, "durable_count": durable}

    def _threads(self) -> int:
        return self._tokio_workers

    async def _prove(self, kind: str, n: int) -> bytes:
        if not -(2**63) <= n < 2**63:  # beyond the binding's i64: out of range like any n >= count
            what = "leaf index" if kind == "inclusion" else "old count"
            raise AuditIndexError(f"{what} {n} out of range for an MMR of {self.core.root()[0]} leaves")
        return (
            self.core.inclusion_proof(n) if kind == "inclusion" else self.core.consistency_proof(n)
        ).encode()

    def _health_audit(self) -> tuple[dict, dict]:
        s = self.core.stats()
        return (
            {
                "policy": "unbounded",
                "size": None,
                "depth": int(s["background_queue_depth"]),
                "dropped": int(s["background_dropped"]),
                "completed": int(s["completed"]),
                "wakeups": int(s["wakeups"]),
            },
            {
                "records": int(s["audit_records_in_ledger"]),
                "spawned": int(s["background_spawned"]),
                "ack": self.config.ack,
            },
        )

    def _refresh_metrics(self) -> None:
        """The engine's counters (every name of the one list) and stage histograms."""
        s = self.core.stats()
        for name in self.metrics.counters:
            self.metrics.counters[name] = int(s[name])
        for name, (counts, sum_ns) in self.core.stage_histograms().items():
            self.metrics.stage[name].set(counts, sum_ns)
