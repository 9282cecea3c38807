"""The MMR node store (`audit.mmr`) over both twins: vectors, byte parity and cross-reading,
proofs from disk against an in-memory recomputation, recovery against the WAL (short,
torn, ahead, corrupt -- at every cut point of the last record), a restart that does not
replay the ledger, and a memory bound counted in node hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import ledger as ledger_mod
from gateway.audit import node_store
from gateway.audit.ledger import AuditLedger
from gateway.audit.mmr import MerkleMountainRange as PyMMR
from gateway.errors import AuditIndexError, InvalidInput, StoreCorruptError, WalLockedError
from gateway.twins import Switches, load

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "node_store_v1.json").read_text())
BOUND = 64 + node_store.WRITE_BATCH + node_store.CACHE_SLOTS


def seed_leaf(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


@pytest.fixture
def MMR(impl):
    return load("mmr", impl)


@pytest.fixture
def switches(impl):
    return Switches("py", {"mmr": impl, "wal": impl})


def mem_mmr(n: int) -> PyMMR:
    m = PyMMR()
    m.append_many([seed_leaf(i) for i in range(n)])
    return m


# -- format and vectors -------------------------------------------------------------------
def test_positions_match_the_format():
    assert [node_store.node_pos(0, i) for i in range(5)] == [0, 1, 3, 4, 7]
    assert node_store.node_pos(1, 0) == 2 and node_store.node_pos(2, 0) == 6
    for n in range(300):
        assert node_store.leaves_for(node_store.nodes_for(n)) == n


def test_vector_store_bytes(MMR, tmp_path):
    v = VECTORS["mmr_store"]
    path = tmp_path / "audit.mmr"
    m = MMR(store=path)
    m.append_many([bytes.fromhex(p) for p in v["payloads_hex"]])
    m.flush()
    assert path.read_bytes().hex() == v["file_hex_before_checkpoint"]
    cp = m.checkpoint(v["checkpoint"]["wal_end"], v["checkpoint"]["last_frame_len"])
    assert cp == v["checkpoint"]
    m.close()
    assert path.read_bytes().hex() == v["file_hex"]
    m = MMR(store=path)
    assert m.checkpoints() == [v["checkpoint"]] and m.root() == v["checkpoint"]["root"]
    m.close()


def test_vector_ledger_files(switches, tmp_path):
    v = VECTORS["ledger"]
    with AuditLedger(tmp_path, switches=switches) as led:
        led.append_many([bytes.fromhex(p) for p in v["payloads_hex"][:5]])
        for p in v["payloads_hex"][5:]:
            led.append(bytes.fromhex(p))
    assert (tmp_path / "audit.mmr").read_bytes().hex() == v["store_hex"]
    assert (tmp_path / "audit.wal").read_bytes().hex() == v["wal_hex"]


# -- parity, cross-reading, proofs from disk ----------------------------------------------
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 300), min_size=1, max_size=4), data=st.data())
def test_twins_write_the_same_store_and_read_each_others(tmp_path_factory, cuts, data):
    d = tmp_path_factory.mktemp("parity")
    files = {}
    for impl in ("python", "rust"):
        path = d / f"{impl}.mmr"
        n = 0
        for k, cut in enumerate(cuts):
            # Alternate writers on one file: each twin reopens what the other wrote.
            m = load("mmr", ("python", "rust")[(k + (impl == "rust")) % 2])(store=path)
            assert len(m) == n
            m.append_many([seed_leaf(n + i) for i in range(cut)])
            n += cut
            if k % 2:
                m.checkpoint(8 + 40 * n, 32)
            m.close()
        files[impl] = path.read_bytes()
    assert files["python"] == files["rust"]
    n = sum(cuts)
    ref = mem_mmr(n)
    for impl in ("python", "rust"):
        m = load("mmr", impl)(store=d / ("rust.mmr" if impl == "python" else "python.mmr"))
        assert m.root() == ref.root() and m.peaks() == ref.peaks()
        if n:
            i = data.draw(st.integers(0, n - 1))
            assert m.inclusion_proof(i) == ref.inclusion_proof(i)
            assert m.leaf_hash(i) == ref.leaf_hash(i)
        old = data.draw(st.integers(0, n))
        assert m.consistency_proof(old) == ref.consistency_proof(old)
        m.close()


def test_every_proof_from_disk_equals_memory(MMR, tmp_path):
    n = 2 * node_store.WRITE_BATCH + 77  # some nodes written out, some still pending
    m = MMR(store=tmp_path / "s.mmr")
    m.append_many([seed_leaf(i) for i in range(n)])
    ref = mem_mmr(n)
    for i in range(0, n, 37):
        assert m.inclusion_proof(i) == ref.inclusion_proof(i)
    for old in range(0, n + 1, 53):
        assert m.consistency_proof(old) == ref.consistency_proof(old)
    m.close()


def test_store_arguments_and_lock(MMR, tmp_path):
    m = MMR(store=tmp_path / "s.mmr")
    with pytest.raises(WalLockedError):
        MMR(store=tmp_path / "s.mmr")
    m.append_many([b"a", b"b", b"c"])
    with pytest.raises(AuditIndexError):
        m.truncate(4)
    with pytest.raises(InvalidInput):
        m.truncate("1")
    with pytest.raises(InvalidInput):
        m.checkpoint(-1, 0)
    with pytest.raises(InvalidInput):
        MMR().checkpoint(8, 0)
    assert MMR().store_path is None and m.store_path == str(tmp_path / "s.mmr")
    for bad in (3, b"/tmp/x.mmr"):
        with pytest.raises(InvalidInput, match="path"):
            MMR(store=bad)
    m.close()
    m.close()


def test_a_corrupt_node_never_serves_a_proof(MMR, tmp_path):
    path = tmp_path / "s.mmr"
    m = MMR(store=path)
    m.append_many([seed_leaf(i) for i in range(64)])
    m.close()
    data = bytearray(path.read_bytes())
    data[node_store.HEADER_LEN + 32 * node_store.node_pos(1, 3)] ^= 1
    path.write_bytes(bytes(data))
    m = MMR(store=path)
    with pytest.raises(StoreCorruptError, match="corrupt"):
        m.inclusion_proof(4)
    with pytest.raises(StoreCorruptError):
        m.consistency_proof(5)
    assert m.inclusion_proof(0) == mem_mmr(64).inclusion_proof(0)  # its path avoids the flipped node
    m.close()


def test_bad_header_is_corrupt(MMR, tmp_path):
    path = tmp_path / "s.mmr"
    path.write_bytes(b"GLMMR\x00\x02\n" + bytes(184))
    with pytest.raises(StoreCorruptError, match="header"):
        MMR(store=path)


# -- the ledger: recovery against the WAL -------------------------------------------------
K = 8  # checkpoint every 8 leaves in these tests


@pytest.fixture
def small_checkpoints(monkeypatch):
    monkeypatch.setattr(ledger_mod, "CHECKPOINT_EVERY", K)


def crashed_ledger(switches, tmp_path, n: int):
    """A ledger of n records whose process died after the WAL's last fsync: the store's
    last checkpoint is at the last multiple of K, its nodes after that fully written."""
    live = tmp_path / "live"
    with AuditLedger(live, switches=switches) as led:
        for i in range(n):
            led.append(seed_leaf(i))
        led.flush()
        led._mmr.flush()  # every node in the file, as the kernel would have it after a kill -9
        d = tmp_path / "crashed"
        d.mkdir()
        for name in ("audit.wal", "audit.mmr"):
            (d / name).write_bytes((live / name).read_bytes())
    return d


def reopen_matches(switches, d, n: int, action: str):
    with AuditLedger(d, switches=switches) as led:
        assert led.store_recovery["action"] == action, led.store_recovery
        assert led.count == n and led.root() == mem_mmr(n).root()
        assert led.inclusion_proof(n - 1) == mem_mmr(n).inclusion_proof(n - 1)
        rec = dict(led.store_recovery)
    return rec


def test_short_or_torn_store_is_extended_from_the_wal_tail(switches, tmp_path, small_checkpoints):
    n = 3 * K + 5
    d = crashed_ledger(switches, tmp_path, n)
    store = (d / "audit.mmr").read_bytes()
    wal = (d / "audit.wal").read_bytes()
    last = node_store.HEADER_LEN + 32 * node_store.nodes_for(n - 1)
    checkpointed = node_store.HEADER_LEN + 32 * node_store.nodes_for(3 * K)
    # Every cut inside the last record's node group, and a few further back to the checkpoint.
    for cut in list(range(last, len(store))) + [checkpointed, checkpointed + 33]:
        (d / "audit.mmr").write_bytes(store[:cut])
        (d / "audit.wal").write_bytes(wal)
        rec = reopen_matches(switches, d, n, "resumed")
        assert rec["checkpoint"] == 3 * K and rec["replayed"] == n - 3 * K


def test_store_ahead_of_the_wal_is_cut_back(switches, tmp_path, small_checkpoints):
    n = 3 * K + 5
    d = crashed_ledger(switches, tmp_path, n)
    store = (d / "audit.mmr").read_bytes()
    wal = (d / "audit.wal").read_bytes()
    # The WAL lost its last records (power loss before their fsync); the store kept them.
    frame_ends = [8]
    for _i in range(n):
        frame_ends.append(frame_ends[-1] + 8 + 32)
    for keep in (n - 1, n - 3, 3 * K):
        for cut in range(frame_ends[keep], frame_ends[keep + 1]):  # every cut point of the next record
            (d / "audit.mmr").write_bytes(store)
            (d / "audit.wal").write_bytes(wal[:cut])
            rec = reopen_matches(switches, d, keep, "resumed")
            assert rec["replayed"] == keep - 3 * K


def test_corrupt_store_is_rebuilt_with_a_message(switches, tmp_path, small_checkpoints, caplog):
    n = 3 * K + 5
    d = crashed_ledger(switches, tmp_path, n)
    store = (d / "audit.mmr").read_bytes()
    peak = node_store.HEADER_LEN + 32 * node_store.node_pos(4, 0)
    last_checkpointed_leaf = node_store.HEADER_LEN + 32 * node_store.node_pos(0, 3 * K - 1)
    cases = {
        "bad header": 3,
        "both slots torn": (70, 140),
        "peak": peak + 5,
    }
    for name, at in cases.items():
        data = bytearray(store)
        for a in at if isinstance(at, tuple) else (at,):
            data[a] ^= 0x40
        (d / "audit.mmr").write_bytes(bytes(data))
        caplog.clear()
        rec = reopen_matches(switches, d, n, "rebuilt")
        assert rec["replayed"] == n and "rebuilt from the WAL" in rec["message"], name
        assert "rebuilt" in caplog.text or "rebuilding" in caplog.text, name
    # A last checkpointed leaf that disagrees with its WAL record: the older checkpoint is used.
    data = bytearray(store)
    data[last_checkpointed_leaf + 9] ^= 0x40
    (d / "audit.mmr").write_bytes(bytes(data))
    rec = reopen_matches(switches, d, n, "resumed")
    assert rec["checkpoint"] == 2 * K and rec["replayed"] == n - 2 * K


def test_one_torn_slot_falls_back_to_the_other(switches, tmp_path, small_checkpoints):
    n = 3 * K + 5
    d = crashed_ledger(switches, tmp_path, n)
    m = PyMMR(store=d / "audit.mmr")
    newest = m.checkpoints()[0]
    m.close()
    data = bytearray((d / "audit.mmr").read_bytes())
    data[node_store.SLOT_OFFSETS[newest["seq"] % 2] + 20] ^= 1
    (d / "audit.mmr").write_bytes(bytes(data))
    rec = reopen_matches(switches, d, n, "resumed")
    assert rec["checkpoint"] == 2 * K and rec["replayed"] == n - 2 * K


def test_a_wal_written_without_a_store_gets_one(switches, tmp_path):
    with AuditLedger(tmp_path, switches=switches) as led:
        led.append_many([seed_leaf(i) for i in range(40)])
    (tmp_path / "audit.mmr").unlink()
    rec = reopen_matches(switches, tmp_path, 40, "rebuilt")
    assert rec["replayed"] == 40
    rec = reopen_matches(switches, tmp_path, 40, "resumed")
    assert rec["replayed"] == 0


def test_ledgers_of_both_twins_write_identical_files(tmp_path, small_checkpoints):
    for impl in ("python", "rust"):
        sw = Switches("py", {"mmr": impl, "wal": impl})
        with AuditLedger(tmp_path / impl, switches=sw) as led:
            for i in range(3 * K + 3):
                led.append(seed_leaf(i))
        with AuditLedger(tmp_path / impl, switches=sw) as led:
            led.append_many([seed_leaf(i) for i in range(3 * K + 3, 5 * K)])
    for name in ("audit.mmr", "audit.wal"):
        assert (tmp_path / "python" / name).read_bytes() == (tmp_path / "rust" / name).read_bytes()


# -- restart without replay, and memory ---------------------------------------------------
class CountingWAL:
    """The WAL twin, with every `replay` call and what it returned recorded."""

    def __init__(self, cls):
        self.cls, self.calls = cls, []

    def __call__(self, *a, **kw):
        self.calls.append(("open", kw.get("trusted")))
        return self.cls(*a, **kw)

    def replay(self, path, offset=0):
        out = self.cls.replay(path, offset)
        self.calls.append(("replay", offset, len(out)))
        return out


def test_restart_of_a_long_ledger_does_not_replay_it(switches, tmp_path, monkeypatch):
    n = 300_000
    with AuditLedger(tmp_path, fsync="none", switches=switches) as led:
        for k in range(0, n, 20_000):
            led.append_many([k.to_bytes(4, "big") + i.to_bytes(4, "big") for i in range(20_000)])
        root = led.root()
    wal = CountingWAL(switches.load("wal"))
    real_load = Switches.load
    monkeypatch.setattr(Switches, "load", lambda self, c: wal if c == "wal" else real_load(self, c))
    sha_calls = []
    real_sha = hashlib.sha256
    monkeypatch.setattr(ledger_mod.hashlib, "sha256", lambda *a: sha_calls.append(1) or real_sha(*a))
    with AuditLedger(tmp_path, fsync="none", switches=switches) as led:
        assert led.count == n and led.root() == root
        assert led.store_recovery == {"action": "resumed", "checkpoint": n, "replayed": 0, "message": ""}
    # One record read to link the checkpoint to the WAL (one SHA-256), then the empty tail.
    reads = [c for c in wal.calls if c[0] == "replay"]
    assert sum(c[2] for c in reads) == 1 and all(c[1] > 8 for c in reads), wal.calls
    assert ("open", (n, (tmp_path / "audit.wal").stat().st_size)) in wal.calls
    assert len(sha_calls) == 1


def test_memory_holds_a_bounded_number_of_node_hashes(switches, tmp_path):
    with AuditLedger(tmp_path, fsync="none", switches=switches) as led:
        for k in range(40):
            led.append_many([seed_leaf(k * 5000 + i) for i in range(5000)])
            assert led.resident_hashes <= BOUND
        for i in range(0, 200_000, 997):
            led.inclusion_proof(i)
        assert led.resident_hashes <= BOUND
        led.consistency_proof(12345)
        assert led.resident_hashes <= BOUND
    mem = switches.load("mmr")()
    mem.append_many([seed_leaf(i) for i in range(20_000)])
    assert mem.resident_hashes >= node_store.nodes_for(20_000)  # the in-memory form: every node


def test_the_in_memory_design_is_only_chosen_explicitly(switches, tmp_path, monkeypatch):
    with pytest.raises(InvalidInput, match="nodes"):
        AuditLedger(tmp_path, switches=switches, nodes="disk")
    with AuditLedger(tmp_path, switches=switches, nodes="memory") as led:
        led.append_many([seed_leaf(i) for i in range(3000)])
        assert led.resident_hashes >= node_store.nodes_for(3000)
        assert led.root() == mem_mmr(3000).root()
    assert not (tmp_path / "audit.mmr").exists()
    monkeypatch.setenv("GATEWAYLAB_LEDGER_NODES", "memory")
    with AuditLedger(tmp_path, switches=switches) as led:
        assert led.store_recovery["action"] == "memory" and led.store_recovery["replayed"] == 3000
    monkeypatch.delenv("GATEWAYLAB_LEDGER_NODES")
    with AuditLedger(tmp_path, switches=switches) as led:
        assert led.store_recovery["action"] == "rebuilt" and led.count == 3000


WRITER = r"""
import sys
from gateway.audit import ledger as L
from gateway.twins import Switches
L.CHECKPOINT_EVERY = 64
impl = sys.argv[2]
led = L.AuditLedger(sys.argv[1], fsync="always", switches=Switches("py", {"mmr": impl, "wal": impl}))
i = led.count
while True:
    led.append(i.to_bytes(8, "big") * 4)
    i += 1
    print(led.durable_count, led.root(), flush=True)
