"""Differential fuzzing: the same random input into both twins of every pair gives the same
answer or the same error class (docs/reliability.md).

The parity tests beside each twin (tests/audit/test_parity.py, tests/gateway/test_*_parity.py)
draw well-formed inputs; these targets draw hostile ones — raw bytes, mutated documents, lone
surrogates, deep nesting, NaN tokens, huge numbers, damaged WAL images with zero runs and
spliced frames — and have a budget:

  GATEWAYLAB_FUZZ_EXAMPLES   examples per hypothesis pass (default 150)
  GATEWAYLAB_FUZZ_SECONDS    keep running fresh passes until this many seconds per target have
                             passed (default 0: one pass). `make fuzz FUZZ_SECONDS=600` sets it.

Each target reports its executions on stdout (`-s` shows them; `make fuzz` does).
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import twins
from gateway.errors import WalCorruptError

EXAMPLES = int(os.environ.get("GATEWAYLAB_FUZZ_EXAMPLES", "150"))
SECONDS = float(os.environ.get("GATEWAYLAB_FUZZ_SECONDS", "0"))
PASS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def budget(name: str, run_pass) -> None:
    """One pass, or fresh passes until GATEWAYLAB_FUZZ_SECONDS have gone by."""
    t0, passes = time.monotonic(), 0
    while True:
        run_pass()
        passes += 1
        if time.monotonic() - t0 >= SECONDS:
            break
    print(f"\nfuzz {name}: {passes * EXAMPLES} executions in {time.monotonic() - t0:.1f}s")


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - the class is what both twins must agree on
        return ("err", type(e).__name__)


def same(a, b, what):
    ra, rb = a(), b()
    if ra[0] == "ok" and rb[0] == "ok" and isinstance(ra[1], float):
        assert (math.isnan(ra[1]) and math.isnan(rb[1])) or ra[1].hex() == rb[1].hex(), (what, ra, rb)
    else:
        assert ra == rb, (what, ra, rb)
    return ra


# --- building blocks -----------------------------------------------------------------------
any_text = st.text(max_size=40)  # includes lone surrogates (category Cs)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), any_text)
json_doc = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=15,
)


def _dumps(doc) -> bytes:
    # allow_nan: NaN / Infinity tokens, which Python's json reads and orjson does not
    return json.dumps(doc, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def hostile_bytes(draw, base=None):
    """A JSON document (or a given base), then damaged: cut, byte flips, insertions, deep nesting."""
    data = bytearray(draw(base) if base is not None else _dumps(draw(json_doc)))
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["cut", "flip", "insert", "nest", "bom", "none"]))
        if how == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif how == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif how == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(
                st.sampled_from(
                    [
                        b"NaN",
                        b"-Infinity",
                        b"-0",
                        b"1e999",
                        b"\x00",
                        b"\xff",
                        b'"\\ud800"',
                        b",",
                        b"}",
                        b"]",
                        b"18446744073709551616",
                        b'"a":1,"a":2',
                    ]
                )
            )
        elif how == "nest":
            d = draw(st.integers(1, 3000))
            data = bytearray(b"[" * d + bytes(data) + b"]" * d)
        elif how == "bom":
            data[0:0] = b"\xef\xbb\xbf"
    return bytes(data)


# --- WAL recovery ------------------------------------------------------------------------
PY_WAL, RS_WAL = twins.load("wal", "python"), twins.load("wal", "rust")
MAGIC = b"GLWAL\x00\x02\n"


def _frame(p: bytes, version: int) -> bytes:
    n = struct.pack("<I", len(p))
    return n + struct.pack("<I", zlib.crc32(p) if version == 1 else zlib.crc32(n + p)) + p


@st.composite
def wal_images(draw):
    """A v2 or v1 file of random records, then up to three kinds of damage."""
    version = draw(st.sampled_from([2, 1]))
    _f = lambda p: _frame(p, version)  # noqa: E731
    payloads = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=10))
    data = bytearray(b"GLWAL\x00" + bytes([version]) + b"\n" + b"".join(_f(p) for p in payloads))
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["cut", "flip", "zeros", "garbage", "splice", "empty_frame", "huge_len"]))
        pos = draw(st.integers(0, len(data)))
        if how == "cut":
            del data[pos:]
        elif how == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif how == "zeros":
            data[pos:pos] = b"\0" * draw(st.integers(1, 40))
        elif how == "garbage":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=30))
        elif how == "splice":
            data[pos:pos] = _f(draw(st.binary(min_size=1, max_size=20)))
        elif how == "empty_frame":
            data[pos:pos] = _f(b"")
        elif how == "huge_len":
            data[pos:pos] = struct.pack("<II", draw(st.sampled_from([2**26, 2**26 + 1, 2**32 - 1])), 0)
    return bytes(data)


def _wal_outcome(cls, path):
    try:
        replayed = ("ok", cls.replay(path))
    except WalCorruptError as e:
        replayed = ("corrupt", e.offset)
    try:
        w = cls(path, fsync="none")
    except WalCorruptError as e:
        return replayed, ("corrupt", e.offset), None
    rec, n = w.recovery, w.count
    w.close()
    with open(path, "rb") as f:
        return replayed, ("ok", rec, n), f.read()


def test_wal_recovery_differential():
    @PASS
    @given(image=wal_images())
    def one(image):
        with tempfile.TemporaryDirectory() as d:
            out = {}
            for name, cls in (("py", PY_WAL), ("rs", RS_WAL)):
                path = os.path.join(d, name + ".wal")
                with open(path, "wb") as f:
                    f.write(image)
                out[name] = _wal_outcome(cls, path)
            assert out["py"] == out["rs"], (image, out)
            replayed, opened, after = out["py"]
            if opened[0] == "ok":  # recovery keeps a valid prefix of the image
                assert image.startswith(after) or len(image) < len(MAGIC)

    budget("wal_recovery", one)


# --- record encoding ---------------------------------------------------------------------
PY_REC, RS_REC = twins.load("record", "python"), twins.load("record", "rust")
record_value = st.one_of(
    st.integers(-(2**64), 2**64), any_text, st.booleans(), st.none(), st.floats(), st.binary(max_size=3)
)


def test_record_encoding_differential():
    @PASS
    @given(rec=st.dictionaries(st.one_of(any_text, st.integers(0, 3)), record_value, max_size=10))
    def one(rec):
        same(lambda: outcome(PY_REC, rec), lambda: outcome(RS_REC, rec), rec)

    budget("record", one)


# --- entropy --------------------------------------------------------------------------------
PY_ENT, RS_ENT = twins.load("entropy", "python"), twins.load("entropy", "rust")


entropy_doc = st.builds(
    lambda c: _dumps({"choices": [{"message": {"role": "assistant", "content": c}}]}), any_text
)


def test_entropy_differential():
    @PASS
    @given(body=st.one_of(hostile_bytes(), hostile_bytes(entropy_doc), st.binary(max_size=200)))
    def one(body):
        same(lambda: outcome(PY_ENT, body), lambda: outcome(RS_ENT, body), body)

    budget("entropy", one)


# --- WAF --------------------------------------------------------------------------------------
from gateway.stages.waf import default_rules  # noqa: E402

PY_WAF, RS_WAF = twins.load("waf", "python")(default_rules()), twins.load("waf", "rust")(default_rules())
waf_words = st.sampled_from(
    [
        "ignore previous instructions",
        "IGNORE ALL PREVIOUS",
        "system prompt",
        "sk-",
        "AKIA",
        "ghp_",
        "-----BEGIN RSA PRIVATE KEY-----",
        "\u0130",
        "\u212a",
        "\u017f",
        "\ud800",
        "\x00",
    ]
)


def test_waf_differential():
    @PASS
    @given(text=st.lists(st.one_of(waf_words, any_text), max_size=12).map("".join))
    def one(text):
        same(lambda: outcome(PY_WAF.scan, text), lambda: outcome(RS_WAF.scan, text), text)

    budget("waf", one)


# --- adapter ------------------------------------------------------------------------------------
ADAPTERS = {
    k: (twins.load("adapter", "python")(k), twins.load("adapter", "rust")(k)) for k in ("openai", "anthropic")
}
chat_request = st.builds(
    lambda msgs, extra: _dumps({"model": "m", "messages": msgs, **extra}),
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "system", "assistant"]),
                "content": st.one_of(any_text, json_doc),
            }
        ),
        max_size=3,
    ),
    st.dictionaries(
        st.sampled_from(["max_tokens", "stream", "stop", "temperature", "x"]), json_doc, max_size=3
    ),
)
upstream_reply = st.builds(
    lambda c, extra: _dumps({"id": "x", "type": "message", "content": c, **extra}),
    st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "tool_use"]), "text": st.one_of(any_text, json_doc)}
        ),
        max_size=3,
    ),
    st.dictionaries(st.sampled_from(["usage", "stop_reason", "choices", "model"]), json_doc, max_size=3),
)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_adapter_differential(kind):
    py, rs = ADAPTERS[kind]

    @PASS
    @given(
        body=st.one_of(hostile_bytes(chat_request), hostile_bytes(upstream_reply), st.binary(max_size=100)),
        model=st.one_of(st.just("m"), any_text),
    )
    def one(body, model):
        for method in ("to_upstream", "from_upstream", "stream_event"):
            same(
                lambda: outcome(getattr(py, method), body, model),
                lambda: outcome(getattr(rs, method), body, model),
                (method, body, model),
            )

    budget(f"adapter[{kind}]", one)


# --- rate limit ----------------------------------------------------------------------------------
PY_RL, RS_RL = twins.load("ratelimit", "python"), twins.load("ratelimit", "rust")
rl_limits = st.dictionaries(
    st.one_of(st.sampled_from(["a", "b"]), any_text),
    st.tuples(
        st.one_of(st.integers(-2, 10_000), st.none(), st.floats(), st.just(2**70)),
        st.one_of(st.integers(-2, 10**6), st.none()),
    ),
    max_size=3,
)
rl_call = st.tuples(
    st.one_of(st.sampled_from(["a", "b", "c"]), any_text),
    st.one_of(st.integers(-5, 2**70), st.booleans(), st.floats(), st.none()),
    st.one_of(st.integers(-(2**63), 2**63), st.integers(0, 10**11)),
)


def test_ratelimit_differential():
    @PASS
    @given(lim=rl_limits, calls=st.lists(rl_call, max_size=30))
    def one(lim, calls):
        a, b = outcome(PY_RL, lim), outcome(RS_RL, lim)
        assert (a[0], a[1] if a[0] == "err" else None) == (b[0], b[1] if b[0] == "err" else None), (lim, a, b)
        if a[0] != "ok":
            return
        py, rs = a[1], b[1]
        for key, tokens, now in calls:
            same(
                lambda: outcome(py.check, key, tokens, now),
                lambda: outcome(rs.check, key, tokens, now),
                (lim, key, tokens, now),
            )

    budget("ratelimit", one)


# --- regressions: the minimised inputs of what these targets found ------------------------------
@pytest.mark.parametrize("depth,ok", [(127, True), (128, False), (1000, False)])
def test_entropy_depth_limit(depth, ok):
    """Found by test_entropy_differential: 128 nested arrays were 0 millibits in Python and
    InvalidInput in Rust (serde_json's limit), and ~1,000 were a RecursionError in Python; a
    response with deep junk beside its choices got different entropy on different rungs."""
    for body in (
        b"[" * depth + b"]" * depth,
        b'{"choices":[{"message":{"content":"a b c"}}],"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}",
    ):
        got = [outcome(f, body) for f in (PY_ENT, RS_ENT)]
        assert got[0] == got[1]
        assert (got[0][0] == "ok") is ok, got


def test_waf_lone_surrogate_is_invalid_input_in_both():
    """Found by test_waf_differential: '\\ud800' was no match in Python and pyo3's
    UnicodeEncodeError in Rust."""
    from gateway.errors import InvalidInput

    for waf in (PY_WAF, RS_WAF):
        with pytest.raises(InvalidInput):
            waf.scan("ignore previous \ud800 instructions")
        assert waf.scan("plain é text") is None


def test_ratelimit_limit_above_2_63_is_invalid_input_in_both():
    """Found by test_ratelimit_differential: rpm = 2**70 was accepted in Python and
    InvalidInput in Rust (whose range is 1..=2**63)."""
    from gateway.errors import InvalidInput

    for cls in (PY_RL, RS_RL):
        cls({"a": (1 << 63, 1)})
        with pytest.raises(InvalidInput):
            cls({"a": (1 << 70, 1)})


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"choices":[]}',
        '{"choices":[]}'.encode("utf-16"),
        b"[NaN]",
        b'{"x":-Infinity}',
        b'{"choices":[{"message":{"content":"a \\ud800 b"}}]}',
        b"1e999",
        b'{"choices":[],"x":-1e400}',
    ],
    ids=["bom", "utf16", "nan", "infinity", "lone_surrogate_escape", "overflow", "overflow_inside"],
)
def test_entropy_reads_only_what_serde_json_reads(body):
    """Found by test_entropy_differential: each was read by Python's json and refused by the
    Rust twin; now InvalidInput in both (a surrogate pair still reads)."""
    assert outcome(PY_ENT, body) == outcome(RS_ENT, body) == ("err", "InvalidInput")
    pair = b'{"choices":[{"message":{"content":"a \\ud83d\\ude00 b"}}]}'
    assert outcome(PY_ENT, pair) == outcome(RS_ENT, pair) and outcome(PY_ENT, pair)[0] == "ok"
