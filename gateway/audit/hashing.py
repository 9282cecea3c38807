"""SHA-256 helpers (Python twin of `gateway._native.sha256_hex`).

Bodies are hashed as raw bytes; the result is lowercase hex, the form every audit record
and proof uses (docs/formats.md).
"""

from __future__ import annotations

import hashlib

from gateway.errors import InvalidInput

BYTES_LIKE = (bytes, bytearray, memoryview)


def require_bytes(value, what: str = "payload") -> bytes:
    """`value` as bytes, or InvalidInput naming what was wrong (str, None, int ... are refused)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise InvalidInput(f"{what} must be bytes, not {type(value).__name__}")


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of `data` (bytes-like only; anything else -> InvalidInput)."""
    return hashlib.sha256(require_bytes(data, "data")).hexdigest()
