"""Rust discipline of the audit-core bindings: exact GIL accounting per entry point, panics
as exceptions, one WAL writer per file (across twins and processes), clear errors on bad
arguments, and safe concurrent use while a batch runs detached."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from gateway import _native as rs
from gateway.audit.wal import WriteAheadLog as PyWAL
from gateway.errors import (
    AuditIndexError,
    InvalidInput,
    NativePanic,
    ProofError,
    WalCorruptError,
    WalError,
    WalLockedError,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEAVES = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(20_000)]


def stats(name):
    return rs.gil_stats().get(name, {"calls": 0, "hold_ns": 0, "detached_ns": 0, "reacquire_wait_ns": 0})


# ---------------------------------------------------------------------------------------
# GIL accounting
# ---------------------------------------------------------------------------------------


def test_gil_counters_move_for_mmr_batches_and_reset():
    rs.gil_stats(reset=True)
    m = rs.MerkleMountainRange()
    assert m.append_many(LEAVES) == len(LEAVES)
    s = stats("mmr.append_many")
    assert s["calls"] >= 1
    assert s["detached_ns"] > 0, "the batch must hash with the GIL released"
    assert s["hold_ns"] > 0, "collecting the payloads holds the GIL"
    assert set(s) >= {"calls", "hold_ns", "detached_ns", "reacquire_wait_ns", "max_reacquire_wait_ns"}
    # every detach ends in a re-acquire: the longest single wait cannot exceed the total
    assert s["max_reacquire_wait_ns"] <= s["reacquire_wait_ns"]
    m.append(b"x")
    m.root()
    a = stats("mmr.append")
    assert a["calls"] >= 1 and a["detached_ns"] == 0, "per-leaf append is sub-microsecond: stays on the GIL"
    assert stats("mmr.root")["calls"] >= 1
    before = rs.gil_stats(reset=True)
    assert before["mmr.append_many"]["calls"] >= 1, "reset returns the counts it clears"
    after = {k: v for k, v in rs.gil_stats().items() if k.startswith(("mmr.", "wal."))}
    assert {"mmr.append_many", "mmr.append", "mmr.root"} <= set(after), sorted(after)
    assert all(v == 0 for entry in after.values() for v in entry.values()), after


def test_gil_counters_for_wal_entries(tmp_path):
    rs.gil_stats(reset=True)
    path = str(tmp_path / "a.wal")
    with rs.WriteAheadLog(path, fsync="group") as w:
        w.append(b"one")
        w.append_many([b"two", b"three"])
        w.flush()
        assert w.count == 3
    assert rs.WriteAheadLog.replay(path) == [b"one", b"two", b"three"]
    s = rs.gil_stats()
    for name in ("wal.open", "wal.append", "wal.append_many", "wal.flush", "wal.close", "wal.replay"):
        assert s[name]["calls"] >= 1, name
        assert s[name]["detached_ns"] > 0, f"{name}: file I/O must run with the GIL released"
    assert s["wal.count"]["calls"] >= 1 and s["wal.count"]["detached_ns"] == 0


def test_other_entry_points_are_counted():
    rs.gil_stats(reset=True)
    rs.sha256_hex(b"abc")
    rs.sha256_hex(b"x" * 100_000)
    rs.sha256_many(LEAVES[:100], with_nodes=True)
    rs.encode_record({"a": 1})
    rs.entropy_millibits(b'{"choices":[]}')
    rs.text_entropy_millibits("a b")
    s = rs.gil_stats()
    assert s["sha256_hex"]["calls"] >= 2 and s["sha256_hex"]["detached_ns"] > 0  # the large body
    assert s["sha256_many"]["calls"] >= 1 and s["sha256_many"]["detached_ns"] > 0
    assert s["encode_record"]["calls"] >= 1
    assert s["entropy_millibits"]["detached_ns"] > 0
    assert s["text_entropy_millibits"]["calls"] >= 1


# ---------------------------------------------------------------------------------------
# Panics
# ---------------------------------------------------------------------------------------


def test_panic_becomes_native_panic_and_the_module_keeps_working():
    with pytest.raises(NativePanic, match="boom"):
        rs._debug_panic("boom")
    with pytest.raises(RuntimeError):  # NativePanic is a RuntimeError too
        rs._debug_panic("again")
    m = rs.MerkleMountainRange()
    m.append_many(LEAVES[:11])
    assert m.root() == "d7c096aa30302d92b45e982acca1001073b31eb8f9692033970a193591ea3c6b"


# ---------------------------------------------------------------------------------------
# One writer per WAL
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first,second",
    [(rs.WriteAheadLog, rs.WriteAheadLog), (rs.WriteAheadLog, PyWAL), (PyWAL, rs.WriteAheadLog)],
)
def test_second_writer_in_process_is_refused(tmp_path, first, second):
    path = str(tmp_path / "w.wal")
    w = first(path, fsync="none")
    try:
        w.append(b"held")
        with pytest.raises(WalLockedError, match="locked"):
            second(path, fsync="none")
        assert rs.WriteAheadLog.replay(path) == [b"held"]  # readers need no lock
    finally:
        w.close()
    with second(path, fsync="none") as w2:
        assert w2.count == 1


def test_dropping_a_rust_writer_releases_the_lock(tmp_path):
    path = str(tmp_path / "w.wal")
    w = rs.WriteAheadLog(path, fsync="group")
    w.append(b"a")
    del w
    with PyWAL(path) as w2:
        assert w2.count == 1


HOLDER = textwrap.dedent(
    """
    import sys
    from gateway import _native
    w = _native.WriteAheadLog(sys.argv[1], fsync="always")
    w.append(b"from the child")
    print("locked", flush=True)
    sys.stdin.readline()
    w.close()
    print("released", flush=True)
    """
)


def test_second_writer_across_processes_is_refused(tmp_path):
    path = str(tmp_path / "shared.wal")
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "locked", child.stderr.read()
        for cls in (rs.WriteAheadLog, PyWAL):
            with pytest.raises(WalLockedError):
                cls(path, fsync="none")
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "released"
        assert child.wait(timeout=30) == 0
        with rs.WriteAheadLog(path, fsync="none") as w:
            assert w.count == 1 and w.recovery == {"records": 1, "truncated_bytes": 0}
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)


# ---------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------

NOT_BYTES = ["text", 1, None, 1.5, [b"a"], object()]


@pytest.mark.parametrize("bad", NOT_BYTES, ids=repr)
def test_non_bytes_payloads_are_invalid_input(tmp_path, bad):
    m = rs.MerkleMountainRange()
    with pytest.raises(InvalidInput, match="must be bytes"):
        m.append(bad)
    with pytest.raises(InvalidInput):
        m.append_many([b"ok", bad])
    assert len(m) == 0, "append_many is all-or-nothing"
    with rs.WriteAheadLog(str(tmp_path / "w.wal"), fsync="none") as w:
        with pytest.raises(InvalidInput):
            w.append(bad)
        with pytest.raises(InvalidInput):
            w.append_many([b"ok", bad])
        assert w.count == 0
    assert rs.WriteAheadLog.replay(str(tmp_path / "w.wal")) == []
    with pytest.raises(InvalidInput):
        rs.sha256_hex(bad)
    with pytest.raises(InvalidInput):
        rs.entropy_millibits(bad)


def test_bytes_like_payloads_are_accepted():
    m = rs.MerkleMountainRange()
    m.append(b"abc")
    m.append(bytearray(b"abc"))
    m.append(memoryview(b"xabc")[1:])
    assert m.leaf_hash(0) == m.leaf_hash(1) == m.leaf_hash(2)
    for single in (b"abc", bytearray(b"abc"), "abc", memoryview(b"abc")):
        with pytest.raises(InvalidInput, match="single value"):
            m.append_many(single)
    with pytest.raises(InvalidInput, match="sequence"):
        m.append_many(3)
    assert m.append_many(iter([b"g", bytearray(b"h")])) == 5


def test_index_errors_are_clear():
    m = rs.MerkleMountainRange()
    m.append_many(LEAVES[:5])
    for bad in (5, -1, 2**70):
        with pytest.raises(AuditIndexError, match="out of range"):
            m.inclusion_proof(bad)
        with pytest.raises(AuditIndexError):
            m.leaf_hash(bad)
    for bad in (6, -1, 2**70):
        with pytest.raises(AuditIndexError, match="out of range"):
            m.consistency_proof(bad)
    for bad in (True, 1.0, "1", None):
        with pytest.raises(InvalidInput, match="must be int"):
            m.inclusion_proof(bad)
        with pytest.raises(InvalidInput):
            m.consistency_proof(bad)
    assert m.consistency_proof(5)["old_root"] == m.root()


def test_malformed_proof_errors_name_the_problem():
    m = rs.MerkleMountainRange()
    m.append_many(LEAVES[:11])
    p = m.inclusion_proof(9)
    with pytest.raises(ProofError, match="JSON"):
        rs.MerkleMountainRange.verify_inclusion("{not json")
    with pytest.raises(ProofError, match="leaf_hash"):
        rs.MerkleMountainRange.verify_inclusion({k: v for k, v in p.items() if k != "leaf_hash"})
    with pytest.raises(ProofError, match="siblings"):
        rs.MerkleMountainRange.verify_inclusion({**p, "siblings": []})
    with pytest.raises(ProofError, match="hex"):
        rs.MerkleMountainRange.verify_inclusion({**p, "root": p["root"].upper()})
    with pytest.raises(ProofError, match="old_count"):
        rs.MerkleMountainRange.verify_consistency({**m.consistency_proof(3), "old_count": 12})
    with pytest.raises(InvalidInput):  # a well-formed proof with a non-bytes payload
        rs.MerkleMountainRange.verify_inclusion(p, "payload")


def test_wal_constructor_arguments(tmp_path):
    path = str(tmp_path / "w.wal")
    for kwargs in (
        {"fsync": "sometimes"},
        {"fsync": 1},
        {"group_max_records": 0},
        {"group_max_records": -1},
        {"group_max_records": True},
        {"group_max_records": 2.0},
        {"group_delay_ms": -1},
        {"group_delay_ms": "2"},
        {"group_delay_ms": float("nan")},
    ):
        with pytest.raises(InvalidInput):
            rs.WriteAheadLog(path, **kwargs)
    with pytest.raises(InvalidInput, match="path"):
        rs.WriteAheadLog(3)
    with pytest.raises(FileNotFoundError):
        rs.WriteAheadLog.replay(str(tmp_path / "missing.wal"))
    with pytest.raises(FileNotFoundError):
        rs.WriteAheadLog(str(tmp_path / "no" / "such" / "dir.wal"))
    w = rs.WriteAheadLog(tmp_path / "pathlike.wal", fsync="always", group_delay_ms=0, group_max_records=1)
    assert w.path == str(tmp_path / "pathlike.wal") and w.fsync_policy == "always"
    w.close()
    w.close()  # idempotent
    with pytest.raises(WalError, match="closed"):
        w.append(b"late")


def test_corruption_error_carries_the_offset(tmp_path):
    path = tmp_path / "c.wal"
    with rs.WriteAheadLog(str(path), fsync="none") as w:
        w.append_many([b"aaaa", b"bbbb", b"cccc"])
    data = bytearray(path.read_bytes())
    data[8 + 12 + 9] ^= 0x40  # inside the second frame's payload
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError, match="offset 20") as e:
        rs.WriteAheadLog(str(path))
    assert e.value.offset == 20
    assert path.read_bytes() == bytes(data)


# ---------------------------------------------------------------------------------------
# Concurrency while detached
# ---------------------------------------------------------------------------------------


def test_readers_while_a_batch_runs_detached():
    """Other threads call in while append_many holds the MMR detached: they wait (detached)
    for it and always see a consistent leaf count, never an error."""
    m = rs.MerkleMountainRange()
    seen, errors = [], []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                seen.append(len(m))
                m.root()
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(5):
            m.append_many(LEAVES)
        deadline = time.monotonic() + 30  # let the reader see the final count: `seen` is never empty below
        while (not seen or seen[-1] != 5 * len(LEAVES)) and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.001)
    finally:
        stop.set()
        t.join(timeout=60)
    assert not errors
    assert seen and seen[-1] == 5 * len(LEAVES), "the reader never saw the final count"
    assert all(n % len(LEAVES) == 0 for n in seen), "a reader never sees half a batch"
    ref = rs.MerkleMountainRange()
    ref.append_many(LEAVES * 5)
    assert m.root() == ref.root()
