"""Interfaces of the hot-path stages that have twins (docs/architecture.md "Twins and switches").

Each has a Python twin in `gateway/stages/<stage>.py` and a Rust twin bound in
`native/py/src/<stage>.rs` (logic in `native/core/src/<stage>.rs`). Both twins give identical
results for identical inputs; parity tests in `tests/gateway/test_<stage>_parity.py`.
Time is always passed in (never read inside), so both twins are deterministic under test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class ApiKeyAuth(Protocol):
    """ApiKeyAuth(keys: Mapping[key_id, sha256_hex_of_secret]).

    Keys are stored hashed; the presented bearer secret is hashed and compared in
    constant time (hmac.compare_digest / subtle)."""

    def check(self, authorization: bytes | None) -> str | None:
        """Raw `Authorization` header value (b"Bearer sk-...") -> key_id, or None when the
        header is missing, not a Bearer token, or the key is unknown."""


@runtime_checkable
class Waf(Protocol):
    """Waf(rules: Sequence[Mapping]) with rules {"id": str, "kind": "regex"|"literal",
    "pattern": str, "case_insensitive": bool}. Regexes use the syntax common to Python `re`
    and Rust `regex` (no backreferences or lookaround; construction rejects them), with Python
    `re` meaning (the Rust twin translates `\\s`, `\\w`, `\\b`, `\\B`, `$` to it); literals are
    substring tests, case_insensitive folding ASCII letters only.
    The Rust twin releases the GIL for texts over 4 KiB."""

    def scan(self, text: str) -> str | None:
        """The id of the first rule (in rule order) that matches anywhere in `text`, or None."""


@runtime_checkable
class RateLimiter(Protocol):
    """RateLimiter(limits: Mapping[key_id, (requests_per_min, tokens_per_min)]).

    Two token buckets per key, each starting full (capacity = the per-minute limit) and
    refilling continuously at limit/60 per second. A request costs 1 request and `tokens`
    tokens; it is admitted iff both buckets hold enough, and then both are debited.
    Keys without limits are unlimited. Float arithmetic in the documented order, so both
    twins give bit-identical answers."""

    def check(self, key_id: str, tokens: int, now_ns: int) -> float:
        """0.0 if admitted; otherwise the seconds until both buckets would admit it
        (Retry-After), and nothing is debited."""


@runtime_checkable
class Adapter(Protocol):
    """Adapter(kind: "openai"|"anthropic"): OpenAI request -> upstream request, and back.
    Input/output are JSON bytes; compact separators, key order preserved, so the twins'
    bytes are identical."""

    def to_upstream(self, body: bytes, upstream_model: str) -> bytes: ...

    def from_upstream(self, body: bytes, public_model: str) -> bytes: ...

    def stream_event(self, event: bytes, public_model: str) -> list[bytes]:
        """One upstream SSE event's data (without `data: `) -> zero or more OpenAI chunk
        JSONs (each to be sent as `data: <json>\\n\\n`)."""


@runtime_checkable
class Forwarder(Protocol):
    """A pooled HTTP client to the upstream, with timeouts. Forwarder(timeout_s=..., pool=...)."""

    async def send(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> tuple[int, bytes]:
        """POST; returns (status, body). Refused/reset/timeout raise UpstreamError."""

    def stream(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> AsyncIterator[bytes]:
        """POST; yields the response body chunk by chunk as it arrives (status checked first)."""

    async def aclose(self) -> None: ...


StageLimits = Mapping[str, tuple[int, int]]
Rules = Sequence[Mapping[str, object]]
