"""The background audit path: hashing, the canonical record, entropy, the Merkle Mountain
Range, the write-ahead log and the ledger that composes them.

The names here are the Python twins; the Rust twins live in `gateway._native` and are
chosen through `gateway.twins` (never import one directly where a switch should decide).
Interfaces: `gateway.audit.protocols`.
"""

from gateway.audit.entropy import entropy_millibits, text_entropy_millibits
from gateway.audit.hashing import sha256_hex
from gateway.audit.ledger import AuditLedger
from gateway.audit.mmr import EMPTY_ROOT, MerkleMountainRange
from gateway.audit.record import RECORD_FIELDS, build_record, encode_record
from gateway.audit.wal import MAGIC, MAX_FRAME, WriteAheadLog

__all__ = [
    "AuditLedger",
    "EMPTY_ROOT",
    "MAGIC",
    "MAX_FRAME",
    "MerkleMountainRange",
    "RECORD_FIELDS",
    "WriteAheadLog",
    "build_record",
    "encode_record",
    "entropy_millibits",
    "sha256_hex",
    "text_entropy_millibits",
]
