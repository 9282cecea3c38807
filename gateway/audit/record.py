"""The canonical audit record (Python twin of `gateway._native.encode_record`).

One record per accepted request, written by the background path into the ledger. Its
bytes are canonical JSON of integers and strings only: sorted keys, no whitespace,
non-ASCII escaped as `\\uXXXX` -- exactly `json.dumps(record, sort_keys=True,
separators=(",", ":"), ensure_ascii=True)`. Both twins produce identical bytes.

`build_record(...)` assembles the fields docs/formats.md lists for a record; `encode_record`
validates and serialises any mapping of str -> int | str.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidInput

I64_MIN, I64_MAX = -(2**63), 2**63 - 1

# The fields of an audit record, in the order docs/formats.md lists them (the encoding sorts keys).
RECORD_FIELDS = (
    "seq",
    "time_ns",
    "request_id",
    "key_id",
    "model",
    "status",
    "request_sha256",
    "response_sha256",
    "entropy_mbits",
    "prompt_tokens",
    "completion_tokens",
    "latency_us",
    "waf",
)
# Present only on some records: `trace_id` on a traced request's (gateway/tracing.py), so a
# record of an untraced request keeps the bytes it had before the field existed.
OPTIONAL_FIELDS = ("trace_id",)


def _check(record) -> None:
    if not isinstance(record, Mapping):
        raise InvalidInput(f"record must be a mapping of str -> int | str, not {type(record).__name__}")
    for k, v in record.items():
        if not isinstance(k, str):
            raise InvalidInput(f"record key {k!r} must be str, not {type(k).__name__}")
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise InvalidInput(f"record field {k!r}: value must be int or str, not {type(v).__name__}")
        if isinstance(v, int) and not I64_MIN <= v <= I64_MAX:
            raise InvalidInput(f"record field {k!r}: integer {v} does not fit in i64")


def encode_record(record: Mapping[str, int | str]) -> bytes:
    """Canonical JSON bytes of `record` (keys str; values int that fits i64, or str)."""
    _check(record)
    return json.dumps(dict(record), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def build_record(
    *,
    seq: int,
    time_ns: int,
    request_id: str,
    key_id: str,
    model: str,
    status: int,
    request_sha256: str,
    response_sha256: str,
    entropy_mbits: int,
    prompt_tokens: int,
    completion_tokens: int,
    latency_us: int,
    waf: str,
) -> dict[str, Any]:
    """The audit record for one request as a dict (validated; encode with `encode_record`).

    `request_sha256` / `response_sha256` are `sha256_hex` of the raw bodies; `entropy_mbits`
    comes from `entropy_millibits`; `waf` is the WAF verdict (e.g. "allow", "block:<rule>").
    """
    rec = {
        "seq": seq,
        "time_ns": time_ns,
        "request_id": request_id,
        "key_id": key_id,
        "model": model,
        "status": status,
        "request_sha256": request_sha256,
        "response_sha256": response_sha256,
        "entropy_mbits": entropy_mbits,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_us": latency_us,
        "waf": waf,
    }
    _check(rec)
    return rec
