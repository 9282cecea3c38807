"""Audit jobs and the one place (per twin) where an audit record is assembled.

An `AuditJob` is what the hot path hands over: the request's `AuditMaterial` (decided by the
pipeline) plus the answer (status, body or streamed chunks, latency), nothing computed.
`RecordAssembler.payload(seq, job)` turns it into the canonical record payload that the
ledger appends. The Rust twin is `native/core/src/job.rs` (used by the `rs-core` and
`rs-server` rungs); both give the same bytes for the same job.

Record fields: seq, time_ns, request_id, key_id, model, status, request_sha256,
response_sha256, entropy_mbits, prompt_tokens, completion_tokens, latency_us, waf, and
trace_id only for a request that was traced (sampled; gateway/tracing.py): every other
record is byte for byte what it was before tracing existed.
- non-streamed 2xx: entropy of the response body (logprobs if present, else its text);
  usage.completion_tokens / usage.prompt_tokens when the body carries them.
- streamed: the response body is the OpenAI SSE bytes sent (`data: <chunk>\\n\\n` each, no
  [DONE]); completion_tokens counts chunks with non-empty delta content; entropy is the
  text entropy of that content.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from gateway.twins import Switches


class AuditJob:
    __slots__ = (
        "time_ns",
        "request_id",
        "key_id",
        "model",
        "status",
        "request_body",
        "response",
        "stream",
        "prompt_tokens",
        "latency_us",
        "waf",
        "trace_id",
        "done_ns",
        "durable",
    )

    def __init__(self, material, status: int, response, stream: bool, latency_us: int):
        self.time_ns = material.time_ns
        self.request_id = material.request_id
        self.key_id = material.key_id
        self.model = material.model
        self.request_body = material.request_body
        self.prompt_tokens = material.prompt_tokens
        self.waf = material.waf
        self.trace_id = material.trace_id
        self.status = status
        self.response = response  # bytes, or for streams a list of OpenAI chunk JSONs
        self.stream = stream
        self.latency_us = latency_us
        self.done_ns = time.perf_counter_ns()
        self.durable: asyncio.Future | None = (
            None  # ledger.ack durable: a future resolved once the record is durable
        )


class RecordAssembler:
    """Job -> canonical record payload, with the hash / entropy / record twins the switches pick."""

    def __init__(self, switches: Switches):
        self._sha256 = switches.load("hash")
        self._entropy = switches.load("entropy")
        self._encode = switches.load("record")
        if switches.impl("entropy") == "rust":
            from gateway._native import text_entropy_millibits
        else:
            from gateway.audit.entropy import text_entropy_millibits
        self._text_entropy = text_entropy_millibits

    def record(self, seq: int, j: AuditJob) -> dict:
        completion_tokens = 0
        prompt_tokens = j.prompt_tokens
        entropy = 0
        if j.stream:
            parts = []
            for chunk in j.response:
                try:
                    obj = orjson.loads(chunk)
                    delta = obj["choices"][0]["delta"]
                    text = delta.get("content")
                except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
                    continue
                if isinstance(text, str) and text:
                    parts.append(text)
                    completion_tokens += 1
            body = b"".join(b"data: " + c + b"\n\n" for c in j.response)
            entropy = self._text_entropy("".join(parts))
        else:
            body = j.response
            if 200 <= j.status < 300:
                try:
                    entropy = self._entropy(body)
                    usage = orjson.loads(body).get("usage") or {}
                    completion_tokens = _count(usage.get("completion_tokens"), 0)
                    prompt_tokens = _count(usage.get("prompt_tokens"), prompt_tokens)
                except Exception:  # a body the analyzer cannot read still gets its record
                    entropy = 0
        rec = {
            "seq": seq,
            "time_ns": j.time_ns,
            "request_id": j.request_id,
            "key_id": j.key_id,
            "model": j.model,
            "status": j.status,
            "request_sha256": self._sha256(j.request_body),
            "response_sha256": self._sha256(body),
            "entropy_mbits": entropy,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "latency_us": j.latency_us,
            "waf": j.waf,
        }
        if j.trace_id:  # only a traced (sampled) request's record has it
            rec["trace_id"] = j.trace_id
        return rec

    def payload(self, seq: int, j: AuditJob) -> bytes:
        return self._encode(self.record(seq, j))


def _count(v, default: int) -> int:
    """A usage count as the record keeps it: a non-negative JSON integer, else `default`
    when missing/null/0/false, else ValueError (the record then keeps no usage at all)."""
    if not v:
        return default
    if type(v) is int and 0 <= v < 1 << 63:
        return v
    raise ValueError(f"usage count {v!r} is not a non-negative integer")
