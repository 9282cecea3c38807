"""The `single-writer` ledger layout: gateway workers hand records to one ledger process
(docs/single_writer.md; config `ledger.layout: single-writer`, rungs py and py+rs).

    writer = WriterProcess.start("data/ledger", fsync="group")    # python -m gateway.audit.writer_process
    # each worker: GATEWAYLAB_LEDGER_SOCKET=writer.socket (or none: the gateway starts its own writer)
    writer.stop()                                                  # SIGTERM: commits, closes the ledger

One ledger (one WAL + one MMR, `gateway.audit.ledger.AuditLedger`, the files of the `single`
layout, so `gatewaylab audit verify` reads it as it is) and one process that writes it. A
worker's background path does the per-record work (entropy, hashes: `RecordAssembler.record`)
and sends each batch of records *without* their `seq`; the writer numbers them in arrival
order, encodes them with the record twin and appends every batch that arrived meanwhile, from
every worker, with one `append_many` (one WAL write, one fsync: group commit across workers).

Wire protocol, a Unix stream socket (mode 0600); both directions are frames
`u32 LE length | orjson body`, one reply per request, in order:

    {"op": "append", "records": [{field: int|str, ...}, ...]}   (every record field but seq)
        -> {"ok": true, "first": i, "count": n, "ledger_count": c, "durable_count": d}
    {"op": "root"}   -> {"ok": true, "count", "root", "durable_count"}
    {"op": "prove", "kind": "inclusion"|"consistency", "n": N} -> {"ok": true, "proof": {...}}
    any failure      -> {"ok": false, "kind": "index"|"invalid"|"ledger", "error": "..."}

Acknowledgement is what it is in-process: the reply to an append comes after `append_many`
returned, i.e. after the WAL write and, under fsync "group"/"always", the fsync. A worker
with `ack: background` answers its clients first and awaits the reply in its audit worker;
with `ack: durable` each request waits for the reply that carries its record (group commit
in the ledger process). A batch is appended whole or not at all: a worker killed mid-frame
sent nothing the writer acknowledged; a request whose records do not validate gets an
"invalid" reply and the others in the same group still commit.

Stopping (SIGTERM/SIGINT): stop accepting connections, keep serving connected workers until
they disconnect (they drain first) or `--grace` seconds pass, commit what is pending, close
the ledger (checkpointing its node store), remove the socket, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.job import AuditJob
from gateway.audit.ledger import AuditLedger
from gateway.audit.record import RECORD_FIELDS
from gateway.background import BackgroundAudit
from gateway.errors import AuditIndexError, AuditUnavailable, ConfigError, GatewayLabError, InvalidInput
from gateway.twins import Switches

SOCKET_ENV = "GATEWAYLAB_LEDGER_SOCKET"
SOCKET_NAME = "writer.sock"
LEN = struct.Struct("<I")
MAX_FRAME = 64 * 1024 * 1024
_FIELDS = frozenset(RECORD_FIELDS) - {"seq"}
READY = "ledger writer listening on "


def frame(obj: Any) -> bytes:
    body = orjson.dumps(obj)
    return LEN.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Any | None:
    """The next frame's object, or None at a clean end of stream (IncompleteReadError mid-frame)."""
    try:
        head = await reader.readexactly(LEN.size)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise
        return None
    (n,) = LEN.unpack(head)
    if n > MAX_FRAME:
        raise InvalidInput(f"frame of {n} bytes is over the {MAX_FRAME}-byte limit")
    return orjson.loads(await reader.readexactly(n))


