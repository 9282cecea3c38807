"""WriteAheadLog, both twins: the vector files (v2 and v1), recovery, corruption, zero fill,
locking, policies. Frames here are built with struct and zlib, not by either twin."""

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
WAL_V2 = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "wal_v2.json").read_text())
MAGIC_V1 = b"GLWAL\x00\x01\n"
MAGIC_V2 = b"GLWAL\x00\x02\n"
MAGIC = MAGIC_V2  # what a new file gets
MAGICS = {1: MAGIC_V1, 2: MAGIC_V2}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def WAL(impl):
    return twins.load("wal", impl)


def frame(p: bytes, version: int = 2) -> bytes:
    n = struct.pack("<I", len(p))
    return n + struct.pack("<I", zlib.crc32(p) if version == 1 else zlib.crc32(n + p)) + p


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
    ex = WAL_V2["wal_v2_example"]
    assert bytes.fromhex(ex["file_hex"]) == MAGIC_V2 + b"".join(
        frame(s.encode()) for s in ex["payloads_utf8"]
    )
    payloads = [s.encode() for s in ex["payloads_utf8"]]
    assert write(WAL, tmp_path / "a.wal", payloads).hex() == ex["file_hex"]
    with WAL(str(tmp_path / "b.wal"), fsync="none") as w:
        assert w.append_many(payloads) == 3
    assert (tmp_path / "b.wal").read_bytes().hex() == ex["file_hex"]
    (tmp_path / "c.wal").write_bytes(bytes.fromhex(ex["file_hex"]))
    assert WAL.replay(str(tmp_path / "c.wal")) == payloads
    with WAL(str(tmp_path / "c.wal")) as w:
        assert w.count == 3 and w.recovery == {"records": 3, "truncated_bytes": 0}


def test_v1_vector_is_read_and_appended_as_v1(WAL, tmp_path):
    """A ledger written before v2 keeps working: read, recovered, and appended to in v1
    frames (a file has one version)."""
    ex = VECTORS["wal_v1_example"]
    payloads = [s.encode() for s in ex["payloads_utf8"]]
    path = tmp_path / "v1.wal"
    path.write_bytes(bytes.fromhex(ex["file_hex"]))
    assert WAL.replay(str(path)) == payloads
    with WAL(str(path), fsync="always") as w:
        assert w.version == 1 and w.recovery == {"records": 3, "truncated_bytes": 0}
        w.append_many([b"four", b"five"])
    assert path.read_bytes() == bytes.fromhex(ex["file_hex"]) + frame(b"four", 1) + frame(b"five", 1)
    assert WAL.replay(str(path), len(bytes.fromhex(ex["file_hex"]))) == [b"four", b"five"]
    with WAL(str(tmp_path / "new.wal")) as w:
        assert w.version == 2


@pytest.mark.parametrize("start", ["boundary", "in_a_cut_frame", "in_a_cut_header"])
def test_zero_fill_is_a_torn_tail_in_v2(WAL, tmp_path, start):
    """The reason for v2: a power loss can leave the file longer than its data, the rest zero.
    Eight zero bytes are a valid v1 frame (an empty payload; CRC-32 of b"" is 0), so v1 read
    them back as phantom records; a v2 zero frame fails its CRC (CRC-32 of four zero bytes
    is not 0), so zero fill is truncated like any torn tail, wherever it starts."""
    ex = WAL_V2["wal_v2_example"]
    good = bytes.fromhex(ex["file_hex"])
    payloads = [s.encode() for s in ex["payloads_utf8"]]
    cut = {"boundary": b"", "in_a_cut_frame": frame(b"record-3")[:11], "in_a_cut_header": frame(b"x")[:3]}[
        start
    ]
    for zeros in WAL_V2["zero_fill"]["zero_bytes"]:
        path = tmp_path / f"z{zeros}.wal"
        path.write_bytes(good + cut + bytes(zeros))
        assert WAL.replay(str(path)) == payloads, zeros
        with WAL(str(path), fsync="none") as w:
            assert w.recovery == {"records": 3, "truncated_bytes": len(cut) + zeros}, zeros
        assert path.read_bytes() == good


