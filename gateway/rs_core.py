"""Rung 2 (`--mode rs-core`): the Python server and shell read the request; one Rust call
runs the whole hot path (guard verdicts, auth, parse, WAF, route, rate limit, adapter,
forward, response adapter) and hands the audit job to a Rust ledger thread, with the GIL
released throughout (native/py/src/pipeline.rs, on the core crate's pipeline twin).

The crossing from asyncio to Tokio and back is the whole game on this rung, so it is batched
both ways. Going in: the requests the loop reads in one iteration are handed over in one
`submit` call at the end of it (one wake-up of the Tokio runtime for all of them). Coming
back: completions do not return one asyncio future per call through pyo3-async-runtimes; the
Rust side queues them and writes an eventfd when the queue turns non-empty, and the loop's
reader drains every completion waiting in one call and sets the futures this module created
(`wakeups` against `completed` in /health).

`ledger.ack: durable`: a whole (non-streamed) audited answer completes from the Rust ledger
thread once the group commit covering its record is done, through the same queue and
eventfd; nothing changes on this side.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

import orjson

from gateway import _native
from gateway.app import _JSON, SSE_HEADERS, GatewayBase, Response, StreamResponse
from gateway.config import Config
from gateway.errors import AuditIndexError, ConfigError
from gateway.pipeline import Request

_perf = time.perf_counter_ns
_COUNTERS = ("upstream_errors", "waf_blocks", "streams_abandoned", "audit_records", "audit_failures")


def pipeline_config(config: Config) -> str:
    """The validated configuration as the Rust pipeline reads it (PipelineConfig, JSON)."""
    return orjson.dumps(
        {
            "keys": [{"id": k.id, "sha256": k.sha256, "rpm": k.rpm, "tpm": k.tpm} for k in config.keys],
            "waf_rules": [dict(r) for r in config.waf_rules],
            "models": [
                {"name": name, "kind": up.kind, "url": up.url, "model": up.model, "api_key": up.api_key}
                for name, up in config.models.items()
            ],
            "passthrough": config.passthrough,
            "max_body_bytes": config.max_body_bytes,
            "max_header_bytes": config.max_header_bytes,
            "stages": sorted(config.stages),
            "audit": config.audit,
            # the router (docs/router.md): None keeps the one-upstream-a-model path
            "router": orjson.loads(config.router) if config.router is not None else None,
            "deployments": [
                {"group": name, "kind": up.kind, "url": up.url, "model": up.model, "api_key": up.api_key}
                for name, ups in config.groups.items()
                for up in ups
            ]
            if config.router is not None
            else [],
        }
    ).decode()


class RsCoreGateway(GatewayBase):
    def __init__(self, config: Config, *, shell: str = "asgi", server: str = "uvicorn"):
        if config.plugins.pre_call:
            # the pipeline runs in one Rust call: there is no point at which to call back into
            # Python without giving up what this rung is for
            raise ConfigError(
                "plugins.pre_call: not available on rs-core (the whole pipeline is one Rust call); "
                "run plugins on py or py+rs (in-process) or rs-server (sidecar)"
            )
        super().__init__(config, shell=shell, server=server)
        # Tokio workers: one per core the process may run on (one when pinned to a gateway core)
        workers = self._tokio_workers = len(os.sched_getaffinity(0))
        # GATEWAYLAB_LEDGER_DELAY_MS: a pause before each audit batch, for tests that need
        # work queued at shutdown (the same knob as gateway/background.py's)
        delay_ms = float(os.environ.get("GATEWAYLAB_LEDGER_DELAY_MS", "0") or 0)
        self.core = _native.RsCore(
            pipeline_config(config),
            config.ledger_dir,
            config.fsync,
            config.group_delay_ms,
            config.upstream_timeout_s,
            config.upstream_pool,
            self._id_prefix,
            workers,
            delay_ms,
            config.ack,
            config.tracing.label(),
            config.tracing_endpoint,
        )
        self._pending: dict[int, asyncio.Future] = {}
        self._outbox: list[tuple] = []  # requests read in this loop iteration, submitted at its end
        self._tokens = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics.refresh = self._refresh_metrics
        self.metrics.stage_runs = self.core.stage_runs
        self.metrics.gauges["background_queue_depth"] = lambda: self.core.stats()["audit_queue_depth"]
        self.metrics.gauges["audit_records_in_ledger"] = lambda: self.core.root()[0]

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
        token, fut = self._future()
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
        status, headers, body, stream_id = await self._submit(request)
        if stream_id is None:
            self.metrics.stage["total"].observe_ns(_perf() - t0)
            return Response(status, body, [_JSON, *headers])
        return StreamResponse(self._chunks(stream_id, t0), [*SSE_HEADERS, *headers])

    async def _chunks(self, stream_id: int, t0: int):
        try:
            while (chunk := await self._next_chunk(stream_id)) is not None:
                yield chunk
        finally:  # the client went away or the stream ended: either way the relay may stop
            self.core.close_stream(stream_id)
            self.metrics.stage["total"].observe_ns(_perf() - t0)

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
                "depth": s["audit_queue_depth"],
                "dropped": 0,
                "completed": s["completed"],
                "wakeups": s["wakeups"],
            },
            {"records": self.core.root()[0], "spawned": s["audit_submitted"], "ack": self.config.ack},
        )

    def _refresh_metrics(self) -> None:
        s = self.core.stats()
        for name in _COUNTERS:
            self.metrics.counters[name] = s[name]
