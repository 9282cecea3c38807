"""The background audit path: everything about auditing that is not on the hot path.

Hot path: `BackgroundAudit._spawn_background(job)` -- one `create_task`, a tracked set (so
tasks are never garbage-collected mid-flight and shutdown can wait for them) and a counter.
The task puts the job on a bounded queue:
  policy "block" (default): waits for room, losing nothing; when the queue is full the
      request that spawned it awaits its task before answering (backpressure reaches clients);
  policy "drop": a full queue drops the job and counts it (`background_dropped`).
One worker drains the queue in batches: analyzer (entropy) -> audit record (canonical JSON)
-> ledger append (WAL then MMR). A batch goes to a thread as one append_many (one write, one
fsync), so no fsync ever blocks the loop; a lone record under fsync "group"/"none" is
appended on the loop (a page-cache write; the WAL's group-commit thread fsyncs it).
`drain()` (called from the ASGI lifespan shutdown) waits for every spawned task, lets the
worker empty the queue and closes the ledger: an accepted request never loses its record.

`ack="durable"` (ledger.ack): each job carries a future the request awaits before it answers.
The worker then appends every batch with one `append_many` in a thread (one write and, under
"group"/"always", the fsync the policy promises) and resolves the batch's futures after it
returns: group commit, the batch shared by every request queued meanwhile. A failed append
(or a job the "drop" policy drops) fails the futures with `AuditUnavailable`.

Where records go is two methods, `_open_ledger` and `_append(batch)` (plus the readers
`root_view` and `prove`): here an in-process `AuditLedger`; the `single-writer` layout
(gateway/audit/writer_process.py) overrides them to hand batches to one ledger process.
"""

from __future__ import annotations

import asyncio
import os
import time

from gateway.audit.job import AuditJob, RecordAssembler
from gateway.audit.ledger import AuditLedger
from gateway.errors import AuditUnavailable
from gateway.metrics import Metrics
from gateway.twins import Switches

_BATCH = 256


