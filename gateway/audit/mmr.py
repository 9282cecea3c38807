"""Merkle Mountain Range v2 over SHA-256 -- the Python twin (the baseline the seed
compares against; the Rust twin is `gateway._native.MerkleMountainRange`).

Scheme (docs/formats.md): leaf = H(0x00||payload), node = H(0x01||left||right),
root = H(0x02||peak_0||...||peak_k), peaks left (tallest) to right; empty root = 64 zeros.

Storage: `_levels[h]` holds every complete, aligned subtree of height h in order
(`_levels[0]` are the leaf hashes), as raw 32-byte digests. A leaf count n has one peak per
set bit of n; the peak of height h is `_levels[h][-1]` when bit h is set. Node k at height
h covers leaves [k*2^h, (k+1)*2^h), so proofs are index arithmetic, no tree walks.
"""
from __future__ import annotations

import json
from hashlib import sha256
from typing import Any, Iterable, Mapping

from gateway.audit.hashing import BYTES_LIKE
from gateway.errors import AuditIndexError, InvalidInput, ProofError

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
        raise AuditIndexError(f"{what} {index} out of range for {count} leaves")
    return index


class MerkleMountainRange:
    """Append-only MMR with inclusion and consistency proofs (see module docstring)."""

    __slots__ = ("_levels", "_count")

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]
        self._count = 0

    # -- appending ------------------------------------------------------------------
    def _push_leaf(self, leaf: bytes) -> None:
        levels = self._levels
        levels[0].append(leaf)
        self._count += 1
        n, h = self._count, 0
        # Each trailing 1-bit of the new count closes one more aligned subtree.
        while n & 1 == 0:
            below = levels[h]
            if h + 1 == len(levels):
                levels.append([])
            levels[h + 1].append(_node(below[-2], below[-1]))
            n >>= 1
            h += 1

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
            raise InvalidInput(f"append_many takes a sequence of bytes, not {type(payloads).__name__}") from None
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

    def _peaks(self) -> list[bytes]:
        return [self._levels[h][-1] for h, _ in _peak_layout(self._count)]

    def peaks(self) -> list[str]:
        return [p.hex() for p in self._peaks()]

    def root(self) -> str:
        return _root_hex(self._peaks())

    def leaf_hash(self, index: int) -> str:
        return self._levels[0][_check_index(index, self._count)].hex()

    def __repr__(self) -> str:
        return f"<MerkleMountainRange leaves={self._count} root={self.root()[:12]}…>"

    # -- proofs ---------------------------------------------------------------------
    def inclusion_proof(self, index: int) -> dict:
        i = _check_index(index, self._count)
        peaks = self._peaks()
        for h, offset in _peak_layout(self._count):
            if i < offset + (1 << h):
                break
        siblings = [self._levels[k][(i >> k) ^ 1].hex() for k in range(h)]
        return {
            "leaf_index": i,
            "leaf_count": self._count,
            "leaf_hash": self._levels[0][i].hex(),
            "siblings": siblings,
            "peaks": [p.hex() for p in peaks],
            "root": _root_hex(peaks),
        }

    def consistency_proof(self, old_count: int) -> dict:
        if isinstance(old_count, bool) or not isinstance(old_count, int):
            raise InvalidInput(f"old count must be int, not {type(old_count).__name__}")
        if not 0 <= old_count <= self._count:
            raise AuditIndexError(f"old count {old_count} out of range 0..{self._count}")
        old_layout = _peak_layout(old_count)
        new_layout = _peak_layout(self._count)
        old_peaks = [self._levels[h][off >> h] for h, off in old_layout]
        new_peaks = self._peaks()
        paths = []
        for h, off in old_layout:
            top = next(H for H, O in new_layout if O <= off < O + (1 << H))
            paths.append([self._levels[k][(off >> k) ^ 1].hex() for k in range(h, top)])
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
