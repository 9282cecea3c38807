"""Parity between the Python and Rust twins of the audit core, over generated inputs.

Every property runs both twins on the same input and requires identical results: MMR roots,
peaks, leaf hashes and proofs (and each twin verifying the other's proofs), tampered and
malformed proofs, WAL file bytes, cross-reading and recovery of each other's WALs, canonical
record bytes and entropy values.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway import _native as rs
from gateway.audit import entropy as py_entropy
from gateway.audit import hashing as py_hashing
from gateway.audit import record as py_record
from gateway.audit.mmr import MerkleMountainRange as PyMMR
from gateway.audit.wal import WriteAheadLog as PyWAL
from gateway.errors import InvalidInput, ProofError, WalCorruptError

RsMMR, RsWAL = rs.MerkleMountainRange, rs.WriteAheadLog
MMRS = {"python": PyMMR, "rust": RsMMR}
WALS = {"python": PyWAL, "rust": RsWAL}
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

payload = st.binary(max_size=48)
payload_lists = st.lists(payload, max_size=70)
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def build(cls, payloads, split):
    """Per-leaf appends for the first `split` payloads, one batch for the rest."""
    m = cls()
    for i, p in enumerate(payloads[:split]):
        assert m.append(p) == i
    assert m.append_many(payloads[split:]) == len(payloads)
    return m


def hash_paths(proof):
    """Paths (key, index...) of every 64-hex string in a proof."""
    out = []
    for k, v in proof.items():
        if isinstance(v, str) and len(v) == 64:
            out.append((k,))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, str):
                    out.append((k, i))
                else:
                    out.extend((k, i, j) for j in range(len(x)))
    return out


def get_at(proof, path):
    v = proof
    for p in path:
        v = v[p]
    return v


def set_at(proof, path, value):
    proof = json.loads(json.dumps(proof))
    parent = proof
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return proof


# ---------------------------------------------------------------------------------------
# MMR
# ---------------------------------------------------------------------------------------


@SETTINGS
@given(payloads=payload_lists, data=st.data())
def test_mmr_roots_peaks_and_proofs_match(payloads, data):
    n = len(payloads)
    split = data.draw(st.integers(0, n), label="split")
    py, r = (
        build(PyMMR, payloads, split),
        build(RsMMR, payloads, data.draw(st.integers(0, n), label="split_rs")),
    )
    assert len(py) == len(r) == py.leaf_count == r.leaf_count == n
    assert py.root() == r.root()
    assert py.peaks() == r.peaks()
    if n:
        i = data.draw(st.integers(0, n - 1), label="index")
        assert py.leaf_hash(i) == r.leaf_hash(i)
        pp, rp = py.inclusion_proof(i), r.inclusion_proof(i)
        assert pp == rp and list(pp) == list(rp)
        for verify in (PyMMR.verify_inclusion, RsMMR.verify_inclusion):
            assert verify(pp) is True
            assert verify(json.dumps(rp)) is True
            assert verify(rp, payloads[i]) is True
            assert verify(rp, payloads[i] + b"x") is False
    m = data.draw(st.integers(0, n), label="old_count")
    pc, rc = py.consistency_proof(m), r.consistency_proof(m)
    assert pc == rc and list(pc) == list(rc)
    assert pc["old_root"] == build(PyMMR, payloads[:m], 0).root()
    for verify in (PyMMR.verify_consistency, RsMMR.verify_consistency):
        assert verify(rc) is True
        assert verify(json.dumps(pc)) is True


@SETTINGS
@given(payloads=st.lists(payload, min_size=1, max_size=40), data=st.data())
def test_tampered_proofs_fail_in_both(payloads, data):
    r = build(RsMMR, payloads, 0)
    n = len(payloads)
    kind = data.draw(st.sampled_from(["inclusion", "consistency"]), label="kind")
    if kind == "inclusion":
        proof = r.inclusion_proof(data.draw(st.integers(0, n - 1), label="index"))
    else:
        proof = r.consistency_proof(data.draw(st.integers(0, n), label="old"))
    paths = hash_paths(proof)
    assume(paths)
    path = data.draw(st.sampled_from(paths), label="where")
    s = get_at(proof, path)
    k = data.draw(st.integers(0, 63), label="char")
    c = data.draw(st.sampled_from([h for h in "0123456789abcdef" if h != s[k]]), label="new char")
    bad = set_at(proof, path, s[:k] + c + s[k + 1 :])
    for cls in (PyMMR, RsMMR):
        verify = cls.verify_inclusion if kind == "inclusion" else cls.verify_consistency
        assert verify(bad) is False, (cls, path)
        assert verify(json.dumps(bad)) is False


def _malformations(proof):
    """(description, malformed proof) pairs for one good proof."""
    out = []
    for key in proof:
        d = dict(proof)
        del d[key]
        out.append((f"missing {key}", d))
        for bad in (None, True, -1, 1.5, "x", [], {}, 2**64):
            if bad == proof[key] and type(bad) is type(proof[key]):
                continue
            out.append((f"{key}={bad!r}", {**proof, key: bad}))
    for path in hash_paths(proof):
        s = get_at(proof, path)
        for bad in (s.upper() if s.upper() != s else None, s[:-1], s + "0", "g" + s[1:], 7):
            if bad is not None:
                out.append((f"{path}={bad!r}", set_at(proof, path, bad)))
    for key, v in proof.items():
        if isinstance(v, list):
            out.append((f"{key} extra", {**proof, key: v + (["0" * 64] if key != "paths" else [[]])}))
            if v:
                out.append((f"{key} short", {**proof, key: v[:-1]}))
    return out


@pytest.mark.parametrize("n,index,old", [(1, 0, 0), (11, 9, 6), (23, 13, 11), (64, 63, 17)])
def test_malformed_proofs_raise_proof_error_in_both(n, index, old):
    r = build(RsMMR, [b"%d" % i for i in range(n)], 0)
    cases = [("inclusion", p) for p in _malformations(r.inclusion_proof(index))]
    cases += [("consistency", p) for p in _malformations(r.consistency_proof(old))]
    # Dropping extra list items where the shape allows none is caught; the rest must raise.
    checked = 0
    for kind, (_what, bad) in cases:
        for cls in (PyMMR, RsMMR):
            verify = cls.verify_inclusion if kind == "inclusion" else cls.verify_consistency
            with pytest.raises(ProofError):
                verify(bad)
            with pytest.raises(ProofError):
                verify(json.dumps(bad))
            checked += 1
    assert checked > 100
    for bad_text in ("", "{", "[1, 2]", "null", '"proof"', "{'a': 1}"):
        for cls in (PyMMR, RsMMR):
            for verify in (cls.verify_inclusion, cls.verify_consistency):
                with pytest.raises(ProofError):
                    verify(bad_text)
    for not_a_proof in (None, 3, [1], (1,), object()):
        for cls in (PyMMR, RsMMR):
            with pytest.raises(ProofError):
                cls.verify_inclusion(not_a_proof)
            with pytest.raises(ProofError):
                cls.verify_consistency(not_a_proof)


@pytest.mark.parametrize("n", [0, 1, 7])
def test_out_of_range_errors_have_the_same_words_in_both(n):
    """Both MMR twins word an index past the MMR alike, and as the core's ledger does
    (native/core/src/mmr.rs, which rs-core and rs-server answer with), so every rung's 404 /
    400 out of range says the same thing."""
    from gateway.errors import AuditIndexError
    from gateway.rungs.base import out_of_range

    twins = [build(cls, [b"%d" % i for i in range(n)], 0) for cls in (PyMMR, RsMMR)]
    for bad in (n, n + 5, -1, 2**63, 2**64, 10**44):
        calls = [("leaf_hash", bad), ("inclusion_proof", bad), ("truncate", bad if bad < 0 else bad + 1)]
        if bad > n or bad < 0:
            calls.append(("consistency_proof", bad))
        for method, arg in calls:
            words = []
            for m in twins:
                with pytest.raises(AuditIndexError) as e:
                    getattr(m, method)(arg)
                words.append(str(e.value))
            assert words[0] == words[1], (method, arg, words)
            if method == "inclusion_proof" and bad >= 0:
                assert words[0] == out_of_range("inclusion", str(bad), n)
            if method == "consistency_proof" and bad >= 0:
                assert words[0] == out_of_range("consistency", str(bad), n)


# ---------------------------------------------------------------------------------------
# WAL
# ---------------------------------------------------------------------------------------


def write_wal(cls, path, payloads, split, policy="none"):
    with cls(path, fsync=policy) as w:
        for i, p in enumerate(payloads[:split]):
            assert w.append(p) == i
        assert w.append_many(payloads[split:]) == len(payloads)
        assert w.count == len(payloads)
    with open(path, "rb") as f:
        return f.read()


@SETTINGS
@given(payloads=payload_lists, data=st.data())
def test_wal_bytes_identical_and_cross_readable(payloads, data):
    n = len(payloads)
    with tempfile.TemporaryDirectory() as d:
        a, b = os.path.join(d, "py.wal"), os.path.join(d, "rs.wal")
        fa = write_wal(PyWAL, a, payloads, data.draw(st.integers(0, n), label="split_py"))
        fb = write_wal(RsWAL, b, payloads, data.draw(st.integers(0, n), label="split_rs"))
        assert fa == fb
        expected = b"GLWAL\x00\x02\n" + b"".join(
            struct.pack("<I", len(p)) + struct.pack("<I", zlib.crc32(struct.pack("<I", len(p)) + p)) + p
            for p in payloads
        )
        assert fa == expected
        # Each twin replays and reopens the other's file, then keeps appending to it.
        assert PyWAL.replay(b) == RsWAL.replay(a) == payloads
        extra = data.draw(payload, label="extra")
        for cls, path in ((PyWAL, b), (RsWAL, a)):
            with cls(path, fsync="none") as w:
                assert w.recovery == {"records": n, "truncated_bytes": 0}
                assert w.append(extra) == n
        with open(a, "rb") as f1, open(b, "rb") as f2:
            assert f1.read() == f2.read()


def _open_outcome(cls, path):
    """What opening does to a damaged file: ("ok", recovery, bytes after) or ("corrupt", offset)."""
    try:
        w = cls(path, fsync="none")
    except WalCorruptError as e:
        return ("corrupt", e.offset)
    rec, count = w.recovery, w.count
    w.close()
    with open(path, "rb") as f:
        return ("ok", rec, count, f.read())


def _replay_outcome(cls, path):
    try:
        return ("ok", cls.replay(path))
    except WalCorruptError as e:
        return ("corrupt", e.offset)


def _wal_image(payloads, version: int) -> bytes:
    out = b"GLWAL\x00" + bytes([version]) + b"\n"
    for p in payloads:
        n = struct.pack("<I", len(p))
        out += n + struct.pack("<I", zlib.crc32(p) if version == 1 else zlib.crc32(n + p)) + p
    return out


@SETTINGS
@given(payloads=st.lists(st.binary(max_size=24), min_size=1, max_size=12), data=st.data())
def test_wal_recovery_identical_on_damaged_files(payloads, data):
    """Cut anywhere, flip any bit, append garbage or zeros, in a v2 or a v1 file: both twins
    replay and recover alike (same records, same truncation, same resulting bytes) or both
    report the same corrupt offset."""
    good = _wal_image(payloads, data.draw(st.sampled_from([2, 1]), label="version"))
    how = data.draw(st.sampled_from(["cut", "flip", "garbage", "zeros", "cut+flip"]), label="damage")
    damaged = bytearray(good)
    if how in ("flip", "cut+flip"):
        pos = data.draw(st.integers(0, len(damaged) - 1), label="flip byte")
        damaged[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    if how in ("cut", "cut+flip"):
        damaged = damaged[: data.draw(st.integers(0, len(damaged)), label="cut")]
    if how == "garbage":
        damaged += data.draw(st.binary(min_size=1, max_size=20), label="garbage")
    if how == "zeros":
        damaged = damaged[: data.draw(st.integers(8, len(damaged)), label="cut")]
        damaged += bytes(data.draw(st.integers(1, 40), label="zeros"))
    damaged = bytes(damaged)
    with tempfile.TemporaryDirectory() as d:
        outcomes = {}
        for name, cls in WALS.items():
            path = os.path.join(d, f"{name}.wal")
            with open(path, "wb") as f:
                f.write(damaged)
            replayed = _replay_outcome(cls, path)
            with open(path, "rb") as f:
                assert f.read() == damaged, "replay must not modify the file"
            outcomes[name] = (replayed, _open_outcome(cls, path))
            if outcomes[name][1][0] == "corrupt":
                with open(path, "rb") as f:
                    assert f.read() == damaged, "corruption must not modify the file"
        assert outcomes["python"] == outcomes["rust"]


def test_group_and_always_policies_write_the_same_bytes(tmp_path):
    payloads = [b"a" * i for i in range(40)]
    files = {
        (name, policy): write_wal(cls, str(tmp_path / f"{name}-{policy}.wal"), payloads, 25, policy)
        for name, cls in WALS.items()
        for policy in ("always", "group", "none")
    }
    assert len(set(files.values())) == 1


# ---------------------------------------------------------------------------------------
# Hashing, canonical records, entropy
# ---------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.binary(max_size=5000))
def test_sha256_hex_matches(data):
    assert rs.sha256_hex(data) == py_hashing.sha256_hex(data)
    assert (
        rs.sha256_hex(bytearray(data))
        == rs.sha256_hex(memoryview(data))
        == py_hashing.sha256_hex(memoryview(data))
    )


record_values = st.one_of(I64, st.text(max_size=30))
records = st.dictionaries(st.text(max_size=12), record_values, max_size=14)


@SETTINGS
@given(rec=records)
def test_encode_record_identical_bytes(rec):
    expected = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert rs.encode_record(rec) == py_record.encode_record(rec) == expected


@SETTINGS
@given(
    rec=records,
    key=st.text(max_size=5),
    bad=st.one_of(
        st.booleans(),
        st.floats(allow_nan=False),
        st.none(),
        st.binary(max_size=3),
        st.integers(min_value=2**63),
        st.integers(max_value=-(2**63) - 1),
        st.lists(st.integers(), max_size=2),
    ),
)
def test_encode_record_rejects_the_same_values(rec, key, bad):
    rec = {**rec, key: bad}
    for enc in (rs.encode_record, py_record.encode_record):
        with pytest.raises(InvalidInput):
            enc(rec)


def test_encode_record_rejects_non_str_keys_and_non_mappings():
    for bad in ({1: 1}, {None: "x"}, {b"k": 1}, [("a", 1)], "a", None):
        for enc in (rs.encode_record, py_record.encode_record):
            with pytest.raises(InvalidInput):
                enc(bad)


# Tokens drawn from a small vocabulary so counts repeat; separators from the ASCII set the
# protocol splits on plus Unicode spaces it must *not* split on.
token = st.sampled_from(["a", "b", "the", "é", "😀", "x\u00a0y", "z\u2003", "Ω", "1"])
sep = st.sampled_from([" ", "\t", "\n", "\r", "\x0b", "\x0c", "  ", " \n "])
texts = st.lists(st.tuples(token, sep), max_size=40).map(lambda xs: "".join(t + s for t, s in xs))


@SETTINGS
@given(text=st.one_of(texts, st.text(max_size=200)))
def test_text_entropy_matches(text):
    assert rs.text_entropy_millibits(text) == py_entropy.text_entropy_millibits(text)
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
    assert rs.entropy_millibits(body) == py_entropy.entropy_millibits(body)


logprob = st.one_of(st.floats(min_value=-60, max_value=0.5, allow_nan=False), st.integers(-50, 0))
top = st.lists(st.fixed_dictionaries({"token": token, "logprob": logprob}), min_size=0, max_size=6)
position = st.fixed_dictionaries({"token": token, "logprob": logprob, "top_logprobs": top})


@SETTINGS
@given(
    positions=st.lists(position, max_size=12),
    text=texts,
    shape=st.sampled_from(["full", "no logprobs", "null content", "odd"]),
)
def test_logprob_entropy_matches(positions, text, shape):
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": {"content": positions},
    }
    if shape == "no logprobs":
        choice["logprobs"] = None
    elif shape == "null content":
        choice["message"]["content"] = None
    elif shape == "odd":
        choice["logprobs"] = {"content": positions + [{"token": "x", "top_logprobs": "nope"}]}
    body = json.dumps({"id": "c", "object": "chat.completion", "choices": [choice]}).encode()
    assert rs.entropy_millibits(body) == py_entropy.entropy_millibits(body)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["choices", "message", "content", "logprobs", "top_logprobs", "logprob", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@SETTINGS
@given(doc=json_values)
def test_entropy_of_arbitrary_json_matches(doc):
    body = json.dumps(doc).encode()
    assert rs.entropy_millibits(body) == py_entropy.entropy_millibits(body)


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b'{"a":1}x', b"[1,]"])
def test_entropy_invalid_json_is_invalid_input_in_both(body):
    for f in (rs.entropy_millibits, py_entropy.entropy_millibits):
        with pytest.raises(InvalidInput):
            f(body)
