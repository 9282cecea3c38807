"""Shannon entropy of a response's token distribution, as integer millibits
(Python twin of `gateway._native.entropy_millibits` / `text_entropy_millibits`).

Exact semantics (both twins; see gateway/audit/protocols.py):
  - logprobs branch: when choices[0].logprobs.content is a non-empty list and every entry
    is an object with a non-empty `top_logprobs` list: per position, p_i = exp(logprob_i)
    normalised over that position's top_logprobs, H_pos = -sum(p_i * log2(p_i)) in list
    order (terms with p_i == 0 contribute 0); H = mean of H_pos in order;
  - text branch otherwise: choices[0].message.content split on ASCII whitespace, empty
    pieces dropped; H = -sum((c/n) * log2(c/n)) over distinct tokens in order of first
    appearance; no tokens or no string content -> 0.
  - millibits = floor(H * 1000 + 0.5).
A body that is not JSON -> InvalidInput; JSON of another shape simply has no tokens (0).
"""

from __future__ import annotations

import json
import math
import re

from gateway.audit.hashing import require_bytes
from gateway.errors import InvalidInput

_ASCII_WS = re.compile(r"[ \t\n\r\x0b\x0c]+")


def _millibits(h: float) -> int:
    return math.floor(h * 1000.0 + 0.5)


def _text_bits(text: str) -> float:
    counts: dict[str, int] = {}  # insertion order = order of first appearance
    for tok in _ASCII_WS.split(text):
        if tok:
            counts[tok] = counts.get(tok, 0) + 1
    n = sum(counts.values())
    if n == 0:
        return 0.0
    h = 0.0
    for c in counts.values():
        p = c / n
        h -= p * math.log2(p)
    return h


def text_entropy_millibits(text: str) -> int:
    """Entropy of whitespace-separated tokens of `text`, in millibits."""
    if not isinstance(text, str):
        raise InvalidInput(f"text must be str, not {type(text).__name__}")
    return _millibits(_text_bits(text))


def _logprob_positions(choice) -> list | None:
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    content = lp.get("content")
    if not isinstance(content, list) or not content:
        return None
    out = []
    for entry in content:
        if not isinstance(entry, dict):
            return None
        top = entry.get("top_logprobs")
        if not isinstance(top, list) or not top:
            return None
        vals = []
        for t in top:
            if not isinstance(t, dict):
                return None
            v = t.get("logprob")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return None
            vals.append(float(v))
        out.append(vals)
    return out


def _positions_bits(positions: list[list[float]]) -> float:
    total = 0.0
    for vals in positions:
        ps = [math.exp(v) for v in vals]
        z = sum(ps)
        h = 0.0
        if z > 0.0:
            for e in ps:
                p = e / z
                if p > 0.0:
                    h -= p * math.log2(p)
        total += h
    return total / len(positions)


# Deeper nesting is InvalidInput in both twins: the Rust twin's serde_json stops at 128
# levels; json.loads would read on (or raise RecursionError near the interpreter's limit).
# Found by tests/reliability/test_differential.py (test_entropy_depth_limit is the input).
MAX_JSON_DEPTH = 127


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]").search


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(s: str) -> float:
    f = float(s)
    if math.isinf(f):  # 1e999: serde_json says "number out of range"
        raise ValueError(f"number out of range: {s}")
    return f


def _has_lone_surrogate(doc) -> bool:
    stack = [doc]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _deeper_than(doc, limit: int) -> bool:
    stack = [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values() if isinstance(x, (dict, list)))
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return False


def entropy_millibits(body: bytes) -> int:
    """Entropy in millibits of an OpenAI chat-completion response body (JSON bytes)."""
    raw = require_bytes(body, "body")
    try:
        # strict UTF-8 (json.loads(bytes) would also take UTF-16/32 and a BOM), no NaN /
        # Infinity tokens, no float that overflows: what serde_json, the Rust twin's reader, accepts
        text = raw.decode("utf-8")
        doc = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
        if _SURROGATE_ESCAPE(text) is not None and _has_lone_surrogate(doc):
            raise ValueError("a lone surrogate escape")
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"response body is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidInput(f"response body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    # a document needs more than MAX_JSON_DEPTH brackets to be that deep: count first, in C
    if (
        raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
        and isinstance(doc, (dict, list))
        and _deeper_than(doc, MAX_JSON_DEPTH)
    ):
        raise InvalidInput(f"response body is nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(doc, dict):
        return 0
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return 0
    choice = choices[0]
    positions = _logprob_positions(choice)
    if positions is not None:
        return _millibits(_positions_bits(positions))
    msg = choice.get("message")
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
        return 0
    return _millibits(_text_bits(msg["content"]))