"""


@pytest.mark.parametrize("kill_after", [37, 200, 611])
def test_kill_9_while_appending_loses_nothing_durable(impl, tmp_path, kill_after):
    import subprocess
    import sys

    switches = Switches("py", {"mmr": impl, "wal": impl})
    roots = {}
    for _round in range(2):  # kill, reopen, write on, kill again
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), impl], stdout=subprocess.PIPE, text=True
        )
        durable = 0
        try:
            for _ in range(kill_after):
                durable, root = p.stdout.readline().split()
                durable = int(durable)
                roots[durable] = root
        finally:
            p.kill()  # SIGKILL
            p.wait()
            p.stdout.close()
        with AuditLedger(tmp_path, switches=switches) as led:
            assert led.count >= durable
            assert led.store_recovery["action"] == "resumed", led.store_recovery
            assert led.store_recovery["replayed"] < 64 + 2, (
                led.store_recovery
            )  # at most the tail since a checkpoint
            for m, root in roots.items():
                if m <= led.count:
                    proof = led.consistency_proof(m)
                    assert proof["old_root"] == root and led.verify_consistency(proof)
            assert led.root() == mem_mmr_of(led.count).root()


def mem_mmr_of(n: int) -> PyMMR:
    m = PyMMR()
    m.append_many([i.to_bytes(8, "big") * 4 for i in range(n)])
    return m
