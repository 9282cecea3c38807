"""Adapter twins give identical bytes (or the same error type) for identical inputs, for both
upstream kinds: requests, responses and streaming events, generated with hypothesis."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import twins
from gateway.errors import InvalidInput

PY = {k: twins.load("adapter", "python")(k) for k in ("openai", "anthropic")}
RS = {k: twins.load("adapter", "rust")(k) for k in ("openai", "anthropic")}
KINDS = ["openai", "anthropic"]


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - the type is what we compare
        return ("err", type(e))


def same(method: str, kind: str, data, model: str):
    a = _outcome(getattr(PY[kind], method), data, model)
    b = _outcome(getattr(RS[kind], method), data, model)
    assert a == b, (method, kind, data, a, b)
    return a


# JSON values orjson round-trips: ints within 64 bits, finite floats, any str without lone surrogates.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)
role = st.one_of(st.sampled_from(["system", "user", "assistant", "tool"]), json_value)
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": text}),
    st.fixed_dictionaries({"role": role, "content": json_value}, optional={"name": text}),
    json_value,
)
request = st.fixed_dictionaries(
    {"messages": st.lists(message, max_size=5)},
    optional={
        "model": text,
        "max_tokens": st.one_of(st.none(), st.integers(0, 10**6), json_value),
        "temperature": st.one_of(st.none(), st.floats(0, 2)),
        "top_p": json_value,
        "stop": st.one_of(st.none(), text, st.lists(text, max_size=3)),
        "stream": json_value,
        "user": text,
        "n": st.integers(1, 4),
        "extra": json_value,
    },
)
content_block = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": text}),
    st.fixed_dictionaries({"type": st.sampled_from(["tool_use", "thinking"])}, optional={"text": json_value}),
    json_value,
)
stop_reason = st.one_of(
    st.sampled_from(["end_turn", "stop_sequence", "max_tokens", "tool_use", "pause_turn"]),
    st.none(),
    st.integers(-(2**63), 2**64 - 1),
    text,
)
int64 = st.integers(-(2**62), 2**62)
anthropic_response = st.fixed_dictionaries(
    {
        "id": st.one_of(text, json_value),
        "content": st.one_of(st.lists(content_block, max_size=4), st.just([])),
    },
    optional={
        "stop_reason": stop_reason,
        "type": st.just("message"),
        "role": st.just("assistant"),
        "usage": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"input_tokens": st.one_of(int64, json_value), "output_tokens": int64}
            ),
            st.none(),
            st.just({}),
        ),
    },
)
anthropic_event = st.one_of(
    st.fixed_dictionaries({"type": st.just("message_start"), "message": json_value}),
    st.fixed_dictionaries(
        {
            "type": st.just("content_block_delta"),
            "index": st.integers(0, 3),
            "delta": st.one_of(
                st.fixed_dictionaries({"type": st.just("text_delta"), "text": text}),
                st.fixed_dictionaries({"type": st.just("input_json_delta")}, optional={"partial_json": text}),
                json_value,
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("message_delta"),
            "delta": st.one_of(st.fixed_dictionaries({"stop_reason": stop_reason}), json_value),
        },
        optional={"usage": json_value},
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ping", "content_block_start", "content_block_stop", "message_stop"])},
        optional={"index": st.integers(0, 3)},
    ),
    st.fixed_dictionaries({"type": st.just("error"), "error": json_value}),
    st.dictionaries(text, json_value, max_size=3),
)
openai_chunk = st.fixed_dictionaries(
    {
        "id": text,
        "object": st.just("chat.completion.chunk"),
        "created": st.integers(0, 2**40),
        "choices": st.lists(
            st.fixed_dictionaries(
                {"index": st.integers(0, 3), "delta": json_value, "finish_reason": st.one_of(st.none(), text)}
            ),
            max_size=2,
        ),
    },
    optional={"model": text, "usage": json_value},
)
model = st.one_of(st.just("mock"), text)


def _dump(obj, style: int) -> bytes:
    """The same JSON written three ways: compact, spaced (stdlib) and indented."""
    if style == 0:
        return orjson.dumps(obj)
    if style == 1:
        return json.dumps(obj, ensure_ascii=False).encode()
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)


@settings(max_examples=400, deadline=None)
@given(req=request, m=model, style=st.integers(0, 2), kind=st.sampled_from(KINDS))
def test_to_upstream_same_bytes(req, m, style, kind):
    same("to_upstream", kind, _dump(req, style), m)


@settings(max_examples=300, deadline=None)
@given(
    resp=st.one_of(anthropic_response, st.dictionaries(text, json_value, max_size=4)),
    m=model,
    style=st.integers(0, 2),
    kind=st.sampled_from(KINDS),
)
def test_from_upstream_same_bytes(resp, m, style, kind):
    same("from_upstream", kind, _dump(resp, style), m)


@settings(max_examples=400, deadline=None)
@given(ev=anthropic_event, m=model, style=st.integers(0, 1))
def test_anthropic_stream_events_same_chunks(ev, m, style):
    same("stream_event", "anthropic", _dump(ev, style), m)


@settings(max_examples=300, deadline=None)
@given(
    ev=st.one_of(openai_chunk, st.dictionaries(text, json_value, max_size=3)),
    m=model,
    style=st.integers(0, 1),
)
def test_openai_stream_events_same_chunks(ev, m, style):
    same("stream_event", "openai", _dump(ev, style), m)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=40),
        json_value.map(orjson.dumps),
        st.text(alphabet='{}[]":,0123456789.eE+- ntrufalsx\\u\u00e9', max_size=30).map(str.encode),
    ),
    kind=st.sampled_from(KINDS),
    method=st.sampled_from(["to_upstream", "from_upstream", "stream_event"]),
)
def test_arbitrary_bytes_same_outcome(data, kind, method):
    same(method, kind, data, "m")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"null",
        b"[]",
        b'"x"',
        b"{",
        b'{"a":1} x',
        b"\xef\xbb\xbf{}",
        b'{"a":"\xff"}',
        b'{"a":"\\ud800"}',
        b'{"a":1e400}',
        b"[" * 1025 + b"]" * 1025,
        b'{"messages":' + b"[" * 1024 + b"]" * 1024 + b"}",
        b'{"messages":' + b"[" * 253 + b"]" * 253 + b"}",
        b'{"messages":[{"role":"system","content":1}]}',
        b'{"messages":[{"role":"user"}]}',
        b'{"messages":{}}',
        b'{"model":"x","messages":[],"n":-0,"t":-0.0,"big":18446744073709551616,"neg":-9223372036854775809}',
        b' {"messages":[{"role":"system","content":"a"},{"role":"system","content":""}], "stop":"s"} ',
    ],
)
@pytest.mark.parametrize("kind", KINDS)
def test_edge_inputs_same_outcome(data, kind):
    for method in ("to_upstream", "from_upstream", "stream_event"):
        same(method, kind, data, "m")


def _exact_outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - class and message are what we compare
        return ("err", type(e), str(e))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["to_upstream", "from_upstream", "stream_event"])
def test_too_deep_to_write_is_the_same_error_in_both(kind, method):
    """orjson parses 1024 levels but writes only 254; both twins refuse such a body with the
    same class and message (the Python twin turns orjson's JSONEncodeError into it)."""
    deep = b"[" * 300 + b"]" * 300
    data = (
        b'{"messages": [{"role": "user", "content": ' + deep + b'}], "model": "x", "type": "message_start", '
        b'"message": ' + deep + b', "id": ' + deep + b', "content": []}'
    )
    py, rs = (_exact_outcome(getattr(impls[kind], method), data, "m") for impls in (PY, RS))
    assert py == rs, (py, rs)
    if method == "to_upstream":  # the body goes up as is: both must refuse to write it
        assert rs == (
            "err",
            InvalidInput,
            "adapter: JSON nested too deeply to write (orjson: recursion limit reached)",
        )


@pytest.mark.parametrize("depth", [248, 250, 251, 252, 300, 1000])  # parses (3 outer levels + depth <= 1024)
@pytest.mark.parametrize("kind", KINDS)
def test_nesting_around_the_write_limit_same_class_and_message(kind, depth):
    data = b'{"messages":[{"role":"user","content":' + b"[" * depth + b"]" * depth + b"}]}"
    assert _exact_outcome(PY[kind].to_upstream, data, "m") == _exact_outcome(RS[kind].to_upstream, data, "m")


def test_done_marker_and_errors():
    for impls in (PY, RS):
        assert impls["openai"].stream_event(b" [DONE] \n", "m") == []
        with pytest.raises(InvalidInput, match="upstream stream error: overloaded"):
            impls["anthropic"].stream_event(b'{"type":"error","error":{"message":"overloaded"}}', "m")
    for impl in (twins.load("adapter", "python"), twins.load("adapter", "rust")):
        with pytest.raises(InvalidInput):
            impl("azure")
        assert impl("anthropic").kind == "anthropic"


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":1,"content":[],"usage":[1]}',
        b'{"id":1,"content":[],"stop_reason":[]}',
        b'{"id":1,"content":[],"usage":{"input_tokens":9223372036854775807,"output_tokens":18446744073709551615}}',
    ],
)
def test_both_twins_name_bad_upstream_fields_as_invalid_input(body):
    """Bad upstream bodies (usage not an object, stop_reason not a scalar, a token total past
    64 bits) are InvalidInput in both twins, which the gateway turns into a 502."""
    for impls in (PY, RS):
        with pytest.raises(InvalidInput):
            impls["anthropic"].from_upstream(body, "m")


def test_both_twins_reject_a_non_scalar_stop_reason_in_a_stream():
    ev = b'{"type":"message_delta","delta":{"stop_reason":["x"]}}'
    for impls in (PY, RS):
        with pytest.raises(InvalidInput):
            impls["anthropic"].stream_event(ev, "m")
