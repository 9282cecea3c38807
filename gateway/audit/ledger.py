"""The audit ledger: a WAL, and an MMR whose nodes live in a node store beside it
(docs/architecture.md "The gateway"; the store's format: docs/node_store.md).

    ledger = AuditLedger("data/ledger", fsync="group")     # or switches=Switches("py+rs")
    i = ledger.append(encode_record(rec))                 # WAL first, then the MMR
    ledger.root(); ledger.inclusion_proof(i); ledger.consistency_proof(m)

Files: `<directory>/audit.wal` (the source of truth: record k is leaf k) and
`<directory>/audit.mmr` (every MMR node hash, in position order; memory holds only the
peaks and a bounded cache). Every CHECKPOINT_EVERY leaves, and at close, the ledger makes
the WAL durable and then writes a checkpoint into the store: "my first c leaves are the
WAL's records up to byte o".

Opening, in time that does not grow with the ledger's length:
  1. open the store (its lock; a torn partial leaf group at its end is dropped);
  2. take the newest checkpoint that the files agree with: the store holds its c leaves,
     its peaks bag to its root, and the WAL frame ending at byte o holds exactly the
     payload of leaf c - 1 (one SHA-256);
  3. open the WAL trusting its first c records (recovery scans only [o, EOF): a torn tail
     is truncated, corruption there refused), cut the store back to c leaves (a store
     ahead of the WAL, or whatever it held past the checkpoint) and extend it from the
     WAL's tail -- at most CHECKPOINT_EVERY records plus what was appended since the last
     checkpoint of a killed process;
  4. with no usable checkpoint (a new store, a store whose header or checkpoints are
     corrupt, a WAL that lost what a checkpoint vouched for), rebuild the store from the
     whole WAL, saying why in `store_recovery` (and in a logged warning when it held data).
`store_recovery` = {"action": "new"|"resumed"|"rebuilt", "checkpoint": c, "replayed": k,
"message": str}. A node that later fails to hash up to its peak raises StoreCorruptError
instead of serving a proof; reopening rebuilds. `gatewaylab audit verify` replays every
record for auditors.

`nodes="memory"` (or GATEWAYLAB_LEDGER_NODES=memory for a whole gateway) is the design
before the node store, kept only so benchmarks can show both in one study: every node in
process memory, no audit.mmr, a full replay at every open. It is never chosen implicitly.

The twins come from `switches.load("mmr")` / `switches.load("wal")` (default:
`Switches.resolve()`), and mix freely since both write the same bytes.

Thread safety: append/append_many/proofs are serialised by one lock, so the MMR and the
WAL never disagree about the count.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence

from gateway.errors import InvalidInput, StoreCorruptError, WalCorruptError
from gateway.twins import Switches

WAL_NAME = "audit.wal"
STORE_NAME = "audit.mmr"
#: Leaves between two checkpoints of the node store (both ledgers use the same number, so
#: their stores are byte-identical); bounds what a restart after a kill re-hashes.
CHECKPOINT_EVERY = 1 << 16
WAL_HEADER = 8
NODES = ("store", "memory")

log = logging.getLogger("gatewaylab.ledger")


def _as_bytes(p):
    # Both twins take bytes; normalise other bytes-likes here so a mixed WAL/MMR pair
    # always agrees on what was appended. Anything else is left for the twin to refuse.
    return bytes(p) if isinstance(p, (bytearray, memoryview)) else p


class AuditLedger:
    """WAL + MMR. `count`, `root()`, `recovery`, `append`, `append_many`, proofs, `flush`, `close`."""

    def __init__(
        self,
        directory,
        fsync: str = "group",
        switches: Switches | None = None,
        nodes: str | None = None,
        **wal_options,
    ):
        nodes = nodes if nodes is not None else os.environ.get("GATEWAYLAB_LEDGER_NODES", "store")
        if nodes not in NODES:
            raise InvalidInput(f"nodes must be one of {', '.join(NODES)}, got {nodes!r}")
        self.nodes = nodes
        self.switches = switches if switches is not None else Switches.resolve()
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.path = os.path.join(self.directory, WAL_NAME)
        self.store_path: str | None = os.path.join(self.directory, STORE_NAME)
        self._wal_cls = self.switches.load("wal")
        self._mmr_cls = self.switches.load("mmr")
        self._fsync = fsync
        self._wal_options = wal_options
        self._lock = threading.Lock()
        self._closed = False
        self._store_problem = ""
        if nodes == "memory":
            self._open_in_memory()
            return
        self._mmr = self._open_store()
        try:
            self._wal, tail, self.store_recovery = self._resume_or_rebuild()
        except BaseException:
            self._mmr.close()
            raise
        try:
            if tail:
                self._mmr.append_many(tail)
            self._wal_end += sum(WAL_HEADER + len(p) for p in tail)
            if tail:
                self._last_len = len(tail[-1])
            if len(self._mmr) != self._wal.count:
                raise RuntimeError(
                    f"ledger rebuild mismatch: WAL has {self._wal.count} records, MMR {len(self._mmr)}"
                )
            self._checkpointed = self.store_recovery["checkpoint"]
            if self.store_recovery["replayed"] or self.store_recovery["action"] != "resumed":
                self._checkpoint()
        except BaseException:
            self._wal.close()
            self._mmr.close()
            raise
        self.recovery: dict = dict(self._wal.recovery)

    # -- opening ----------------------------------------------------------------------
    def _open_in_memory(self) -> None:
        """The design before the node store (benchmarks only): replay the whole WAL."""
        self.store_path = None
        self._wal = self._open_wal()
        try:
            self._mmr = self._mmr_cls()
            tail = self._wal_cls.replay(self.path)
            if tail:
                self._mmr.append_many(tail)
        except BaseException:
            self._wal.close()
            raise
        self._wal_end, self._last_len, self._checkpointed = WAL_HEADER, 0, len(self._mmr)
        self.store_recovery = {"action": "memory", "checkpoint": 0, "replayed": len(tail), "message": ""}
        self.recovery = dict(self._wal.recovery)

    def _open_store(self):
        try:
            return self._mmr_cls(store=self.store_path)
        except StoreCorruptError as e:
            self._store_problem = str(e)
            log.warning("%s; rebuilding it from the WAL", e)
            os.remove(self.store_path)
            return self._mmr_cls(store=self.store_path)

    def _open_wal(self, trusted=None):
        return self._wal_cls(self.path, fsync=self._fsync, trusted=trusted, **self._wal_options)

    def _check_checkpoint(self, cp) -> str:
        """'' if the store and the WAL agree with checkpoint `cp`, else why not."""
        c, o, last = cp["leaf_count"], cp["wal_end"], cp["last_frame_len"]
        if c > len(self._mmr):
            return f"the store holds {len(self._mmr)} leaves, fewer than its checkpoint of {c}"
        if c == 0:
            return "" if o == WAL_HEADER else f"checkpoint of 0 leaves at WAL offset {o}"
        start = o - WAL_HEADER - last
        if start < WAL_HEADER:
            return f"checkpoint offsets are impossible (end {o}, last frame {last} bytes)"
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            return "the WAL is missing"
        if size < o:
            return f"the WAL ends at byte {size}, before the checkpoint's {o}"
        try:
            frames = self._wal_cls.replay(self.path, offset=start)
        except (WalCorruptError, InvalidInput):
            return f"no valid WAL frame at byte {start}"
        if not frames or len(frames[0]) != last:
            return f"no {last}-byte WAL frame at byte {start}"
        if hashlib.sha256(b"\x00" + frames[0]).hexdigest() != self._mmr.leaf_hash(c - 1):
            return f"WAL record {c - 1} does not match the store's leaf {c - 1}"
        return ""

    def _resume_or_rebuild(self):
        mmr, problems = self._mmr, []
        for cp in self._mmr.checkpoints():
            why = self._check_checkpoint(cp)
            if not why:
                mmr.truncate(cp["leaf_count"])  # what the store held past it is redone from the WAL
                if mmr.root() != cp["root"]:
                    why = "the store's peaks do not hash to its checkpoint's root"
            if why:
                problems.append(f"checkpoint {cp['seq']} ({cp['leaf_count']} leaves): {why}")
                continue
            trusted = (cp["leaf_count"], cp["wal_end"]) if cp["leaf_count"] else None
            wal = self._open_wal(trusted)
            try:
                tail = self._wal_cls.replay(self.path, offset=cp["wal_end"])
            except BaseException:
                wal.close()
                raise
            self._wal_end, self._last_len = cp["wal_end"], cp["last_frame_len"]
            return (
                wal,
                tail,
                {"action": "resumed", "checkpoint": cp["leaf_count"], "replayed": len(tail), "message": ""},
            )
        # No checkpoint the files agree with: the whole WAL rebuilds the store.
        wal = self._open_wal()
        try:
            tail = self._wal_cls.replay(self.path)
        except BaseException:
            wal.close()
            raise
        held = len(mmr)
        mmr.truncate(0)
        if self._store_problem:
            problems.insert(0, self._store_problem)
        action = "rebuilt" if problems or held or tail else "new"
        message = ""
        if action == "rebuilt":
            why = "; ".join(problems) or "it has no checkpoint"
            message = f"node store {self.store_path} rebuilt from the WAL ({len(tail)} records): {why}"
            if held or problems:
                log.warning("%s", message)
        self._wal_end, self._last_len = WAL_HEADER, 0
        return wal, tail, {"action": action, "checkpoint": 0, "replayed": len(tail), "message": message}

    def _checkpoint(self) -> None:
        """Make the WAL durable, then record in the store how far it matches the WAL."""
        self._wal.flush()
        self._mmr.checkpoint(self._wal_end, self._last_len, sync=self._fsync != "none")
        self._checkpointed = len(self._mmr)

    def _after_append(self, payloads) -> None:
        if self.nodes == "memory":
            return
        for p in payloads:
            self._wal_end += WAL_HEADER + len(p)
        if payloads:
            self._last_len = len(payloads[-1])
        if len(self._mmr) // CHECKPOINT_EVERY != self._checkpointed // CHECKPOINT_EVERY:
            self._checkpoint()

    @property
    def impls(self) -> dict[str, str]:
        return {"mmr": self.switches.impl("mmr"), "wal": self.switches.impl("wal")}

    @property
    def count(self) -> int:
        return len(self._mmr)

    def __len__(self) -> int:
        return len(self._mmr)

    @property
    def durable_count(self) -> int:
        return self._wal.durable_count

    def root(self) -> str:
        return self._mmr.root()

    def append(self, payload: bytes) -> int:
        """Write `payload` to the WAL, then add it to the MMR; returns its leaf index."""
        payload = _as_bytes(payload)
        with self._lock:
            idx = self._wal.append(payload)  # validates the payload; nothing changes on bad input
            got = self._mmr.append(payload)
            assert got == idx, (got, idx)
            self._after_append((payload,))
            return idx

    def append_many(self, payloads: Sequence[bytes]) -> int:
        """Append a batch (one WAL batch, one MMR batch); returns the new count."""
        if not isinstance(payloads, (bytes, bytearray, memoryview, str)):
            try:
                payloads = [_as_bytes(p) for p in payloads]
            except TypeError:
                pass  # not iterable: the WAL twin raises InvalidInput
        with self._lock:
            n = self._wal.append_many(payloads)
            self._mmr.append_many(payloads)
            self._after_append(payloads)
            return n

    def inclusion_proof(self, index: int) -> dict:
        with self._lock:
            return self._mmr.inclusion_proof(index)

    def consistency_proof(self, old_count: int) -> dict:
        with self._lock:
            return self._mmr.consistency_proof(old_count)

    def leaf_hash(self, index: int) -> str:
        with self._lock:
            return self._mmr.leaf_hash(index)

    def verify_inclusion(self, proof, payload: bytes | None = None) -> bool:
        return self._mmr.verify_inclusion(proof, payload)

    def verify_consistency(self, proof) -> bool:
        return self._mmr.verify_consistency(proof)

    def flush(self) -> None:
        self._wal.flush()

    @property
    def resident_hashes(self) -> int:
        """Node hashes the ledger holds in memory (peaks, unwritten nodes, read cache)."""
        return self._mmr.resident_hashes

    def close(self) -> None:
        """Close the WAL (flushing it), checkpoint the store if it moved, release both. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:  # the WAL and the store are released even when the checkpoint fails (a stopped WAL)
                if self.nodes == "store" and len(self._mmr) != self._checkpointed:
                    self._checkpoint()
            finally:
                try:
                    self._wal.close()
                finally:
                    self._mmr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<AuditLedger {self.path!r} count={self.count} mmr={self.impls['mmr']} wal={self.impls['wal']}>"
        )
