"""The interface every rung serves through, and what all rungs share: responses, the audit
endpoints' index parsing, admission control, health, metrics, the audit API (sharded or not).

    shell -> GatewayBase.admitted_chat (admission control: limits.max_in_flight, else 503)
          -> <rung>.chat(Request, t0) -> Response | StreamResponse

Shells (gateway/shells/) talk to `GatewayBase` only. Its implementations are the rungs that
serve through a Python shell: `gateway.rungs.py.Gateway` (rungs 0 and 1, `py` and `py+rs`)
and `gateway.rungs.rs_core.RsCoreGateway` (rung 2); `gateway.rungs.factory.make_gateway`
picks one from the mode. Rung 3 (`rs-server`) serves HTTP itself (gateway/rungs/rs_server.py).
Errors use the OpenAI shape {"error": {"message", "type", "code"}} (gateway/errors.py
error_type: the type from the status, a 5xx's from its code).
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import ABC, abstractmethod
from typing import Protocol

import orjson

from gateway import probes
from gateway.audit.shards import root_document, sharded_proof
from gateway.config import Config
from gateway.errors import AuditIndexError
from gateway.metrics import Metrics
from gateway.pipeline import Request, error_body, stages_label
from gateway.serving.worker import Peers, health_section
from gateway.serving.worker import current as current_worker

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


class GatewayBase(ABC):
    """What a shell calls. Subclasses provide the chat pipeline, the ledger and health details."""

    def __init__(self, config: Config):
        self.config = config
        self.shell = config.shell
        self.server = config.server
        self.switches = config.switches
        self.metrics = Metrics()
        self.probes: probes.ProbeHandle | None = None
        self.worker = current_worker()  # None: a lone process; else this worker of a unit
        self.peers: Peers | None = None
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
            self.peers = Peers(self.worker, self)
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
    def _unit(self) -> Peers:
        """The other workers of this one's unit (a sharded ledger's endpoints ask them)."""
        if self.peers is None:
            raise RuntimeError("not a worker of a unit, or not started")
        return self.peers

    async def audit_root(self) -> Response:
        """The ledger's root; sharded: every shard's root and the combined root (docs/workers.md)."""
        if not self.sharded:
            return Response(200, orjson.dumps(await self._root()))
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
                    "workers": health_section(self.worker, self._threads(), self.config.ledger_layout),
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
