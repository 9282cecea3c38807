"""Error types shared by both twins.

The Rust extension raises these same classes (it imports this module), so callers catch
one type whichever twin runs.
"""
from __future__ import annotations


class GatewayLabError(Exception):
    """Base of every gatewaylab error."""


class InvalidInput(GatewayLabError, TypeError, ValueError):
    """An argument of the wrong type or value (non-bytes payload, bad policy name, ...)."""


class NativePanic(GatewayLabError, RuntimeError):
    """A Rust panic, caught at the FFI boundary instead of aborting the process."""


class RustTwinUnavailable(GatewayLabError, ImportError):
    """A Rust twin was asked for but the extension `gateway._native` is not built."""


class ConfigError(GatewayLabError, ValueError):
    """Invalid configuration; the message names the field."""


class AuditIndexError(GatewayLabError, IndexError):
    """A leaf index or count outside the MMR."""


class ProofError(GatewayLabError, ValueError):
    """A proof that is malformed (wrong shape, bad hex, inconsistent counts)."""


class WalError(GatewayLabError, OSError):
    """Write-ahead log failure."""


class WalCorruptError(WalError):
    """A bad frame followed by valid data: the log stops instead of guessing.

    The message names the byte offset of the bad frame; `.offset` carries it too when known.
    """

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        if offset is None:
            import re

            m = re.search(r"offset (\d+)", message)
            offset = int(m.group(1)) if m else None
        self.offset = offset


class WalLockedError(WalError):
    """Another writer holds the WAL's lock (or the lock of the node store beside it)."""


class StoreCorruptError(GatewayLabError, OSError):
    """The MMR node store (`audit.mmr`) disagrees with itself or with the WAL: a bad header,
    or a node that does not hash up to the peak it belongs to. The store is derived data;
    the ledger rebuilds it from the WAL (and says so) instead of trusting it."""
