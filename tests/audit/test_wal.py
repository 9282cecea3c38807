"""WriteAheadLog, both twins: the vector file, recovery, corruption, locking, policies."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from gateway import twins
from gateway.errors import InvalidInput, WalCorruptError, WalLockedError

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "mmr_v2.json").read_text())
MAGIC = b"GLWAL\x00\x01\n"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def WAL(impl):
    return twins.load("wal", impl)


def frame(p: bytes) -> bytes:
    return struct.pack("<II", len(p), zlib.crc32(p)) + p


# Payloads with no run of 8 zero bytes, so no suffix of a cut frame can itself look like a
# valid (empty) frame: every cut is a torn tail, never corruption.
PAYLOADS = [b"record-%03d:" % i + bytes(range(1, 1 + i % 23)) for i in range(6)]


def write(WAL, path, payloads, **kw):
    with WAL(str(path), **kw) as w:
        for p in payloads:
            w.append(p)
        assert w.count == len(payloads)
    return path.read_bytes()


def test_vector_file_bytes(WAL, tmp_path):
    ex = VECTORS["wal_v1_example"]
    payloads = [s.encode() for s in ex["payloads_utf8"]]
    assert write(WAL, tmp_path / "a.wal", payloads).hex() == ex["file_hex"]
    with WAL(str(tmp_path / "b.wal"), fsync="none") as w:
        assert w.append_many(payloads) == 3
    assert (tmp_path / "b.wal").read_bytes().hex() == ex["file_hex"]
    (tmp_path / "c.wal").write_bytes(bytes.fromhex(ex["file_hex"]))
    assert WAL.replay(str(tmp_path / "c.wal")) == payloads
    with WAL(str(tmp_path / "c.wal")) as w:
        assert w.count == 3 and w.recovery == {"records": 3, "truncated_bytes": 0}


@pytest.mark.parametrize("policy", ["always", "group", "none"])
def test_policies_write_identical_bytes_and_reopen(WAL, tmp_path, policy):
    path = tmp_path / "p.wal"
    data = write(WAL, path, PAYLOADS, fsync=policy)
    assert data == MAGIC + b"".join(frame(p) for p in PAYLOADS)
    with WAL(str(path), fsync=policy) as w:
        assert w.count == len(PAYLOADS)
        assert w.append(b"more") == len(PAYLOADS)
        w.flush()
        assert w.durable_count == w.count
    assert WAL.replay(str(path)) == PAYLOADS + [b"more"]


def test_always_is_durable_per_record(WAL, tmp_path):
    with WAL(str(tmp_path / "a.wal"), fsync="always") as w:
        for i in range(5):
            w.append(b"x%d" % i)
            assert w.durable_count == w.count == i + 1


def test_group_commit_has_bounded_delay(WAL, tmp_path):
    with WAL(str(tmp_path / "g.wal"), fsync="group", group_delay_ms=2.0, group_max_records=1000) as w:
        w.append(b"one")
        deadline = time.monotonic() + 10.0  # generous bound; the contract is 2 ms
        while w.durable_count < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert w.durable_count == 1, "group commit never fsynced the pending record"
        assert w.append_many([b"a", b"b", b"c"]) == 4


def test_empty_and_short_magic_prefix_are_completed(WAL, tmp_path):
    for k in range(len(MAGIC)):
        path = tmp_path / f"m{k}.wal"
        path.write_bytes(MAGIC[:k])
        with WAL(str(path)) as w:
            assert w.count == 0 and w.recovery == {"records": 0, "truncated_bytes": 0}
        assert path.read_bytes() == MAGIC


@pytest.mark.parametrize("header", [b"XLWAL\x00\x01\n", b"GLWAL\x00\x02\n", b"nope", b"GLWAL\x00\x01\nxx"[:8][::-1]])
def test_bad_header_is_corruption_at_offset_0(WAL, tmp_path, header):
    path = tmp_path / "h.wal"
    path.write_bytes(header + frame(b"data"))
    before = path.read_bytes()
    with pytest.raises(WalCorruptError, match="offset 0") as e:
        WAL(str(path))
    assert e.value.offset == 0
    assert path.read_bytes() == before


def test_torn_tail_at_every_byte_offset(WAL, tmp_path):
    from gateway.audit.mmr import MerkleMountainRange

    full = MAGIC + b"".join(frame(p) for p in PAYLOADS)
    last = frame(PAYLOADS[-1])
    prefix = full[: len(full) - len(last)]
    expect_root = MerkleMountainRange()
    expect_root.append_many(PAYLOADS[:-1])
    MMR = twins.load("mmr", "python")
    for cut in range(len(last)):
        path = tmp_path / f"cut{cut}.wal"
        path.write_bytes(prefix + last[:cut])
        assert WAL.replay(str(path)) == PAYLOADS[:-1]
        assert path.stat().st_size == len(prefix) + cut, "replay must not modify the file"
        with WAL(str(path)) as w:
            assert w.recovery == {"records": len(PAYLOADS) - 1, "truncated_bytes": cut}
            assert w.count == len(PAYLOADS) - 1
        assert path.read_bytes() == prefix
        m = MMR()
        m.append_many(WAL.replay(str(path)))
        assert m.root() == expect_root.root()


def test_bit_flip_in_an_earlier_frame_is_corruption(WAL, tmp_path):
    frames = [frame(p) for p in PAYLOADS]
    offset = len(MAGIC) + len(frames[0])  # frame 1
    full = MAGIC + b"".join(frames)
    for bit in range(len(frames[1]) * 8):
        data = bytearray(full)
        data[offset + bit // 8] ^= 1 << (bit % 8)
        path = tmp_path / "flip.wal"
        path.write_bytes(bytes(data))
        with pytest.raises(WalCorruptError, match=f"offset {offset}\\b") as e:
            WAL(str(path))
        assert e.value.offset == offset
        assert path.read_bytes() == bytes(data), "nothing may be modified on corruption"
        with pytest.raises(WalCorruptError, match=f"offset {offset}\\b"):
            WAL.replay(str(path))


def test_corruption_is_not_mistaken_for_a_torn_tail(WAL, tmp_path):
    # garbage in the middle, then a valid frame that ends at EOF: corruption, not truncation
    path = tmp_path / "mid.wal"
    head = MAGIC + frame(b"first")
    path.write_bytes(head + b"\xff" * 5 + frame(b"after"))
    with pytest.raises(WalCorruptError, match=f"offset {len(head)}\\b"):
        WAL(str(path))
    # garbage at the end with no valid chain after it: torn tail, truncated
    path.write_bytes(head + b"\xff" * 5)
    with WAL(str(path)) as w:
        assert w.recovery == {"records": 1, "truncated_bytes": 5}


def test_second_writer_refused_in_process(WAL, tmp_path):
    path = str(tmp_path / "l.wal")
    with WAL(path):
        for other in twins.IMPLS:
            with pytest.raises(WalLockedError):
                twins.load("wal", other)(path)
    with WAL(path) as w:  # released on close
        assert w.count == 0


def test_second_writer_refused_across_processes(WAL, tmp_path):
    path = str(tmp_path / "x.wal")
    code = (
        "import sys\nfrom gateway import twins\nfrom gateway.errors import WalLockedError\n"
        "try:\n    twins.load('wal', sys.argv[1])(sys.argv[2])\nexcept WalLockedError as e:\n"
        "    print('locked:', e); sys.exit(3)\nsys.exit(0)\n"
    )
    with WAL(path):
        for other in twins.IMPLS:
            r = subprocess.run([sys.executable, "-c", code, other, path], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert r.returncode == 3, (other, r.stdout, r.stderr)


def test_bad_arguments(WAL, tmp_path):
    path = str(tmp_path / "b.wal")
    with pytest.raises(InvalidInput):
        WAL(path, fsync="sometimes")
    for delay in (float("nan"), float("inf"), -1.0, "2"):
        with pytest.raises(InvalidInput):
            WAL(path, group_delay_ms=delay)
    with WAL(path) as w:
        for bad in ("text", 1, None, [b"x"]):
            with pytest.raises(InvalidInput):
                w.append(bad)
        with pytest.raises(InvalidInput):
            w.append_many([b"ok", "not bytes"])
        assert w.count == 0, "append_many is all-or-nothing"
    assert WAL.replay(path) == []


def test_close_is_idempotent_and_releases(WAL, tmp_path):
    path = str(tmp_path / "c.wal")
    w = WAL(path, fsync="group")
    w.append(b"a")
    w.close()
    w.close()
    assert WAL.replay(path) == [b"a"]
    with WAL(path) as w2:
        assert w2.count == 1


def test_twins_read_each_others_files(tmp_path):
    for writer in twins.IMPLS:
        for reader in twins.IMPLS:
            path = tmp_path / f"{writer}-{reader}.wal"
            write(twins.load("wal", writer), path, PAYLOADS)
            R = twins.load("wal", reader)
            assert R.replay(str(path)) == PAYLOADS
            with R(str(path)) as w:
                w.append(b"tail")
            assert twins.load("wal", writer).replay(str(path)) == PAYLOADS + [b"tail"]
