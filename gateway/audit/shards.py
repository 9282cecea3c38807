"""Ledger layouts under N gateway workers, in one place (docs/workers.md).

    LAYOUTS = ("single", "sharded", "single-writer")
    resolve_layout(requested, workers) -> the layout a gateway of `workers` processes uses
    shard_dir(ledger_dir, k)           -> "<ledger_dir>/shard-<k>" (an ordinary ledger directory)
    combined_root(shards)              -> the root over every shard's (count, root)
    verify_sharded_proof(proof)        -> a shard's inclusion proof checked up to the combined root

`single`: one WAL + MMR in the ledger directory, written by the one gateway process.
`sharded`: worker k writes its own ordinary ledger (audit.wal + audit.mmr, the formats of
docs/formats.md) in `shard-k/`; nothing in a shard differs from a single ledger, so both
twins write identical shard files and every existing tool reads a shard. `single-writer`:
one ledger in the ledger directory (the `single` files), written by one ledger process to
which every worker hands its records over a Unix socket (gateway/audit/writer_process.py,
docs/single_writer.md; py and py+rs). Unset, a gateway of one worker is `single` and of
N > 1 workers `sharded`.

Combined root (format "shards v1"): with shards 0..N-1 at leaf counts c_k and MMR roots r_k,

    combined = SHA-256(0x03 || u32be(N) || u64be(c_0) || r_0 || ... || u64be(c_{N-1}) || r_{N-1})

as lowercase hex, r_k as its 32 raw bytes. 0x03 continues the MMR's domain separation
(0x00 leaf, 0x01 node, 0x02 root), so a combined root is never a shard's root or node; the
counts pin every shard's length, so two different sets of shard states never share a
combined root short of a SHA-256 collision. Shards appear in index order, empty shards
included (count 0, root 64 zeros).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Mapping, Sequence

from gateway.errors import ConfigError, InvalidInput
from gateway.ladder import LAYOUTS

SHARD_PREFIX = "shard-"
FORMAT = "shards v1"
_SHARD_RE = re.compile(r"shard-(\d+)")


def resolve_layout(requested: str | None, workers: int) -> str:
    """The layout for a gateway of `workers` processes (`requested` None: by the worker count)."""
    if requested is None:
        return "single" if workers <= 1 else "sharded"
    if requested not in LAYOUTS:
        raise ConfigError(f"ledger.layout: expected one of {', '.join(LAYOUTS)}, got {requested!r}")
    if requested == "single" and workers > 1:
        raise ConfigError(
            f"ledger.layout: single has one writer and cannot take {workers} workers; "
            "use sharded (one ledger per worker) or single-writer (one ledger process)"
        )
    return requested


def shard_dir(ledger_dir: str, k: int) -> str:
    return os.path.join(ledger_dir, f"{SHARD_PREFIX}{k}")


def shard_dirs(ledger_dir: str) -> list[str]:
    """The `shard-K` directories of a sharded ledger, in shard order; [] if it is not sharded.
    A gap in the numbering is an error (a shard was lost or misplaced)."""
    try:
        names = os.listdir(ledger_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = sorted(
        int(m.group(1))
        for n in names
        if (m := _SHARD_RE.fullmatch(n)) and os.path.isdir(os.path.join(ledger_dir, n))
    )
    if found and found != list(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise ConfigError(f"{ledger_dir}: sharded ledger lacks shard(s) {', '.join(map(str, missing))}")
    return [shard_dir(ledger_dir, k) for k in found]


def combined_root(shards: Sequence[Mapping]) -> str:
    """The combined root over `shards` ([{"count", "root"}, ...] in shard order)."""
    h = hashlib.sha256(b"\x03" + struct.pack(">I", len(shards)))
    for s in shards:
        root = bytes.fromhex(s["root"])
        if len(root) != 32:
            raise ValueError(f"a shard root is 32 bytes, got {len(root)}")
        h.update(struct.pack(">Q", int(s["count"])) + root)
    return h.hexdigest()


def root_document(shards: Sequence[Mapping]) -> dict:
    """`/audit/root` of a sharded ledger: the shards, the combined root, and totals."""
    rows = [
        {
            "shard": k,
            "count": int(s["count"]),
            "root": s["root"],
            "durable_count": int(s.get("durable_count", 0)),
        }
        for k, s in enumerate(shards)
    ]
    return {
        "layout": "sharded",
        "format": FORMAT,
        "shards": rows,
        "root": combined_root(rows),
        "count": sum(r["count"] for r in rows),
        "durable_count": sum(r["durable_count"] for r in rows),
    }


def sharded_proof(shard: int, proof: Mapping, shards: Sequence[Mapping], kind: str = "inclusion") -> dict:
    """A shard's proof, the shard states it sits among and the combined root over them.
    `shards[shard]` must be the state the proof was made at (its count and root)."""
    rows = [{"shard": k, "count": int(s["count"]), "root": s["root"]} for k, s in enumerate(shards)]
    return {
        "layout": "sharded",
        "format": FORMAT,
        "kind": kind,
        "shard": shard,
        "proof": dict(proof),
        "shards": rows,
        "combined_root": combined_root(rows),
    }


def verify_sharded_proof(doc: Mapping, payload: bytes | None = None, mmr_cls=None) -> bool:
    """True when `doc` (sharded_proof) holds: its shard proof verifies (against `payload`, if
    given), it ends at the root and count its shard row names, and the rows hash to the
    combined root. `mmr_cls`: the MMR twin whose verifier is used (default: Python's)."""
    if mmr_cls is None:
        from gateway.audit.mmr import MerkleMountainRange as mmr_cls
    try:
        k = int(doc["shard"])
        rows = doc["shards"]
        proof = doc["proof"]
        if not 0 <= k < len(rows) or any(int(r["shard"]) != i for i, r in enumerate(rows)):
            return False
        if combined_root(rows) != doc["combined_root"]:
            return False
        if doc.get("kind", "inclusion") == "inclusion":
            if proof["root"] != rows[k]["root"] or int(proof["leaf_count"]) != int(rows[k]["count"]):
                return False
            return bool(mmr_cls.verify_inclusion(dict(proof), payload))
        if proof["new_root"] != rows[k]["root"] or int(proof["new_count"]) != int(rows[k]["count"]):
            return False
        return bool(mmr_cls.verify_consistency(dict(proof)))
    except (KeyError, TypeError, ValueError, InvalidInput):
        return False


def iter_layout(ledger_dir: str) -> tuple[str, list[str]]:
    """("sharded", shard dirs) or ("single", [ledger_dir]) for a ledger directory on disk."""
    dirs = shard_dirs(ledger_dir)
    return ("sharded", dirs) if dirs else ("single", [ledger_dir])


def shard_of(path: str) -> int | None:
    m = _SHARD_RE.fullmatch(os.path.basename(os.path.normpath(path)))
    return int(m.group(1)) if m else None


__all__ = (
    "LAYOUTS",
    "resolve_layout",
    "shard_dir",
    "shard_dirs",
    "combined_root",
    "root_document",
    "sharded_proof",
    "verify_sharded_proof",
    "iter_layout",
)
