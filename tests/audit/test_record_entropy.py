"""Hashing, the canonical audit record and entropy, both twins."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from gateway import twins
from gateway.audit.record import RECORD_FIELDS, build_record
from gateway.errors import InvalidInput


@pytest.fixture
def sha256_hex(impl):
    return twins.load("hash", impl)


@pytest.fixture
def encode_record(impl):
    return twins.load("record", impl)


@pytest.fixture
def entropy(impl):
    return twins.load("entropy", impl)


@pytest.fixture
def text_entropy(impl):
    if impl == "python":
        from gateway.audit.entropy import text_entropy_millibits

        return text_entropy_millibits
    return twins.native().text_entropy_millibits


def test_sha256_hex(sha256_hex):
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex(b"") == hashlib.sha256(b"").hexdigest()
    big = bytes(range(256)) * 4000
    assert sha256_hex(big) == hashlib.sha256(big).hexdigest()
    for bad in ("abc", None, 5):
        with pytest.raises(InvalidInput):
            sha256_hex(bad)


def canonical(d):
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


RECORDS = [
    {},
    {"b": 1, "a": "x"},
    {"seq": 0, "time_ns": 1_700_000_000_000_000_000, "model": "gpt-4o-mini", "status": 200},
    {"n": -(2**63), "m": 2**63 - 1},
    {"é": "ünïcödé ✓ 😀", "quote": 'a"b\\c', "ctl": "\x00\x01\n\t\x7f", "Z": "", "a": "z"},
    {"ä": 1, "z": 2, "A": 3, "€": 4, "😀": 5, "\uffff": 6},
]


@pytest.mark.parametrize("rec", RECORDS)
def test_encode_record_is_canonical_json(encode_record, rec):
    assert encode_record(rec) == canonical(rec)


@pytest.mark.parametrize(
    "bad",
    [
        {"flag": True},
        {"x": 1.5},
        {"x": None},
        {"x": [1]},
        {"x": {"y": 1}},
        {"x": 2**63},
        {"x": -(2**63) - 1},
        {1: "x"},
        "not a mapping",
        None,
    ],
)
def test_encode_record_rejects(encode_record, bad):
    with pytest.raises(InvalidInput):
        encode_record(bad)


def test_build_record_has_the_design_fields(encode_record):
    rec = build_record(
        seq=7,
        time_ns=123,
        request_id="req-1",
        key_id="k1",
        model="m",
        status=200,
        request_sha256=hashlib.sha256(b"q").hexdigest(),
        response_sha256=hashlib.sha256(b"r").hexdigest(),
        entropy_mbits=1500,
        prompt_tokens=3,
        completion_tokens=4,
        latency_us=250,
        waf="allow",
    )
    assert tuple(rec) == RECORD_FIELDS
    assert encode_record(rec) == canonical(rec)
    with pytest.raises(InvalidInput):
        build_record(**{**rec, "status": True})


def chat(content=None, logprobs=None):
    choice = {"index": 0, "message": {"role": "assistant", "content": content}}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return json.dumps({"id": "x", "object": "chat.completion", "choices": [choice]}).encode()


def position(*logprobs):
    return {
        "token": "t",
        "logprob": logprobs[0],
        "top_logprobs": [{"token": f"t{i}", "logprob": v} for i, v in enumerate(logprobs)],
    }


def test_text_branch(entropy, text_entropy):
    assert entropy(chat("a b a b")) == 1000
    assert entropy(chat("a a a")) == 0
    assert entropy(chat("")) == 0
    assert entropy(chat(None)) == 0
    assert entropy(chat("a\tb\nc\rd")) == 2000
    assert entropy(chat("a b c")) == math.floor(math.log2(3) * 1000 + 0.5)
    assert text_entropy("a b c d") == 2000
    assert text_entropy("  ") == 0
    assert text_entropy("x\u00a0y") == 0  # non-ASCII whitespace does not split


def test_logprobs_branch(entropy):
    half = math.log(0.5)
    assert entropy(chat("ignored words here", [position(half, half)])) == 1000
    # two positions: 1 bit and 0 bits -> mean 0.5 bits
    assert entropy(chat("x", [position(half, half), position(0.0)])) == 500
    # unnormalised logprobs are normalised per position
    assert entropy(chat("x", [position(-3.0, -3.0, -3.0, -3.0)])) == 2000
    # an entry without top_logprobs falls back to the text
    assert entropy(chat("a b", [{"token": "a", "logprob": -1.0, "top_logprobs": []}])) == 1000


def test_entropy_shapes_and_bad_input(entropy):
    assert entropy(b"{}") == 0
    assert entropy(b"[]") == 0
    assert entropy(json.dumps({"choices": []}).encode()) == 0
    for bad in (b"{not json", b"\xff\xfe", b""):
        with pytest.raises(InvalidInput):
            entropy(bad)
    with pytest.raises(InvalidInput):
        entropy("a string, not bytes")
