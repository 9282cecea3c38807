"""Auth stage, Python twin: bearer API keys stored as SHA-256 hex, compared in constant time.

Parsing (both twins): the header value is split at the first ASCII space; the scheme must
equal "bearer" ignoring ASCII case; the token is the rest with ASCII whitespace
(b" \\t\\n\\r\\x0b\\x0c") stripped from both ends and must be non-empty. The token's SHA-256
hex is compared with every stored hash (no early exit) using `hmac.compare_digest`; the
first key id in mapping order whose hash matches is returned.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from gateway.errors import InvalidInput

_HEX = frozenset("0123456789abcdef")


def hash_key(secret: str | bytes) -> str:
    """The stored form of an API key: lowercase SHA-256 hex of its UTF-8 bytes."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hashlib.sha256(secret).hexdigest()


class ApiKeyAuth:
    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, str]):
        items = []
        for key_id, digest in keys.items():
            if not isinstance(key_id, str) or not isinstance(digest, str):
                raise InvalidInput("ApiKeyAuth: key ids and hashes must be str")
            if len(digest) != 64 or not set(digest) <= _HEX:
                raise InvalidInput(f"ApiKeyAuth: hash for key {key_id!r} is not 64 lowercase hex digits")
            items.append((key_id, digest.encode("ascii")))
        self._keys = tuple(items)

    def check(self, authorization: bytes | None) -> str | None:
        if not authorization:
            return None
        scheme, sep, token = authorization.partition(b" ")
        if not sep or scheme.lower() != b"bearer":
            return None
        token = token.strip()
        if not token:
            return None
        presented = hashlib.sha256(token).hexdigest().encode("ascii")
        found = None
        for key_id, digest in self._keys:
            if hmac.compare_digest(presented, digest) and found is None:
                found = key_id
        return found