# ------------------------------------------------------------------ the ledger process
class LedgerWriter:
    """The server side: one AuditLedger, a Unix socket, group commit across connections."""

    def __init__(
        self,
        directory: str,
        socket_path: str,
        switches: Switches,
        fsync: str = "group",
        group_delay_ms: float = 2.0,
        grace_s: float = 30.0,
    ):
        if fsync == "group":
            self.ledger = AuditLedger(
                directory, fsync=fsync, switches=switches, group_delay_ms=group_delay_ms
            )
        else:
            self.ledger = AuditLedger(directory, fsync=fsync, switches=switches)
        self.encode = switches.load("record")
        self.socket_path = socket_path
        self.grace_s = grace_s
        self._pending: list[tuple[list, asyncio.Future | None]] = []  # None: the stop mark
        self._wake = asyncio.Event()
        self._clients: set[asyncio.Task] = set()
        self._io = asyncio.Lock()  # readers never see a half-applied group
        self.batches = 0

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        with _suppress_missing():
            os.unlink(self.socket_path)
        old = os.umask(0o177)  # the socket is born 0600: only this user's workers may write the ledger
        try:
            server = await asyncio.start_unix_server(self._client, path=self.socket_path)
        finally:
            os.umask(old)
        committer = loop.create_task(self._committer())
        print(READY + self.socket_path, flush=True)
        try:
            await stop.wait()
        finally:
            server.close()
            if self._clients:
                await asyncio.wait(list(self._clients), timeout=self.grace_s)
            for t in list(self._clients):
                t.cancel()
            self._wake.set()
            self._pending.append(([], None))  # the committer's stop mark, after whatever is queued
            await committer
            await asyncio.to_thread(self.ledger.close)
            with _suppress_missing():
                os.unlink(self.socket_path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # the server runs each client handler as a task
        self._clients.add(task)
        try:
            while True:
                try:
                    msg = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break  # a worker died mid-frame: its unfinished batch was never acknowledged
                except (InvalidInput, orjson.JSONDecodeError) as e:
                    writer.write(frame({"ok": False, "kind": "invalid", "error": f"bad frame: {e}"}))
                    break
                if msg is None:
                    break
                writer.write(frame(await self._handle(msg)))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def _handle(self, msg: Any) -> dict:
        op = msg.get("op") if isinstance(msg, dict) else None
        try:
            if op == "append":
                recs = msg.get("records")
                if not isinstance(recs, list) or not recs:
                    return {
                        "ok": False,
                        "kind": "invalid",
                        "error": "append: 'records' must be a non-empty list",
                    }
                fut = asyncio.get_running_loop().create_future()
                self._pending.append((recs, fut))
                self._wake.set()
                return await fut
            if op == "root":
                async with self._io:
                    led = self.ledger
                    return {
                        "ok": True,
                        "count": led.count,
                        "root": led.root(),
                        "durable_count": led.durable_count,
                    }
            if op == "prove":
                kind, n = msg.get("kind"), msg.get("n")
                if kind not in ("inclusion", "consistency") or type(n) is not int:
                    return {
                        "ok": False,
                        "kind": "invalid",
                        "error": "prove: kind inclusion|consistency and int n",
                    }
                fn = self.ledger.inclusion_proof if kind == "inclusion" else self.ledger.consistency_proof
                async with self._io:
                    return {"ok": True, "proof": fn(n)}
            return {"ok": False, "kind": "invalid", "error": f"unknown op {op!r}"}
        except AuditIndexError as e:
            return {"ok": False, "kind": "index", "error": str(e)}
        except InvalidInput as e:
            return {"ok": False, "kind": "invalid", "error": str(e)}

    def _encode(self, recs: list, first: int) -> list[bytes]:
        out = []
        for i, r in enumerate(recs):
            if not isinstance(r, dict) or set(r) != _FIELDS:
                got = sorted(r) if isinstance(r, dict) else type(r).__name__
                raise InvalidInput(f"record {i}: expected the fields {sorted(_FIELDS)}, got {got}")
            out.append(self.encode({**r, "seq": first + i}))
        return out

    async def _committer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            group, self._pending = self._pending, []
            stop = any(fut is None for _, fut in group)
            payloads: list[bytes] = []
            done: list[tuple[asyncio.Future, int, int]] = []
            base = self.ledger.count
            for recs, fut in group:
                if fut is None:
                    continue
                try:
                    enc = self._encode(recs, base + len(payloads))
                except InvalidInput as e:
                    fut.set_result({"ok": False, "kind": "invalid", "error": str(e)})
                    continue
                done.append((fut, base + len(payloads), len(enc)))
                payloads += enc
            if payloads:
                try:
                    async with self._io:
                        await asyncio.to_thread(self.ledger.append_many, payloads)
                except Exception as e:  # noqa: BLE001 - every waiting worker hears it
                    print(
                        f"ledger writer: append of {len(payloads)} records failed: {type(e).__name__}: {e}",
                        file=sys.stderr,
                        flush=True,
                    )
                    for fut, _, _ in done:
                        fut.set_result({"ok": False, "kind": "ledger", "error": f"{type(e).__name__}: {e}"})
                    continue
                self.batches += 1
                count, durable = self.ledger.count, self.ledger.durable_count
                for fut, first, n in done:
                    fut.set_result(
                        {
                            "ok": True,
                            "first": first,
                            "count": n,
                            "ledger_count": count,
                            "durable_count": durable,
                        }
                    )
            if stop:
                return


class _suppress_missing:
    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        return et is not None and issubclass(et, FileNotFoundError)


def socket_path_for(directory: str) -> str:
    """`<directory>/writer.sock`, or a short private temp path when that is too long for AF_UNIX."""
    p = os.path.join(os.path.abspath(directory), SOCKET_NAME)
    if len(p.encode()) < 100:
        return p
    return os.path.join(tempfile.mkdtemp(prefix="glw-"), SOCKET_NAME)


class WriterProcess:
    """The ledger process as a child: `start(...)` returns once its socket listens."""

    def __init__(self, proc: subprocess.Popen, socket_path: str, log_path: str):
        self.proc, self.socket, self.log_path = proc, socket_path, log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(
        cls,
        directory: str,
        switches: Switches | None = None,
        fsync: str = "group",
        group_delay_ms: float = 2.0,
        socket_path: str | None = None,
        ready_timeout: float = 30.0,
        cpus=None,
    ) -> WriterProcess:
        sw = switches if switches is not None else Switches.resolve()
        sock = socket_path or socket_path_for(directory)
        args = [
            sys.executable,
            "-m",
            "gateway.audit.writer_process",
            "--dir",
            os.fspath(directory),
            "--socket",
            sock,
            "--fsync",
            fsync,
            "--group-delay-ms",
            str(group_delay_ms),
            "--mode",
            sw.mode,
            *[f"--impl={k}={v}" for k, v in sorted(sw.overrides.items())],
        ]
        log = tempfile.NamedTemporaryFile(prefix="gatewaylab-writer-", suffix=".log", delete=False)
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cpu_set = set(cpus) if cpus is not None else None

        def child_setup():
            # the writer outlives no parent: SIGTERM (commit, close) when the process that started it dies,
            # so a killed gateway never leaves an orphan holding the WAL's lock
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if cpu_set:
                os.sched_setaffinity(0, cpu_set)

        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=child_setup)
        log.close()
        wp = cls(proc, sock, log.name)
        deadline = time.monotonic() + ready_timeout
        while READY not in wp.output():
            if proc.poll() is not None:
                raise ConfigError(
                    f"the ledger writer exited with {proc.returncode}: {wp.output().strip()[-2000:]}"
                )
            if time.monotonic() > deadline:
                wp.kill()
                raise ConfigError(
                    f"the ledger writer did not listen within {ready_timeout}s: {wp.output()[-2000:]}"
                )
            time.sleep(0.02)
        return wp

    def output(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM: the writer commits what is pending and closes the ledger; SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


# ------------------------------------------------------------------ the worker side
class LedgerClient:
    """One connection to the ledger process (asyncio); requests are serialised on it."""

    def __init__(self, socket_path: str | None):
        self.socket_path = socket_path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self.count = 0  # the ledger's length as of the last reply (gauges, /health)
        self.durable_count = 0

    async def connect(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(self.socket_path)
                return
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() > deadline:
                    raise AuditUnavailable(
                        f"the ledger writer at {self.socket_path} does not answer: {e}"
                    ) from None
                await asyncio.sleep(0.05)

    async def call(self, msg: dict) -> dict:
        """One request, one reply. A lost connection fails this call (never resent: the writer
        may have committed it) and the next call reconnects, e.g. to a restarted writer."""
        async with self._lock:
            if self._writer is None:
                await self.connect(timeout=5.0)
            assert self._writer is not None and self._reader is not None  # connect() set both
            try:
                self._writer.write(frame(msg))
                await self._writer.drain()
                reply = await read_frame(self._reader)
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                await self.close()
                raise AuditUnavailable(f"the ledger writer went away: {type(e).__name__}: {e}") from None
            if reply is None:
                await self.close()
                raise AuditUnavailable("the ledger writer closed the connection")
        if reply.get("ok") and msg["op"] in ("append", "root"):
            self.count = max(self.count, reply["ledger_count" if msg["op"] == "append" else "count"])
            self.durable_count = max(self.durable_count, reply["durable_count"])
        return reply

    async def append_records(self, records: list[dict]) -> dict:
        reply = await self.call({"op": "append", "records": records})
        if not reply.get("ok"):
            raise AuditUnavailable(f"the ledger writer refused the batch: {reply.get('error')}")
        return reply

    async def close(self) -> None:
        w, self._writer, self._reader = self._writer, None, None
        if w is not None:
            w.close()
            with _suppress_conn():
                await w.wait_closed()


class _suppress_conn:
    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        return et is not None and issubclass(et, ConnectionError)


class SingleWriterAudit(BackgroundAudit):
    """The background audit path with the ledger in another process (see the module docstring).

    The socket is $GATEWAYLAB_LEDGER_SOCKET when a supervisor started the writer for several
    workers; otherwise this gateway starts its own writer on `ledger_dir` and stops it after
    draining, so a one-process gateway with this layout is complete on its own."""

    def _open_ledger(self, ledger_dir: str, fsync: str, group_delay_ms: float):
        self._owned: WriterProcess | None = None
        self._writer_args = (ledger_dir, fsync, group_delay_ms)
        return LedgerClient(os.environ.get(SOCKET_ENV) or None)

    def start(self) -> None:
        if self.ledger.socket_path is None:  # no supervisor's writer: this gateway runs its own
            ledger_dir, fsync, delay = self._writer_args
            self._owned = WriterProcess.start(ledger_dir, self.switches, fsync=fsync, group_delay_ms=delay)
            self.ledger.socket_path = self._owned.socket
        super().start()  # the connection is made by the first call (and remade after a lost one)

    async def _append(self, batch: list[AuditJob]) -> None:
        record = self._assembler.record
        recs = []
        for j in batch:
            r = record(0, j)
            del r["seq"]  # the ledger process numbers records in arrival order
            recs.append(r)
        await self.ledger.append_records(recs)

    async def root_view(self) -> dict:
        r = await self.ledger.call({"op": "root"})
        return {"count": r["count"], "root": r["root"], "durable_count": r["durable_count"]}

    async def prove(self, kind: str, n: int) -> dict:
        r = await self.ledger.call({"op": "prove", "kind": kind, "n": n})
        if not r.get("ok"):
            if r.get("kind") == "index":
                raise AuditIndexError(r["error"])
            raise AuditUnavailable(f"the ledger writer: {r.get('error')}")
        return r["proof"]

    async def _close_ledger(self) -> None:
        """After the drain: close the connection, then stop our own writer, if any."""
        await self.ledger.close()
        if self._owned is not None:
            await asyncio.to_thread(self._owned.stop)


# ------------------------------------------------------------------ python -m gateway.audit.writer_process
def main(argv: list[str] | None = None) -> int:
    from gateway.audit.wal import POLICIES

    p = argparse.ArgumentParser(
        prog="python -m gateway.audit.writer_process", description=__doc__.splitlines()[0]
    )
    p.add_argument("--dir", required=True, help="the ledger folder (audit.wal, audit.mmr)")
    p.add_argument("--socket", default=None, help=f"Unix socket path (default <dir>/{SOCKET_NAME})")
    p.add_argument("--fsync", default="group", choices=POLICIES)
    p.add_argument("--group-delay-ms", type=float, default=2.0)
    p.add_argument("--mode", default=None, help="twins for mmr/wal/record (py, py+rs)")
    p.add_argument("--impl", action="append", default=[], metavar="C=python|rust")
    p.add_argument("--grace", type=float, default=30.0, help="seconds to wait for workers after SIGTERM")
    a = p.parse_args(argv)
    try:
        sw = Switches.resolve(mode=a.mode, impl=a.impl)
        writer = LedgerWriter(
            a.dir,
            a.socket or socket_path_for(a.dir),
            sw,
            fsync=a.fsync,
            group_delay_ms=a.group_delay_ms,
            grace_s=a.grace,
        )
    except GatewayLabError as e:
        print(f"ledger writer: error: {e}", file=sys.stderr)
        return 1
    asyncio.run(writer.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
