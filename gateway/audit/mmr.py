"""Merkle Mountain Range v2 over SHA-256 -- the Python twin (the baseline of the
published MMR table, docs/claims.md `mmr-3x`; the Rust twin is `gateway._native.MerkleMountainRange`).

Scheme (docs/formats.md): leaf = H(0x00||payload), node = H(0x01||left||right),
root = H(0x02||peak_0||...||peak_k), peaks left (tallest) to right; empty root = 64 zeros.

Storage: every node (a leaf, then each parent it completes) in MMR position order, as raw
32-byte digests -- in a list, or in the node store file beside the WAL with only the peaks
and a bounded cache in memory (gateway/audit/node_store.py). Node k at height h covers
leaves [k*2^h, (k+1)*2^h) and sits at `node_pos(h, k)`, so proofs are index arithmetic, no
tree walks. A leaf count n has one peak per set bit of n, kept in memory as a stack.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from hashlib import sha256
from typing import Any

from gateway.audit.hashing import BYTES_LIKE
from gateway.audit.node_store import (
    CACHE_SLOTS,
    WRITE_BATCH,
    NodeStoreFile,
    encode_slot,
    leaves_for,
    node_pos,
    nodes_for,
)
from gateway.errors import AuditIndexError, InvalidInput, ProofError, StoreCorruptError

EMPTY_ROOT = "0" * 64
_HEX = frozenset("0123456789abcdef")


def _leaf(payload: bytes) -> bytes:
    return sha256(b"\x00" + payload).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def _bag(peaks: Iterable[bytes]) -> bytes:
    return sha256(b"\x02" + b"".join(peaks)).digest()


def _root_hex(peaks: list[bytes]) -> str:
    return _bag(peaks).hex() if peaks else EMPTY_ROOT


def _peak_layout(count: int) -> list[tuple[int, int]]:
    """(height, first leaf) of each peak of an MMR with `count` leaves, left to right."""
    out, offset = [], 0
    for h in range(count.bit_length() - 1, -1, -1):
        if count >> h & 1:
            out.append((h, offset))
            offset += 1 << h
    return out


def _payload_bytes(p: Any, i: int | None = None) -> bytes:
    if isinstance(p, bytes):
        return p
    if isinstance(p, (bytearray, memoryview)):
        return bytes(p)
    where = "payload" if i is None else f"payload {i}"
    raise InvalidInput(f"{where} must be bytes, not {type(p).__name__}")


def _check_index(index: Any, count: int, what: str = "leaf index") -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise InvalidInput(f"{what} must be int, not {type(index).__name__}")
    if not 0 <= index < count:
        raise AuditIndexError(f"{what} {index} out of range for an MMR of {count} leaves")
    return index


class MerkleMountainRange:
    """Append-only MMR with inclusion and consistency proofs (see module docstring).

    `MerkleMountainRange()` keeps every node in memory (tests, benchmarks, one-shot
    verification). `MerkleMountainRange(store=PATH)` keeps them in a node store file
    (gateway/audit/node_store.py): in memory only the peaks, up to WRITE_BATCH unwritten
    nodes and a CACHE_SLOTS-entry read cache, so memory does not grow with the length.
    Opening a store takes its lock, drops a torn partial node group at its end, and loads
    the peaks of the leaves it holds; reconciling it with a WAL is the ledger's job.
    """

    __slots__ = ("_pending", "_base", "_stack", "_count", "_file", "_flush_at", "_cache_pos", "_cache_val")

    def __init__(self, store=None) -> None:
        self._pending: list[bytes] = []  # nodes from position _base on, not yet in the file
        self._base = 0
        self._stack: list[bytes] = []  # the peaks, left (tallest) to right
        self._count = 0
        self._file: NodeStoreFile | None = None
        self._flush_at = sys.maxsize
        self._cache_pos: list[int] = []
        self._cache_val: list[bytes] = []
        if store is not None:
            f = NodeStoreFile(store)
            self._file = f
            self._flush_at = WRITE_BATCH
            self._cache_pos = [-1] * CACHE_SLOTS
            self._cache_val = [b""] * CACHE_SLOTS
            self._count = leaves_for(f.nodes)
            self._base = nodes_for(self._count)
            if f.nodes != self._base or f.torn_bytes:
                f.truncate(self._base)  # a torn last leaf group: the WAL has what it held
            self._stack = [self._node(h, off >> h) for h, off in _peak_layout(self._count)]

    # -- the node store -----------------------------------------------------------------
    def _get(self, pos: int) -> bytes:
        if pos >= self._base:
            return self._pending[pos - self._base]
        slot = pos % CACHE_SLOTS
        if self._cache_pos[slot] == pos:
            return self._cache_val[slot]
        h = self._file.read(pos)  # type: ignore[union-attr]
        self._cache_pos[slot] = pos
        self._cache_val[slot] = h
        return h

    def _node(self, height: int, index: int) -> bytes:
        return self._get(node_pos(height, index))

    def _write_pending(self) -> None:
        if self._pending:
            self._file.write(self._base, b"".join(self._pending))  # type: ignore[union-attr]
            self._base += len(self._pending)
            self._pending = []

    @property
    def store_path(self) -> str | None:
        return None if self._file is None else self._file.path

    @property
    def resident_hashes(self) -> int:
        """Node hashes this object holds in memory: peaks + unwritten nodes + cache entries
        (every node, for the in-memory form)."""
        cached = sum(1 for p in self._cache_pos if p >= 0)
        return len(self._stack) + len(self._pending) + cached

    def checkpoints(self) -> list[dict]:
        """The store's valid checkpoints, newest first ([] in memory)."""
        return [] if self._file is None else [dict(c) for c in self._file.checkpoints]

    def truncate(self, count: int) -> None:
        """Drop every leaf from `count` on (and the nodes they completed)."""
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidInput(f"count must be int, not {type(count).__name__}")
        if not 0 <= count <= self._count:
            raise AuditIndexError(f"count {count} out of range 0..{self._count}")
        keep = nodes_for(count)
        if keep >= self._base:
            del self._pending[keep - self._base :]
        else:
            self._pending = []
            self._file.truncate(keep)  # type: ignore[union-attr]
            self._base = keep
            self._cache_pos = [p if p < keep else -1 for p in self._cache_pos]
        self._count = count
        self._stack = [self._node(h, off >> h) for h, off in _peak_layout(count)]

    def flush(self, sync: bool = True) -> None:
        """Write unwritten nodes to the store (and fsync it when `sync`). No-op in memory."""
        if self._file is not None:
            self._write_pending()
            if sync:
                self._file.sync()

    def checkpoint(self, wal_end: int, last_frame_len: int, sync: bool = True) -> dict:
        """Record in the store that its first `leaf_count` leaves are the WAL's records up to
        byte `wal_end` (the last of which has a payload of `last_frame_len` bytes). The
        caller makes the WAL durable to `wal_end` first; the nodes are made durable here,
        before the slot is written. Returns the checkpoint."""
        if self._file is None:
            raise InvalidInput("an in-memory MerkleMountainRange has no store to checkpoint")
        for name, v in (("wal_end", wal_end), ("last_frame_len", last_frame_len)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
                raise InvalidInput(f"{name} must be a non-negative int, got {v!r}")
        self.flush(sync)
        f = self._file
        seq = (f.checkpoints[0]["seq"] if f.checkpoints else 0) + 1
        root = _bag(self._stack) if self._stack else bytes(32)
        f.write_slot(seq, encode_slot(seq, self._count, wal_end, last_frame_len, root))
        if sync:
            f.sync()
        cp = {
            "seq": seq,
            "leaf_count": self._count,
            "wal_end": wal_end,
            "last_frame_len": last_frame_len,
            "root": root.hex(),
        }
        f.checkpoints = [cp] + [c for c in f.checkpoints if c["seq"] == seq - 1]
        return dict(cp)

    def close(self) -> None:
        """Write unwritten nodes (no fsync) and release the store. Idempotent; no-op in memory."""
        if self._file is not None and not self._file.closed:
            self._write_pending()
            self._file.close()

    # -- appending ------------------------------------------------------------------
    def _push_leaf(self, leaf: bytes) -> None:
        i = self._count
        pend, stack, cur = self._pending, self._stack, leaf
        pend.append(leaf)
        # Each trailing 1-bit of the leaf's index closes one more aligned subtree.
        while i & 1:
            cur = sha256(b"\x01" + stack.pop() + cur).digest()
            pend.append(cur)
            i >>= 1
        stack.append(cur)
        self._count += 1
        if len(pend) >= self._flush_at:
            self._write_pending()

    def append(self, payload: bytes) -> int:
        """Append one payload; returns its leaf index."""
        self._push_leaf(_leaf(_payload_bytes(payload)))
        return self._count - 1

    def append_many(self, payloads) -> int:
        """Append payloads in order (all-or-nothing on bad input); returns the new leaf count."""
        if isinstance(payloads, BYTES_LIKE) or isinstance(payloads, str):
            raise InvalidInput("append_many takes a sequence of bytes payloads, not a single value")
        try:
            items = list(payloads)
        except TypeError:
            raise InvalidInput(
                f"append_many takes a sequence of bytes, not {type(payloads).__name__}"
            ) from None
        items = [_payload_bytes(p, i) for i, p in enumerate(items)]
        push = self._push_leaf
        for p in items:
            push(sha256(b"\x00" + p).digest())
        return self._count

    # -- reading --------------------------------------------------------------------
    @property
    def leaf_count(self) -> int:
        return self._count

    def __len__(self) -> int:
        return self._count

    def peaks(self) -> list[str]:
        return [p.hex() for p in self._stack]

    def root(self) -> str:
        return _root_hex(self._stack)

    def leaf_hash(self, index: int) -> str:
        return self._node(0, _check_index(index, self._count)).hex()

    def __repr__(self) -> str:
        return f"<MerkleMountainRange leaves={self._count} root={self.root()[:12]}…>"

    # -- proofs ---------------------------------------------------------------------
    def _lift_checked(
        self, node: bytes, first_leaf: int, height: int, path: list[bytes], peak: bytes
    ) -> None:
        """A path read back from the store must hash up to the peak held in memory: a store
        that fails this is corrupt and never serves a proof."""
        if self._file is None:
            return
        for k, sib in enumerate(path, start=height):
            node = _node(sib, node) if first_leaf >> k & 1 else _node(node, sib)
        if node != peak:
            raise StoreCorruptError(
                f"node store {self._file.path}: the path of leaf {first_leaf} at height {height} does not reach "
                "its peak; the store is corrupt (reopen the ledger to rebuild it from the WAL)"
            )

    def inclusion_proof(self, index: int) -> dict:
        i = _check_index(index, self._count)
        layout = _peak_layout(self._count)
        for pos, (h, offset) in enumerate(layout):  # noqa: B007 (pos and h are read after the loop)
            if i < offset + (1 << h):
                break
        leaf = self._node(0, i)
        siblings = [self._node(k, (i >> k) ^ 1) for k in range(h)]
        self._lift_checked(leaf, i, 0, siblings, self._stack[pos])
        return {
            "leaf_index": i,
            "leaf_count": self._count,
            "leaf_hash": leaf.hex(),
            "siblings": [s.hex() for s in siblings],
            "peaks": [p.hex() for p in self._stack],
            "root": _root_hex(self._stack),
        }

    def consistency_proof(self, old_count: int) -> dict:
        if isinstance(old_count, bool) or not isinstance(old_count, int):
            raise InvalidInput(f"old count must be int, not {type(old_count).__name__}")
        if not 0 <= old_count <= self._count:
            raise AuditIndexError(f"old count {old_count} out of range for an MMR of {self._count} leaves")
        old_layout = _peak_layout(old_count)
        new_layout = _peak_layout(self._count)
        old_peaks = [self._node(h, off >> h) for h, off in old_layout]
        new_peaks = self._stack
        paths = []
        for (h, off), old_peak in zip(old_layout, old_peaks):
            top, (H, _) = next((t, (H, O)) for t, (H, O) in enumerate(new_layout) if O <= off < O + (1 << H))
            path = [self._node(k, (off >> k) ^ 1) for k in range(h, H)]
            self._lift_checked(old_peak, off, h, path, new_peaks[top])
            paths.append([s.hex() for s in path])
        return {
            "old_count": old_count,
            "new_count": self._count,
            "old_peaks": [p.hex() for p in old_peaks],
            "new_peaks": [p.hex() for p in new_peaks],
            "paths": paths,
            "old_root": _root_hex(old_peaks),
            "new_root": _root_hex(new_peaks),
        }

    # -- verification (needs nothing but the proof) ---------------------------------
    @staticmethod
    def verify_inclusion(proof, payload: bytes | None = None) -> bool:
        """True iff leaf_hash + siblings reach its peak and the peaks hash to root (and, given
        `payload`, leaf_hash == H(00||payload)). Tampered -> False; malformed -> ProofError."""
        p = _parse(proof)
        i = _count_field(p, "leaf_index")
        n = _count_field(p, "leaf_count")
        if i >= n:
            raise ProofError(f"proof: leaf_index {i} not below leaf_count {n}")
        leaf = _hash_field(p, "leaf_hash")
        siblings = _hash_list(p, "siblings")
        peaks = _hash_list(p, "peaks")
        root = _hash_field(p, "root")
        layout = _peak_layout(n)
        if len(peaks) != len(layout):
            raise ProofError(f"proof: {len(peaks)} peaks, but {n} leaves have {len(layout)}")
        pos = next(j for j, (h, off) in enumerate(layout) if i < off + (1 << h))
        h, off = layout[pos]
        if len(siblings) != h:
            raise ProofError(f"proof: {len(siblings)} siblings, but leaf {i} of {n} needs {h}")
        if payload is not None and _leaf(_payload_bytes(payload)) != leaf:
            return False
        acc, local = leaf, i - off
        for k, sib in enumerate(siblings):
            acc = _node(sib, acc) if local >> k & 1 else _node(acc, sib)
        return acc == peaks[pos] and _bag(peaks) == root

    @staticmethod
    def verify_consistency(proof) -> bool:
        """True iff old_peaks hash to old_root, new_peaks to new_root, and each old peak lifted
        by its path equals the new peak containing it. Where a path step needs a left sibling,
        that sibling is necessarily an old peak (the one of that height), and it must equal
        it -- otherwise the new tree would not extend the old one. Tampered -> False;
        malformed -> ProofError."""
        p = _parse(proof)
        m = _count_field(p, "old_count")
        n = _count_field(p, "new_count")
        if m > n:
            raise ProofError(f"proof: old_count {m} exceeds new_count {n}")
        old_peaks = _hash_list(p, "old_peaks")
        new_peaks = _hash_list(p, "new_peaks")
        old_root = _hash_field(p, "old_root")
        new_root = _hash_field(p, "new_root")
        paths = p.get("paths")
        if not isinstance(paths, list):
            raise ProofError("proof: 'paths' must be a list of lists of hashes")
        old_layout, new_layout = _peak_layout(m), _peak_layout(n)
        if len(old_peaks) != len(old_layout) or len(new_peaks) != len(new_layout):
            raise ProofError(f"proof: peak counts do not match old_count {m} / new_count {n}")
        if len(paths) != len(old_layout):
            raise ProofError(f"proof: {len(paths)} paths for {len(old_layout)} old peaks")
        parsed_paths = [_hash_seq(path, f"paths[{j}]") for j, path in enumerate(paths)]
        ok = _root_or_empty(old_peaks) == old_root and _root_or_empty(new_peaks) == new_root
        old_by_height = {h: old_peaks[j] for j, (h, _) in enumerate(old_layout)}
        for j, (h, off) in enumerate(old_layout):
            top = next(t for t, (H, O) in enumerate(new_layout) if O <= off < O + (1 << H))
            H = new_layout[top][0]
            path = parsed_paths[j]
            if len(path) != H - h:
                raise ProofError(f"proof: paths[{j}] has {len(path)} hashes, needs {H - h}")
            acc = old_peaks[j]
            for k, sib in zip(range(h, H), path):
                if off >> k & 1:
                    ok = ok and sib == old_by_height.get(k)
                    acc = _node(sib, acc)
                else:
                    acc = _node(acc, sib)
            ok = ok and acc == new_peaks[top]
        return ok


def _root_or_empty(peaks: list[bytes]) -> bytes:
    return _bag(peaks) if peaks else bytes(32)


def _parse(proof) -> Mapping:
    if isinstance(proof, (str, bytes, bytearray)):
        try:
            proof = json.loads(proof)
        except (ValueError, UnicodeDecodeError) as e:
            raise ProofError(f"proof is not valid JSON: {e}") from None
    if not isinstance(proof, Mapping):
        raise ProofError(f"proof must be a JSON object, not {type(proof).__name__}")
    return proof


def _count_field(p: Mapping, key: str) -> int:
    if key not in p:
        raise ProofError(f"proof: missing {key!r}")
    v = p[key]
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**64:
        raise ProofError(f"proof: {key!r} must be a non-negative integer, got {v!r}")
    return v


def _hex32(v, where: str) -> bytes:
    if not isinstance(v, str) or len(v) != 64 or not _HEX.issuperset(v):
        raise ProofError(f"proof: {where} must be 64 lowercase hex characters, got {v!r}")
    return bytes.fromhex(v)


def _hash_field(p: Mapping, key: str) -> bytes:
    if key not in p:
        raise ProofError(f"proof: missing {key!r}")
    return _hex32(p[key], repr(key))


def _hash_seq(v, where: str) -> list[bytes]:
    if not isinstance(v, list):
        raise ProofError(f"proof: {where} must be a list of hashes")
    return [_hex32(x, f"{where}[{k}]") for k, x in enumerate(v)]


def _hash_list(p: Mapping, key: str) -> list[bytes]:
    if key not in p:
        raise ProofError(f"proof: missing {key!r}")
    return _hash_seq(p[key], repr(key))
