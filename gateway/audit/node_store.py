"""The MMR node store v1 -- the file beside the WAL (`audit.mmr`) that holds every MMR node
hash, so the process keeps only the peaks and a bounded cache (docs/node_store.md is the
one description of the format; the Rust twin is `native/core/src/node_store.rs`).

    offset 0    8 bytes   magic b"GLMMR\\x00\\x01\\n"
    offset 8    56 bytes  zero (reserved)
    offset 64   64 bytes  checkpoint slot 0
    offset 128  64 bytes  checkpoint slot 1
    offset 192  32 bytes per node, in MMR position order (post-order: a leaf, then each
                parent it completes), so node (height h, index j) sits at position
                nodes_for(L) + h with L = (j + 1) * 2**h - 1, and n leaves own exactly
                nodes_for(n) = 2n - popcount(n) nodes.

A checkpoint slot is `<QQQI32sI`: seq, leaf_count, wal_end (the WAL byte offset just
past record leaf_count - 1), last_frame_len (that record's payload length), root (raw
32 bytes), CRC-32 (zlib) of the first 60 bytes. A slot is valid iff its CRC matches and
seq >= 1; the valid slot with the highest seq is the newest. Checkpoints alternate slots
(slot seq % 2), each written only after the nodes it covers and the WAL up to wal_end are
durable, so a torn slot write leaves the other slot intact.

The store is derived data: the WAL is the source of truth. What to do with a store that
is short, torn, ahead of the WAL or corrupt is the ledger's business (gateway/audit/ledger.py).
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib

from gateway.errors import InvalidInput, StoreCorruptError, WalLockedError

MAGIC = b"GLMMR\x00\x01\n"
HEADER_LEN = 192
SLOT_OFFSETS = (64, 128)
SLOT = struct.Struct("<QQQI32sI")
NODE = 32
#: Nodes an open store keeps unwritten before writing them out in one pwrite.
WRITE_BATCH = 4096
#: Entries of the direct-mapped read cache (node hashes read back from the file).
CACHE_SLOTS = 4096


def nodes_for(leaves: int) -> int:
    """Number of MMR nodes (leaves and parents) of an MMR with `leaves` leaves."""
    return 2 * leaves - leaves.bit_count()


def node_pos(height: int, index: int) -> int:
    """Position of node `index` at `height` (leaf `i` is node (0, i))."""
    last = ((index + 1) << height) - 1
    return nodes_for(last) + height


def leaves_for(nodes: int) -> int:
    """Largest leaf count whose MMR has at most `nodes` nodes (the last complete leaf)."""
    lo, hi = 0, nodes
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if nodes_for(mid) <= nodes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def encode_slot(seq: int, leaf_count: int, wal_end: int, last_frame_len: int, root: bytes) -> bytes:
    body = SLOT.pack(seq, leaf_count, wal_end, last_frame_len, root, 0)[:60]
    return body + struct.pack("<I", zlib.crc32(body))


def decode_slot(raw: bytes) -> dict | None:
    """The checkpoint in a 64-byte slot, or None when the slot is empty or torn."""
    if len(raw) != SLOT.size or zlib.crc32(raw[:60]) != struct.unpack_from("<I", raw, 60)[0]:
        return None
    seq, count, wal_end, last_len, root, _ = SLOT.unpack(raw)
    if seq < 1:
        return None
    return {
        "seq": seq,
        "leaf_count": count,
        "wal_end": wal_end,
        "last_frame_len": last_len,
        "root": root.hex(),
    }


def empty_header() -> bytes:
    return MAGIC + bytes(HEADER_LEN - len(MAGIC))


class NodeStoreFile:
    """One open node store: the exclusive lock, the header and slots, node reads and
    writes by position. Pure file plumbing; the MMR decides what goes in it."""

    def __init__(self, path):
        try:
            self.path = os.fspath(path)
        except TypeError:
            raise InvalidInput(f"path must be str or os.PathLike, not {type(path).__name__}") from None
        if not isinstance(self.path, str):
            raise InvalidInput(f"path must be a str path, not {type(self.path).__name__}")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise WalLockedError(f"node store {self.path} is locked by another writer") from None
        try:
            size = os.fstat(self._fd).st_size
            if size == 0:
                os.pwrite(self._fd, empty_header(), 0)
                size = HEADER_LEN
            head = os.pread(self._fd, HEADER_LEN, 0)
            if len(head) < HEADER_LEN or head[:8] != MAGIC or any(head[8:64]):
                raise StoreCorruptError(f"node store {self.path}: bad header (not a node store v1 file)")
            self.checkpoints = sorted(
                (c for c in (decode_slot(head[o : o + SLOT.size]) for o in SLOT_OFFSETS) if c is not None),
                key=lambda c: -c["seq"],
            )
            self.torn_bytes = (size - HEADER_LEN) % NODE
            self.nodes = (size - HEADER_LEN) // NODE
        except BaseException:
            os.close(self._fd)
            raise

    def read(self, pos: int) -> bytes:
        b = os.pread(self._fd, NODE, HEADER_LEN + NODE * pos)
        if len(b) != NODE:
            raise StoreCorruptError(f"node store {self.path}: node {pos} is beyond the end of the file")
        return b

    def write(self, pos: int, data: bytes) -> None:
        mv, off, at = memoryview(data), 0, HEADER_LEN + NODE * pos
        while off < len(data):
            off += os.pwrite(self._fd, mv[off:], at + off)
        self.nodes = max(self.nodes, pos + len(data) // NODE)

    def truncate(self, nodes: int) -> None:
        os.ftruncate(self._fd, HEADER_LEN + NODE * nodes)
        self.nodes = nodes
        self.torn_bytes = 0

    def write_slot(self, seq: int, slot: bytes) -> None:
        os.pwrite(self._fd, slot, SLOT_OFFSETS[seq % 2])

    def sync(self) -> None:
        os.fsync(self._fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
