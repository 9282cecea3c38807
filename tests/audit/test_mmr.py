"""MerkleMountainRange, both twins: the shared vectors, proofs, tampering, bad input."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from gateway import twins
from gateway.errors import AuditIndexError, InvalidInput, ProofError

# the MMR v2 / WAL v1 test vectors (docs/formats.md), kept in the repository
VECTORS_PATH = Path(__file__).resolve().parents[1] / "vectors" / "mmr_v2.json"
VECTORS = json.loads(VECTORS_PATH.read_text())
ZERO = "0" * 64


def seed_leaf(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


@pytest.fixture
def MMR(impl):
    return twins.load("mmr", impl)


def built(MMR, n: int, batch: bool = False):
    m = MMR()
    if batch:
        m.append_many([seed_leaf(i) for i in range(n)])
    else:
        for i in range(n):
            assert m.append(seed_leaf(i)) == i
    return m


def test_roots_at_every_listed_count_per_leaf(MMR):
    roots = {int(k): v for k, v in VECTORS["roots"].items()}
    m = MMR()
    for i in range(max(roots) + 1):
        if i in roots:
            assert m.root() == roots[i], f"root after {i} leaves"
            assert m.leaf_count == len(m) == i
        m.append(seed_leaf(i))


@pytest.mark.parametrize("n", sorted(int(k) for k in VECTORS["roots"]))
def test_roots_at_every_listed_count_batch(MMR, n):
    assert built(MMR, n, batch=True).root() == VECTORS["roots"][str(n)]


def test_empty(MMR):
    m = MMR()
    assert m.root() == ZERO and m.peaks() == [] and len(m) == 0
    proof = m.consistency_proof(0)
    assert proof["old_root"] == proof["new_root"] == ZERO
    assert MMR.verify_consistency(proof)


def test_inclusion_example(MMR):
    ex = VECTORS["inclusion_example"]
    m = built(MMR, ex["leaf_count"])
    assert m.inclusion_proof(ex["leaf_index"]) == ex
    assert m.leaf_hash(ex["leaf_index"]) == ex["leaf_hash"]
    assert m.peaks() == ex["peaks"]
    assert MMR.verify_inclusion(ex)
    assert MMR.verify_inclusion(json.dumps(ex), seed_leaf(ex["leaf_index"]))
    assert not MMR.verify_inclusion(ex, seed_leaf(ex["leaf_index"] + 1))


def test_consistency_example(MMR):
    ex = VECTORS["consistency_example"]
    m = built(MMR, ex["new_count"])
    assert m.consistency_proof(ex["old_count"]) == ex
    assert MMR.verify_consistency(ex)
    assert MMR.verify_consistency(json.dumps(ex))


def test_every_proof_verifies_small_sizes(MMR):
    for n in range(0, 34):
        m = built(MMR, n)
        assert m.root() == built(MMR, n, batch=True).root()
        for i in range(n):
            p = m.inclusion_proof(i)
            assert p["root"] == m.root() and p["leaf_count"] == n
            assert MMR.verify_inclusion(p, seed_leaf(i))
        for old in range(n + 1):
            c = m.consistency_proof(old)
            assert c["old_root"] == built(MMR, old).root()
            assert c["new_root"] == m.root()
            assert MMR.verify_consistency(c)


def _flip_hex(h: str) -> str:
    return ("1" if h[0] == "0" else "0") + h[1:]


def _hash_paths(proof):
    """Every (key, index-or-None, subindex-or-None) that holds a hash."""
    for k, v in proof.items():
        if isinstance(v, str):
            yield (k, None, None)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, str):
                    yield (k, i, None)
                else:
                    for j in range(len(x)):
                        yield (k, i, j)


def _tampered(proof, where):
    t = copy.deepcopy(proof)
    k, i, j = where
    if i is None:
        t[k] = _flip_hex(t[k])
    elif j is None:
        t[k][i] = _flip_hex(t[k][i])
    else:
        t[k][i][j] = _flip_hex(t[k][i][j])
    return t


def test_tampered_inclusion_proofs_fail(MMR):
    m = built(MMR, 27)
    for i in (0, 5, 16, 24, 26):
        p = m.inclusion_proof(i)
        for where in _hash_paths(p):
            assert MMR.verify_inclusion(_tampered(p, where)) is False, where
        # another leaf's index inside the same peak, same shape: must not verify
        q = dict(p, leaf_index=p["leaf_index"] ^ 1) if i < 24 else None
        if q is not None:
            assert MMR.verify_inclusion(q) is False


def test_tampered_consistency_proofs_fail(MMR):
    m = built(MMR, 27)
    for old in (1, 6, 11, 16, 20):
        c = m.consistency_proof(old)
        for where in _hash_paths(c):
            assert MMR.verify_consistency(_tampered(c, where)) is False, where


def test_consistency_rejects_a_forked_prefix(MMR):
    """A left sibling in a path is an old peak; swapping in a different subtree (a fork that
    keeps old peak 1 but rewrites leaves 0..3) must not verify even if every hash is
    recomputed consistently."""
    honest = built(MMR, 11)
    forked = MMR()
    forked.append_many([b"fork-%d" % i for i in range(4)] + [seed_leaf(i) for i in range(4, 11)])
    c = honest.consistency_proof(6)
    f = forked.consistency_proof(6)
    # keep the honest old state, take the forked new state and paths
    fake = dict(c, new_peaks=f["new_peaks"], new_root=f["new_root"], paths=f["paths"])
    assert MMR.verify_consistency(fake) is False


@pytest.mark.parametrize("bad", ["text", 7, None, 1.5, ["x"]])
def test_non_bytes_payloads_rejected(MMR, bad):
    m = MMR()
    m.append(b"ok")
    with pytest.raises(InvalidInput):
        m.append(bad)
    with pytest.raises(InvalidInput):
        m.append_many([b"a", bad, b"b"])
    assert len(m) == 1, "append_many is all-or-nothing"
    assert m.root() == built_from(MMR, [b"ok"]).root()


def built_from(MMR, payloads):
    m = MMR()
    for p in payloads:
        m.append(p)
    return m


def test_out_of_range_indices(MMR):
    m = built(MMR, 5)
    for bad in (-1, 5, 100, 2**70):
        with pytest.raises(AuditIndexError):
            m.inclusion_proof(bad)
        with pytest.raises(AuditIndexError):
            m.leaf_hash(bad)
    for bad in (-1, 6, 2**70):
        with pytest.raises(AuditIndexError):
            m.consistency_proof(bad)
    with pytest.raises(InvalidInput):
        m.inclusion_proof("1")
    with pytest.raises(AuditIndexError):
        MMR().inclusion_proof(0)


def _malformed_inclusion(p):
    yield "{not json"
    yield "[1, 2]"
    yield 42
    for k in p:
        yield {kk: vv for kk, vv in p.items() if kk != k}
    yield dict(p, leaf_hash="zz" * 32)
    yield dict(p, leaf_hash=p["leaf_hash"][:-2])
    yield dict(p, root=123)
    yield dict(p, siblings=p["siblings"] + [p["leaf_hash"]])
    yield dict(p, siblings="abc")
    yield dict(p, peaks=p["peaks"][:-1])
    yield dict(p, leaf_index=p["leaf_count"])
    yield dict(p, leaf_index=-1)
    yield dict(p, leaf_count="11")


def test_malformed_inclusion_proofs_raise(MMR):
    p = built(MMR, 11).inclusion_proof(9)
    for bad in _malformed_inclusion(p):
        with pytest.raises(ProofError):
            MMR.verify_inclusion(bad)


def test_malformed_consistency_proofs_raise(MMR):
    c = built(MMR, 11).consistency_proof(6)
    bads = ["", "null", {}]
    bads += [{kk: vv for kk, vv in c.items() if kk != k} for k in c]
    bads += [
        dict(c, old_count=12),
        dict(c, old_peaks=c["old_peaks"][:1]),
        dict(c, new_peaks=c["new_peaks"] + c["old_peaks"]),
        dict(c, paths=c["paths"][:1]),
        dict(c, paths=[c["paths"][0], c["paths"][1][:1]]),
        dict(c, paths=[c["paths"][0], ["nothex"] * 2]),
        dict(c, old_root="0" * 63),
    ]
    for bad in bads:
        with pytest.raises(ProofError):
            MMR.verify_consistency(bad)


def test_the_root_does_not_commit_to_the_leaf_count(MMR):
    """docs/formats.md (a finding of the proof_verify fuzz target): a proof whose count is
    changed to another count of the same peak shape still verifies, every hash unchanged; a
    count of another shape is refused. So a verifier takes the count from a root it trusts."""
    m = built(MMR, 6)  # peaks of 4 and 2 leaves
    p = m.inclusion_proof(2)
    assert MMR.verify_inclusion({**p, "leaf_count": 5}, seed_leaf(2))  # peaks of 4 and 1
    c = m.consistency_proof(4)
    assert MMR.verify_consistency({**c, "new_count": 5})
    with pytest.raises(ProofError):
        MMR.verify_inclusion({**p, "leaf_count": 7})  # three peaks: another shape
