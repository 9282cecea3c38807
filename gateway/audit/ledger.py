"""The audit ledger: a WAL and an MMR kept in step (docs/architecture.md "The gateway").

    ledger = AuditLedger("data/ledger", fsync="group")     # or switches=Switches("py+rs")
    i = ledger.append(encode_record(rec))                 # WAL first, then the MMR
    ledger.root(); ledger.inclusion_proof(i); ledger.consistency_proof(m)

The WAL lives at `<directory>/audit.wal`; record k of the WAL is leaf k of the MMR.
Opening runs WAL recovery (a torn tail is truncated and reported in `recovery`; corruption
raises WalCorruptError) and rebuilds the MMR from the WAL in one batch append, so the
root after a reopen equals the root before it. The twins come from
`switches.load("mmr")` / `switches.load("wal")` (default: `Switches.resolve()`, i.e. the
environment or all-Python), and can be mixed freely since both write the same bytes.

Thread safety: append/append_many/proofs are serialised by one lock, so the MMR and the
WAL never disagree about the count.
"""
from __future__ import annotations

import os
import threading
from typing import Sequence

from gateway.twins import Switches

WAL_NAME = "audit.wal"


def _as_bytes(p):
    # Both twins take bytes; normalise other bytes-likes here so a mixed WAL/MMR pair
    # always agrees on what was appended. Anything else is left for the twin to refuse.
    return bytes(p) if isinstance(p, (bytearray, memoryview)) else p


class AuditLedger:
    """WAL + MMR. `count`, `root()`, `recovery`, `append`, `append_many`, proofs, `flush`, `close`."""

    def __init__(self, directory, fsync: str = "group", switches: Switches | None = None, **wal_options):
        self.switches = switches if switches is not None else Switches.resolve()
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.path = os.path.join(self.directory, WAL_NAME)
        wal_cls = self.switches.load("wal")
        mmr_cls = self.switches.load("mmr")
        self._lock = threading.Lock()
        # Rebuild before taking the writer lock would race a concurrent writer; so open the
        # WAL (lock + recovery) first, then replay what it accepted.
        self._wal = wal_cls(self.path, fsync=fsync, **wal_options)
        try:
            self._mmr = mmr_cls()
            payloads = wal_cls.replay(self.path)
            if payloads:
                self._mmr.append_many(payloads)
            if len(self._mmr) != self._wal.count:
                raise RuntimeError(f"ledger rebuild mismatch: WAL has {self._wal.count} records, MMR {len(self._mmr)}")
        except BaseException:
            self._wal.close()
            raise
        self.recovery: dict = dict(self._wal.recovery)

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

    def close(self) -> None:
        self._wal.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AuditLedger {self.path!r} count={self.count} mmr={self.impls['mmr']} wal={self.impls['wal']}>"
