"""Auth twins give the same key id (or None) for every header, and the same errors."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import twins
from gateway.errors import InvalidInput

PY = twins.load("auth", "python")
RS = twins.load("auth", "rust")

secrets = st.binary(min_size=1, max_size=40).map(lambda b: b.strip() or b"k")
ws = st.sampled_from([b"", b" ", b"  ", b"\t", b"\r\n", b"\x0b\x0c"])
scheme = st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"BeArEr", b"Basic", b"Bearer:", b""])


def _hash(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - the type is what we compare
        return ("err", type(e))


@settings(max_examples=300, deadline=None)
@given(
    keys=st.dictionaries(st.text(min_size=1, max_size=8), secrets, max_size=5),
    pick=st.integers(min_value=0, max_value=10),
    sch=scheme,
    pre=ws,
    post=ws,
    sep=st.sampled_from([b" ", b"  ", b"\t", b""]),
    noise=st.binary(max_size=12),
    use_noise=st.booleans(),
)
def test_same_key_for_every_header(keys, pick, sch, pre, post, sep, noise, use_noise):
    stored = {k: _hash(s) for k, s in keys.items()}
    py, rs = PY(stored), RS(stored)
    secrets_list = list(keys.values())
    token = noise if use_noise or not secrets_list else secrets_list[pick % len(secrets_list)]
    header = sch + sep + pre + token + post
    assert py.check(header) == rs.check(header)
    for h in (None, b"", noise, bytearray(header)):
        assert py.check(h) == rs.check(h)


def test_known_key_is_found_by_both():
    stored = {"a": _hash(b"sk-a"), "b": _hash(b"sk-b"), "dup": _hash(b"sk-a")}
    for impl in (PY, RS):
        auth = impl(stored)
        assert auth.check(b"Bearer sk-a") == "a"  # first key in mapping order wins
        assert auth.check(b"bearer   sk-b \r\n") == "b"
        assert auth.check(b"Bearer sk-c") is None
        assert auth.check(b" Bearer sk-a") is None
        assert auth.check(None) is None


@pytest.mark.parametrize(
    "keys",
    [
        {"k": "abc"},
        {"k": "A" * 64},
        {"k": "g" * 64},
        {1: "a" * 64},
        {"k": 5},
    ],
)
def test_bad_stored_hashes_are_invalid_input_in_both(keys):
    assert _outcome(PY, keys) == _outcome(RS, keys) == ("err", InvalidInput)


def test_non_bytes_header_is_rejected_by_both():
    stored = {"k": _hash(b"x")}
    for impl in (PY, RS):
        with pytest.raises(TypeError):
            impl(stored).check("Bearer x")
