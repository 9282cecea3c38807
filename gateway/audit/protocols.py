"""The interfaces of the audit core. Each has a Python twin (`gateway.audit.*`) and a Rust
twin (`gateway._native.*`) that return byte-identical results. Formats: docs/formats.md
(the one source of truth); test vectors: tests/vectors/mmr_v2.json.

Errors (both twins raise the same classes from `gateway.errors`):
  InvalidInput     non-bytes payload, wrong argument types/values
  AuditIndexError  leaf index / old count out of range
  ProofError       malformed proof (missing keys, bad hex, wrong lengths, inconsistent counts)
  WalCorruptError  bad frame followed by valid frames; message says "offset N"
  WalLockedError   second writer on the same WAL (or node store)
  StoreCorruptError  a node store with a bad header, or a node that contradicts its peak
  NativePanic      a Rust panic (Rust twin only)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

ProofJSON = Mapping[str, Any]


@runtime_checkable
class MerkleMountainRange(Protocol):
    """MMR v2 over SHA-256: leaf = H(00||payload), node = H(01||l||r),
    root = H(02||peaks left-to-right), empty root = 64 hex zeros.

    `MerkleMountainRange()` keeps every node in memory (tests, benchmarks, one-shot
    verification); `MerkleMountainRange(store=PATH)` keeps them in the node store at PATH
    (docs/node_store.md; created if missing; exclusive lock -> WalLockedError; a bad header
    -> StoreCorruptError; a torn partial leaf group at its end is dropped), holding in
    memory only the peaks, up to WRITE_BATCH unwritten nodes and a CACHE_SLOTS read cache.
    A proof whose path read back from the store does not reach its in-memory peak raises
    StoreCorruptError instead of being served.
    """

    @property
    def store_path(self) -> str | None: ...

    @property
    def resident_hashes(self) -> int:
        """Node hashes held in memory (peaks + unwritten nodes + cache; every node in memory)."""

    def checkpoints(self) -> list[dict]:
        """Valid checkpoints of the store, newest first: {"seq","leaf_count","wal_end",
        "last_frame_len","root"} ([] in memory)."""

    def truncate(self, count: int) -> None:
        """Drop every leaf from `count` on. Non-int -> InvalidInput; > leaf_count -> AuditIndexError."""

    def flush(self, sync: bool = True) -> None:
        """Write unwritten nodes to the store (fsync when `sync`); no-op in memory."""

    def checkpoint(self, wal_end: int, last_frame_len: int, sync: bool = True) -> dict:
        """Flush (and fsync when `sync`) the nodes, then write the next checkpoint slot:
        the first leaf_count leaves are the WAL's records up to byte `wal_end`. In memory
        -> InvalidInput."""

    def close(self) -> None:
        """Write unwritten nodes and release the store (no fsync). Idempotent."""

    def append(self, payload: bytes) -> int:
        """Append one payload (bytes-like only); returns its leaf index."""

    def append_many(self, payloads: Sequence[bytes]) -> int:
        """Append many payloads in order; returns the new leaf count. The Rust twin hashes
        with the GIL released. All-or-nothing on bad input (nothing appended)."""

    @property
    def leaf_count(self) -> int: ...

    def __len__(self) -> int: ...

    def root(self) -> str:
        """Lowercase hex root."""

    def peaks(self) -> list[str]:
        """Peak hashes, left (tallest) to right."""

    def leaf_hash(self, index: int) -> str: ...

    def inclusion_proof(self, index: int) -> dict:
        """{"leaf_index","leaf_count","leaf_hash","siblings"(bottom-up),"peaks","root"}."""

    def consistency_proof(self, old_count: int) -> dict:
        """{"old_count","new_count","old_peaks","new_peaks","paths","old_root","new_root"}
        where paths[j] lifts old peak j to the new peak containing it. 0 <= old_count <= leaf_count."""

    @staticmethod
    def verify_inclusion(proof: ProofJSON | str, payload: bytes | None = None) -> bool:
        """True iff the proof is internally consistent (leaf_hash + siblings reach its peak,
        peaks hash to root) and, when `payload` is given, leaf_hash == H(00||payload).
        Accepts a dict or a JSON string. Tampered -> False; malformed -> ProofError."""

    @staticmethod
    def verify_consistency(proof: ProofJSON | str) -> bool:
        """True iff old_peaks hash to old_root, new_peaks to new_root, and each old peak
        lifted by its path equals the new peak that contains it. Tampered -> False;
        malformed -> ProofError."""


@runtime_checkable
class WriteAheadLog(Protocol):
    """WAL v2 (v1 read and appended to): 8 bytes of magic, then frames `u32le len | u32le crc | payload`.

    v2 (magic b"GLWAL\\x00\\x02\\n", every new file): crc = crc32(len bytes + payload).
    v1 (magic b"GLWAL\\x00\\x01\\n"): crc = crc32(payload). A file keeps its version;
    `version` (2 or 1) says which. docs/formats.md says why v2 exists (zero fill).

    Constructor: WriteAheadLog(path, fsync="group", group_delay_ms=2.0, group_max_records=256,
                               trusted=None)
      - creates the file (with magic) if missing, else runs recovery;
      - trusted=(records, offset): the caller vouches that the first `records` records end
        at byte `offset` (the ledger's node store checkpoint does): recovery checks the
        magic, then reads and scans only [offset, EOF). offset beyond EOF ->
        WalCorruptError; a malformed tuple -> InvalidInput;
      - takes an exclusive non-blocking flock on the file itself: a second writer (any
        process, any twin, or a second object in the same process) gets WalLockedError;
      - fsync policies: "always" (fsync per append), "group" (writes go to the file at once,
        one fsync per batch: when group_max_records are pending or group_delay_ms after the
        first pending record; append_many is one batch), "none" (never fsyncs; flush() still
        writes). Any other policy -> InvalidInput.

    Recovery (identical in both twins; `recovery` attribute after open):
      - a file shorter than 8 bytes that is a prefix of either magic (incl. empty) holds no
        records and is rewritten as the v2 magic; any other header ->
        WalCorruptError("... offset 0 ...").
      - scan frames from offset 8. A frame is valid iff its 8-byte header is complete,
        len <= MAX_FRAME (64 MiB), the payload fits before EOF, and its CRC matches (by the
        file's version).
      - at the first invalid frame at offset o: if some offset p in (o, EOF) starts a chain
        of valid frames that ends exactly at EOF, that is corruption ->
        WalCorruptError naming "offset o" (nothing is modified). Otherwise the tail is torn:
        the file is truncated to o and `recovery == {"records": n, "truncated_bytes": EOF - o}`.
    """

    recovery: dict  # {"records": int, "truncated_bytes": int}
    version: int  # the file's format version: 2, or 1 for a file written before v2

    def append(self, payload: bytes) -> int:
        """Append one record; returns its index (0-based)."""

    def append_many(self, payloads: Sequence[bytes]) -> int:
        """Append a batch (one fsync under "group"/"always"... "always" still fsyncs once per
        record); returns the new record count."""

    def flush(self) -> None:
        """Make every appended record durable now (fsync unless policy "none")."""

    @property
    def count(self) -> int: ...

    @property
    def durable_count(self) -> int:
        """Records known to be fsynced (== count after flush(); always == count under "always")."""

    def close(self) -> None:
        """Flush, fsync (unless "none"), release the lock. Idempotent."""

    def __enter__(self): ...

    def __exit__(self, *exc) -> None: ...

    @staticmethod
    def replay(path: str, offset: int = 0) -> list[bytes]:
        """Read every record's payload without taking the lock and without modifying the
        file (a torn tail is ignored; corruption raises WalCorruptError). With `offset` (a
        frame boundary >= 8 the caller vouches for), only the records from that byte on."""


# Hashing / record / entropy (functions; both twins):
#
# sha256_hex(data: bytes) -> str           lowercase hex; non-bytes -> InvalidInput
#
# encode_record(record: Mapping[str, int | str]) -> bytes
#     canonical JSON exactly as json.dumps(record, sort_keys=True, separators=(",", ":"),
#     ensure_ascii=True).encode(): keys must be str, values int (not bool) or str; integers
#     must fit in i64... anything else -> InvalidInput. Sorting is by code point as Python sorts str.
#
# entropy_millibits(body: bytes) -> int
#     `body` is an OpenAI chat-completion JSON response (bytes). Shannon entropy in bits:
#       - if choices[0].logprobs.content is a non-empty list whose entries carry non-empty
#         `top_logprobs`: per position, p_i = exp(logprob_i) normalised over that position's
#         top_logprobs, H_pos = -sum(p_i * log2(p_i)) in list order; H = mean of H_pos in order;
#       - else: tokens = choices[0].message.content split on ASCII whitespace
#         (b" \t\n\r\x0b\x0c", empty pieces dropped); counts per distinct token; with n tokens,
#         H = -sum((c/n) * log2(c/n)) over distinct tokens in order of first appearance;
#         no tokens (or no content) -> 0.
#     millibits = floor(H * 1000 + 0.5). Invalid JSON -> InvalidInput, and so is JSON nested
#     deeper than 127 arrays/objects (MAX_JSON_DEPTH; serde_json's limit, which Python's json
#     module would otherwise pass, or fail with RecursionError near 1,000).
# text_entropy_millibits(text: str) -> int   the text branch alone (used for streams).


AuditRecord = Mapping[str, int | str]
Payloads = Iterable[bytes]