def test_zero_fill_after_a_v1_boundary_reads_as_empty_records(WAL, tmp_path):
    """The v1 weakness v2 removes, pinned as the documented behaviour of v1 files: zero fill
    at a frame boundary comes back as empty records (a v1 file cannot tell them apart)."""
    path = tmp_path / "v1z.wal"
    path.write_bytes(MAGIC_V1 + frame(b"a", 1) + bytes(16))
    assert WAL.replay(str(path)) == [b"a", b"", b""]


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


@pytest.mark.parametrize("version", [1, 2])
def test_empty_and_short_magic_prefix_are_completed(WAL, tmp_path, version):
    """A torn header of either version holds no records: the file starts over as v2."""
    for k in range(8):
        path = tmp_path / f"m{k}.wal"
        path.write_bytes(MAGICS[version][:k])
        with WAL(str(path)) as w:
            assert w.count == 0 and w.recovery == {"records": 0, "truncated_bytes": 0}
            assert w.version == 2
        assert path.read_bytes() == MAGIC_V2


@pytest.mark.parametrize(
    "header",
    [
        b"XLWAL\x00\x01\n",
        b"GLWAL\x00\x03\n",
        b"GLWAL\x00\x00\n",
        b"nope",
        b"GLWAL\x00\x01\nxx"[:8][::-1],
        b"GLWAL\x00\x02\r",
    ],
)
def test_bad_header_is_corruption_at_offset_0(WAL, tmp_path, header):
    path = tmp_path / "h.wal"
    path.write_bytes(header + frame(b"data"))
    before = path.read_bytes()
    with pytest.raises(WalCorruptError, match="offset 0") as e:
        WAL(str(path))
    assert e.value.offset == 0
    assert path.read_bytes() == before


@pytest.mark.parametrize("version", [1, 2])
def test_torn_tail_at_every_byte_offset(WAL, tmp_path, version):
    from gateway.audit.mmr import MerkleMountainRange

    full = MAGICS[version] + b"".join(frame(p, version) for p in PAYLOADS)
    last = frame(PAYLOADS[-1], version)
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


@pytest.mark.parametrize("version", [1, 2])
def test_bit_flip_in_an_earlier_frame_is_corruption(WAL, tmp_path, version):
    frames = [frame(p, version) for p in PAYLOADS]
    offset = 8 + len(frames[0])  # frame 1
    full = MAGICS[version] + b"".join(frames)
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
            r = subprocess.run(
                [sys.executable, "-c", code, other, path],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
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


def test_trusted_prefix_scans_only_the_tail(WAL, tmp_path):
    # The ledger opens a WAL trusting what its node store's checkpoint vouches for: only the
    # bytes after the trusted offset are read, so a flipped byte before it goes unseen here
    # (`gatewaylab audit verify` replays everything), while the tail is recovered as ever.
    path = tmp_path / "t.wal"
    write(WAL, path, PAYLOADS, fsync="none")
    ends = [8]
    for p in PAYLOADS:
        ends.append(ends[-1] + 8 + len(p))
    data = bytearray(path.read_bytes())
    data[8 + 8] ^= 0x01  # record 0's payload: before the trusted offset
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError, match="offset 8"):
        WAL.replay(str(path))
    data += frame(b"torn")[:-1]  # a torn tail after it
    path.write_bytes(bytes(data))
    assert WAL.replay(str(path), offset=ends[3]) == PAYLOADS[3:]
    with WAL(str(path), fsync="none", trusted=(3, ends[3])) as w:
        assert w.count == 6 and w.recovery == {"records": 6, "truncated_bytes": len(frame(b"torn")) - 1}
        w.append(b"next")
    assert path.read_bytes() == bytes(data[: ends[6]]) + frame(b"next")


def test_trusted_prefix_bad_arguments(WAL, tmp_path):
    path = tmp_path / "t.wal"
    write(WAL, path, PAYLOADS[:2], fsync="none")
    size = path.stat().st_size
    for bad in ((1, 4), (0, 20), (1, 8), [1, 20], (1,), (True, 20), (-1, 20), "x"):
        with pytest.raises(InvalidInput, match="trusted"):
            WAL(str(path), fsync="none", trusted=bad)
    with pytest.raises(WalCorruptError, match=f"ends at offset {size}"):
        WAL(str(path), fsync="none", trusted=(3, size + 10))
    for bad in (3, -1, True, "8"):
        with pytest.raises(InvalidInput, match="offset"):
            WAL.replay(str(path), offset=bad)
    assert WAL.replay(str(path), offset=size + 100) == []
    assert path.stat().st_size == size
