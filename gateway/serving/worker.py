"""Inside a worker of a unit (`--workers N`, docs/workers.md): what a worker knows about its
unit ($GATEWAYLAB_WORKER, set by gateway/serving/supervisor.py), `/health`'s "workers"
section, and `Peers`, the control socket every worker serves and the client that asks the
other workers for their shard's root or proof (rs-server speaks the same protocol,
native/engine/src/unit.rs).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from gateway import probes
from gateway.errors import AuditIndexError

if TYPE_CHECKING:  # for the annotation only: a gateway serves through its Peers
    from gateway.rungs.base import GatewayBase

WORKER_ENV = "GATEWAYLAB_WORKER"
LAYOUT_FILE = "workers.json"  # the unit's layout, written by the supervisor into its runtime dir


@dataclass
class WorkerInfo:
    """What a worker knows about its unit ($GATEWAYLAB_WORKER)."""

    index: int
    count: int
    runtime_dir: str
    layout: str
    cpus: list[int] = field(default_factory=list)

    def socket_path(self, k: int) -> str:
        return os.path.join(self.runtime_dir, f"worker-{k}.sock")

    @property
    def sharded(self) -> bool:
        return self.layout == "sharded"


def current() -> WorkerInfo | None:
    raw = os.environ.get(WORKER_ENV)
    if not raw:
        return None
    d = json.loads(raw)
    return WorkerInfo(
        int(d["index"]), int(d["count"]), d["runtime_dir"], d["layout"], list(d.get("cpus") or [])
    )


def health_section(info: WorkerInfo | None, threads: int, ledger_layout: str | None = None) -> dict:
    """`/health`'s "workers": the unit's layout (from the supervisor's workers.json), this
    worker's index; a single process reports itself as worker 0 of 1, with its ledger layout
    (single, or single-writer: its own ledger process)."""
    if info is None:
        return {
            "count": 1,
            "index": 0,
            "layout": "single-process",
            "ledger_layout": ledger_layout or "single",
            "ready": True,
            "workers": [
                {
                    "index": 0,
                    "pid": os.getpid(),
                    "cpus": sorted(os.sched_getaffinity(0)),
                    "threads": threads,
                    "alive": True,
                }
            ],
            "dead": [],
            "clamped": False,
            "notes": [],
        }
    try:
        with open(os.path.join(info.runtime_dir, LAYOUT_FILE)) as f:
            unit = json.load(f)
    except (OSError, ValueError):
        unit = {"workers": [], "notes": [], "clamped": False}
    for w in unit.get("workers", []):
        if w["index"] == info.index:
            w["threads"] = threads
    return {
        "count": info.count,
        "index": info.index,
        "layout": "workers",
        "ledger_layout": info.layout,
        "ready": unit.get("ready", False),
        "workers": unit.get("workers", []),
        "dead": [w["index"] for w in unit.get("workers", []) if not w["alive"]],
        "clamped": unit.get("clamped", False),
        "notes": unit.get("notes", []),
    }


class Peers:
    """The worker's side of the unit: a control socket serving its own shard, and the client
    that asks the other workers for theirs. `gateway` is the worker's GatewayBase."""

    def __init__(self, info: WorkerInfo, gateway: GatewayBase):
        self.info = info
        self.gateway = gateway
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        path = self.info.socket_path(self.info.index)
        if os.path.exists(path):
            os.unlink(path)
        self._server = await asyncio.start_unix_server(self._serve, path=path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(orjson.dumps(await self._local(orjson.loads(line))) + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _local(self, req: dict) -> dict:
        op = req.get("op")
        try:
            if op == "root":
                return {"ok": await self.gateway._root()}
            if op in ("inclusion", "consistency"):
                proof = orjson.loads(await self.gateway._prove(op, int(req["n"])))
                return {"ok": {"proof": proof, "root": await self.gateway._root()}}
            if op == "probes":
                if self.gateway.probes is None:
                    return {"error": "probes are off"}
                return {"ok": probes.snapshot(reset=bool(req.get("reset")))}
        except AuditIndexError as e:
            return {"error": str(e), "index_error": True}
        return {"error": f"unknown op {op!r}"}

    async def ask(self, k: int, req: dict, timeout: float = 10.0) -> dict:
        """Worker k's answer to `req` ({"ok": ...} or {"error": ...}); this worker answers itself."""
        if k == self.info.index:
            return await self._local(req)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.info.socket_path(k)), timeout
            )
        except (TimeoutError, OSError) as e:
            return {"error": f"worker {k} is not answering ({type(e).__name__}: {e})", "unavailable": True}
        try:
            writer.write(orjson.dumps(req) + b"\n")
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                return {"error": f"worker {k} closed the control connection", "unavailable": True}
            return orjson.loads(line)
        except (TimeoutError, OSError) as e:
            return {"error": f"worker {k} is not answering ({type(e).__name__}: {e})", "unavailable": True}
        finally:
            writer.close()

    async def ask_all(self, req: dict) -> list[dict]:
        return list(await asyncio.gather(*(self.ask(k, req) for k in range(self.info.count))))