class BackgroundAudit:
    def __init__(
        self,
        ledger_dir: str,
        switches: Switches,
        metrics: Metrics,
        *,
        queue_size: int = 10000,
        policy: str = "block",
        fsync: str = "group",
        group_delay_ms: float = 2.0,
        batch_window_ms: float = 0.0,
        ack: str = "background",
    ):
        self.switches = switches
        self.metrics = metrics
        self.policy = policy
        self.queue_size = queue_size
        self.ledger = self._open_ledger(ledger_dir, fsync, group_delay_ms)
        self.ack = ack
        self._durable = ack == "durable"
        self._inline = fsync != "always" and not self._durable
        self._assembler = RecordAssembler(switches)
        self._tasks: set[asyncio.Task] = set()
        # made again on the running loop by start(), which also sets _loop (the hot path
        # reads both without a check: nothing is submitted before start)
        self._queue: asyncio.Queue[AuditJob | None] = asyncio.Queue(queue_size)
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop
        self.io_lock = asyncio.Lock()  # readers (audit endpoints) never see a half-applied batch
        self._window_s = batch_window_ms / 1000.0
        self._delay_s = float(os.environ.get("GATEWAYLAB_LEDGER_DELAY_MS", "0") or 0) / 1000.0
        self.spawned = 0
        self.dropped = 0
        self.appended = 0
        metrics.gauges["background_queue_depth"] = lambda: self.depth
        metrics.gauges["background_tasks_in_flight"] = lambda: len(self._tasks)
        metrics.gauges["audit_records_in_ledger"] = lambda: self.ledger.count

    def _open_ledger(self, ledger_dir: str, fsync: str, group_delay_ms: float):
        if fsync == "group":
            return AuditLedger(ledger_dir, fsync=fsync, switches=self.switches, group_delay_ms=group_delay_ms)
        return AuditLedger(ledger_dir, fsync=fsync, switches=self.switches)

    # --- readers (the audit endpoints) ----------------------------------------------------
    async def root_view(self) -> dict:
        """{"count", "root", "durable_count"} of the ledger, as one consistent view."""
        async with self.io_lock:
            led = self.ledger
            return {"count": led.count, "root": led.root(), "durable_count": led.durable_count}

    async def prove(self, kind: str, n: int) -> dict:
        """An inclusion ("inclusion", leaf n) or consistency ("consistency", old n) proof."""
        async with self.io_lock:
            led = self.ledger
            return led.inclusion_proof(n) if kind == "inclusion" else led.consistency_proof(n)

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self.queue_size)
        self._worker = self._loop.create_task(self._run())

    async def drain(self) -> None:
        """Wait for every spawned task, let the worker finish the queue, close the ledger."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._worker is not None:
            await self._queue.put(None)
            await self._worker
            self._worker = None
        await self._close_ledger()

    async def _close_ledger(self) -> None:
        await asyncio.to_thread(self.ledger.close)

    # --- hot path -----------------------------------------------------------------------
    def _spawn_background(self, job: AuditJob) -> asyncio.Task:
        task = self._loop.create_task(self._admit(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.spawned += 1
        self.metrics.counters["background_spawned"] += 1
        return task

    def submit(self, job: AuditJob) -> asyncio.Task | None:
        """Hand a job over. Returns the admission task when the caller must await it
        (backpressure: the queue is full under the lossless policy), else None. Under
        ack="durable" the caller then awaits `job.durable`."""
        if self._durable:
            job.durable = self._loop.create_future()
        task = self._spawn_background(job)
        return task if self.saturated else None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def saturated(self) -> bool:
        """True when the queue is full under the lossless policy: callers should await."""
        return self.policy == "block" and self._queue.full()

    async def _admit(self, job: AuditJob) -> None:
        if self.policy == "drop":
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                if job.durable is not None:
                    job.durable.set_exception(AuditUnavailable("the audit queue is full: record dropped"))
                self.dropped += 1
                self.metrics.counters["background_dropped"] += 1
        else:
            await self._queue.put(job)

    # --- worker -------------------------------------------------------------------------
    async def _run(self) -> None:
        q = self._queue
        stop = False
        while not stop:
            job = await q.get()
            batch = []
            if job is None:
                stop = True
            else:
                batch.append(job)
                if self._window_s and q.qsize() < _BATCH:
                    # Gather for a moment: on one core the audit work always delays some
                    # request, and done in batches it delays fewer of them (and costs less
                    # per record). Bounded: the audit lag grows by at most the window.
                    await asyncio.sleep(self._window_s)
            while len(batch) < _BATCH and not q.empty():
                job = q.get_nowait()
                if job is None:
                    stop = True
                    break
                batch.append(job)
            if batch:
                if self._delay_s:
                    await asyncio.sleep(self._delay_s)
                try:
                    await self._append(batch)
                except Exception as e:  # never let one bad batch stop the worker; say so loudly
                    import sys

                    print(
                        f"gateway: audit append failed for {len(batch)} records: {type(e).__name__}: {e}",
                        file=sys.stderr,
                        flush=True,
                    )
                    self.metrics.counters["audit_failures"] += len(batch)
                    for j in batch:
                        if j.durable is not None and not j.durable.done():
                            j.durable.set_exception(
                                AuditUnavailable(f"the audit record could not be written: {e}")
                            )
                    continue
                self.appended += len(batch)
                self.metrics.counters["audit_records"] += len(batch)
                now = time.perf_counter_ns()
                for j in batch:
                    self.metrics.audit_lag.observe_ns(now - j.done_ns)
                    if j.durable is not None and not j.durable.done():
                        j.durable.set_result(None)

    async def _append(self, batch: list[AuditJob]) -> None:
        """Assemble the batch's records and append them (WAL then MMR); raises on failure."""
        payload = self._assembler.payload
        payloads = [payload(self.ledger.count + i, j) for i, j in enumerate(batch)]
        if self._inline and len(batch) == 1:
            # A lone record under group/none: the append only writes to the page
            # cache (the WAL's group-commit thread fsyncs within group_delay_ms),
            # cheaper right here than a thread hop. Bigger batches go to a thread
            # as one write + one fsync, measured cheaper per record under load.
            append = self.ledger.append
            for p in payloads:
                append(p)
        else:  # batches, and "always" (one fsync per record): off the event loop
            async with self.io_lock:
                await asyncio.to_thread(self.ledger.append_many, payloads)
