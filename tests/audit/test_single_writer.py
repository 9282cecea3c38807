"""The single-writer ledger layout (gateway/audit/writer_process.py, docs/single_writer.md):
records from several client processes end up in one ledger that equals an independent
recomputation, and kill -9 of a client loses nothing the ledger process acknowledged."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.audit.ledger import WAL_NAME, AuditLedger
from gateway.audit.record import RECORD_FIELDS
from gateway.audit.wal import WriteAheadLog
from gateway.audit.writer_process import WriterProcess
from gateway.twins import Switches

ROOT = Path(__file__).resolve().parents[2]

# One client process: BATCHES batches of SIZE records over the socket (as a gateway worker's
# background path sends them); after each acknowledgement it prints the request ids it covers.
CLIENT = r"""
import asyncio, json, sys
from gateway.audit.writer_process import LedgerClient

async def main(sock, name, batches, size, pause):
    c = LedgerClient(sock)
    await c.connect()
    for b in range(batches):
        recs = [{"time_ns": b * 1000 + i, "request_id": f"{name}-{b * size + i}", "key_id": name, "model": "m",
                 "status": 200, "request_sha256": "a" * 64, "response_sha256": "b" * 64,
                 "entropy_mbits": i, "prompt_tokens": 1, "completion_tokens": 2, "latency_us": 3,
                 "waf": "allow" if i % 2 else "caf\u00e9"} for i in range(size)]
        r = await c.append_records(recs)
        assert r["count"] == size, r
        print(json.dumps([x["request_id"] for x in recs]), flush=True)
        if pause:
            await asyncio.sleep(pause)
    await c.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])))
"""


def _mmr_root(payloads: list[bytes]) -> str:
    """MMR v2 root recomputed here with hashlib only (docs/formats.md), not with either twin."""
    peaks: list[tuple[int, bytes]] = []
    for p in payloads:
        h, node = 0, hashlib.sha256(b"\x00" + p).digest()
        while peaks and peaks[-1][0] == h:
            _, left = peaks.pop()
            node, h = hashlib.sha256(b"\x01" + left + node).digest(), h + 1
        peaks.append((h, node))
    if not peaks:
        return "0" * 64
    return hashlib.sha256(b"\x02" + b"".join(n for _, n in peaks)).hexdigest()


def _client(sock: str, name: str, batches: int, size: int, pause: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, sock, name, str(batches), str(size), str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize("mode", ["py", "py+rs"])
def test_records_from_several_processes_make_one_ledger_and_kill9_loses_nothing_acknowledged(tmp_path, mode):
    sw = Switches(mode)
    writer = WriterProcess.start(str(tmp_path / "ledger"), sw, fsync="group")
    try:
        steady = [_client(writer.socket, f"w{k}", 12, 7, 0.0) for k in range(3)]
        victim = _client(writer.socket, "victim", 10_000, 5, 0.002)
        acked_victim: list[str] = []
        deadline = time.monotonic() + 60
        while len(acked_victim) < 20 and time.monotonic() < deadline:  # it is mid-stream when killed
            line = victim.stdout.readline()
            assert line, victim.stderr.read()
            acked_victim += json.loads(line)
        victim.send_signal(signal.SIGKILL)
        out, _ = victim.communicate(timeout=30)
        acked_victim += [
            i for line in out.splitlines() if line.strip() for i in json.loads(line)
        ]  # printed = acked
        sent = {}
        for k, p in enumerate(steady):
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            sent[f"w{k}"] = [i for line in out.splitlines() for i in json.loads(line)]
        assert writer.stop() == 0, writer.output()
    finally:
        writer.kill()

    payloads = WriteAheadLog.replay(str(tmp_path / "ledger" / WAL_NAME))
    records = [json.loads(p) for p in payloads]
    assert [r["seq"] for r in records] == list(range(len(records)))  # numbered by the one writer
    assert all(set(r) == set(RECORD_FIELDS) for r in records)
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids)), "a record was written twice"
    for name, want in sent.items():  # every steady client: all of it, in its own order
        assert [i for i in ids if i.startswith(name + "-")] == want == [f"{name}-{n}" for n in range(84)]
    victim_ids = [i for i in ids if i.startswith("victim-")]
    assert victim_ids[: len(acked_victim)] == acked_victim, "kill -9 lost an acknowledged record"
    assert len(victim_ids) % 5 == 0  # batches are appended whole or not at all
    # bytes are the canonical record encoding (non-ASCII escaped) and the root recomputes
    assert b"caf\\u00e9" in payloads[0] or b"caf\\u00e9" in payloads[1]
    with AuditLedger(tmp_path / "ledger", switches=Switches("py")) as led:
        assert led.count == len(records)
        assert led.root() == _mmr_root(payloads)


def test_the_writer_refuses_a_bad_batch_and_answers_proofs(tmp_path):
    import asyncio

    from gateway.audit.writer_process import LedgerClient
    from gateway.errors import AuditUnavailable

    writer = WriterProcess.start(str(tmp_path / "ledger"), Switches("py"), fsync="none")
    try:

        async def go():
            c = LedgerClient(writer.socket)
            await c.connect()
            with pytest.raises(AuditUnavailable, match="expected the fields"):
                await c.append_records([{"request_id": "x"}])
            with pytest.raises(AuditUnavailable, match="int or str"):
                await c.append_records([{f: 1.5 for f in RECORD_FIELDS if f != "seq"}])
            good = {f: 1 for f in RECORD_FIELDS if f != "seq"}
            r = await c.append_records([good, good, good])
            assert (r["first"], r["count"], r["ledger_count"]) == (0, 3, 3)
            root = await c.call({"op": "root"})
            proof = await c.call({"op": "prove", "kind": "inclusion", "n": 2})
            bad = await c.call({"op": "prove", "kind": "inclusion", "n": 3})
            await c.close()
            return root, proof, bad

        root, proof, bad = asyncio.run(go())
        assert root["count"] == 3 and proof["proof"]["root"] == root["root"]
        assert bad["ok"] is False and bad["kind"] == "index"
        assert writer.stop() == 0
    finally:
        writer.kill()
    payloads = WriteAheadLog.replay(str(tmp_path / "ledger" / WAL_NAME))
    assert len(payloads) == 3 and _mmr_root(payloads) == root["root"]


def test_kill9_of_the_ledger_process_then_a_restart_continues_the_ledger(tmp_path):
    import asyncio

    from gateway.audit.writer_process import LedgerClient
    from gateway.errors import AuditUnavailable

    rec = {f: 1 for f in RECORD_FIELDS if f != "seq"}
    d = str(tmp_path / "ledger")
    first = WriterProcess.start(d, Switches("py"), fsync="always")
    second = None
    try:

        async def go():
            nonlocal second
            c = LedgerClient(first.socket)
            assert (await c.append_records([rec] * 4))["ledger_count"] == 4  # acknowledged: fsynced
            first.kill()  # kill -9 of the ledger process
            with pytest.raises(AuditUnavailable):
                await c.append_records([rec])  # fails, and is never resent
            second = WriterProcess.start(d, Switches("py"), fsync="always", socket_path=first.socket)
            r = await c.append_records([rec] * 2)  # the client reconnects to the restarted writer
            await c.close()
            return r

        r = asyncio.run(go())
        assert (r["first"], r["ledger_count"]) == (4, 6)
        assert second.stop() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
    records = [json.loads(p) for p in WriteAheadLog.replay(str(tmp_path / "ledger" / WAL_NAME))]
    assert [r["seq"] for r in records] == list(range(6))
