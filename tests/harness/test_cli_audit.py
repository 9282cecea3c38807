"""`gatewaylab audit ...` as a subprocess of the installed console script, both twins and
across twins (append with one, verify/prove with the other)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from gateway.audit.mmr import MerkleMountainRange
from tests import entry_points

GATEWAYLAB = entry_points.gatewaylab()
EMPTY = "0" * 64


def cli(*args, stdin: bytes = b"", check: bool = True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAYLAB_")}
    r = subprocess.run(
        [str(GATEWAYLAB), "audit", *map(str, args)], input=stdin, capture_output=True, timeout=120, env=env
    )
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def out(r) -> dict:
    return json.loads(r.stdout)


def expected(payloads) -> MerkleMountainRange:
    m = MerkleMountainRange()
    m.append_many(payloads)
    return m


def test_append_verify_prove_consistency(impl, tmp_path):
    wal = tmp_path / "a.wal"
    lines = [b"alpha", b"", b"gamma \xff\x00 binary", b"delta"]
    r = out(cli("append", "--wal", wal, "--impl", impl, stdin=b"\n".join(lines) + b"\n"))
    assert r == {"count": 4, "root": expected(lines).root()}
    # a last line without a newline is still a payload
    r = out(cli("append", "--wal", wal, "--impl", impl, stdin=b"epsilon\nzeta"))
    lines += [b"epsilon", b"zeta"]
    m = expected(lines)
    assert r == {"count": 6, "root": m.root()}
    assert out(cli("verify", "--wal", wal, "--impl", impl)) == {
        "count": 6,
        "root": m.root(),
        "truncated_bytes": 0,
        "wal_version": 2,
    }
    proof = out(cli("prove", "--wal", wal, "--impl", impl, "--index", 2))
    assert proof == m.inclusion_proof(2)
    assert MerkleMountainRange.verify_inclusion(proof, lines[2])
    cons = out(cli("consistency", "--wal", wal, "--impl", impl, "--old", 4))
    assert cons == m.consistency_proof(4)
    assert cons["old_root"] == expected(lines[:4]).root()


def test_verify_reports_torn_tail_without_modifying(impl, tmp_path):
    wal = tmp_path / "t.wal"
    cli("append", "--wal", wal, "--impl", impl, stdin=b"one\ntwo\n")
    with open(wal, "ab") as f:
        f.write(b"\x09\x00\x00\x00\xaa")
    before = wal.read_bytes()
    r = out(cli("verify", "--wal", wal, "--impl", impl))
    assert r == {
        "count": 2,
        "root": expected([b"one", b"two"]).root(),
        "truncated_bytes": 5,
        "wal_version": 2,
    }
    assert wal.read_bytes() == before
    # append recovers (truncates) and carries on
    r = out(cli("append", "--wal", wal, "--impl", impl, stdin=b"three\n"))
    assert r == {"count": 3, "root": expected([b"one", b"two", b"three"]).root()}


def test_verify_corruption_exits_nonzero_naming_offset(impl, tmp_path):
    wal = tmp_path / "c.wal"
    cli("append", "--wal", wal, "--impl", impl, stdin=b"aaaa\nbbbb\ncccc\n")
    data = bytearray(wal.read_bytes())
    data[8 + 12 + 9] ^= 0x10  # record 1's payload; its frame starts at offset 20
    wal.write_bytes(bytes(data))
    r = cli("verify", "--wal", wal, "--impl", impl, check=False)
    assert r.returncode != 0
    assert b"offset 20" in r.stderr, r.stderr
    assert r.stdout == b""
    assert wal.read_bytes() == bytes(data)


def test_bad_arguments(impl, tmp_path):
    wal = tmp_path / "b.wal"
    cli("append", "--wal", wal, "--impl", impl, stdin=b"x\n")
    r = cli("prove", "--wal", wal, "--impl", impl, "--index", 5, check=False)
    assert r.returncode != 0 and b"out of range" in r.stderr
    r = cli("consistency", "--wal", wal, "--impl", impl, "--old", 2, check=False)
    assert r.returncode != 0 and b"out of range" in r.stderr
    r = cli("verify", "--wal", tmp_path / "missing.wal", "--impl", impl, check=False)
    assert r.returncode != 0 and b"no WAL file" in r.stderr
    r = cli("prove", "--wal", wal, "--impl", impl, check=False)
    assert r.returncode == 2
    r = cli("frobnicate", "--wal", wal, check=False)
    assert r.returncode == 2


def test_empty_wal(impl, tmp_path):
    wal = tmp_path / "e.wal"
    assert out(cli("append", "--wal", wal, "--impl", impl)) == {"count": 0, "root": EMPTY}
    assert out(cli("verify", "--wal", wal, "--impl", impl)) == {
        "count": 0,
        "root": EMPTY,
        "truncated_bytes": 0,
        "wal_version": 2,
    }


def test_verify_names_a_v1_wal_and_append_keeps_it_v1(impl, tmp_path):
    import json as _json
    from pathlib import Path

    ex = _json.loads((Path(__file__).resolve().parents[1] / "vectors" / "mmr_v2.json").read_text())[
        "wal_v1_example"
    ]
    wal = tmp_path / "v1.wal"
    wal.write_bytes(bytes.fromhex(ex["file_hex"]))
    payloads = [p.encode() for p in ex["payloads_utf8"]]
    assert out(cli("verify", "--wal", wal, "--impl", impl)) == {
        "count": 3,
        "root": expected(payloads).root(),
        "truncated_bytes": 0,
        "wal_version": 1,
    }
    out(cli("append", "--wal", wal, "--impl", impl, stdin=b"four\n"))
    assert out(cli("verify", "--wal", wal, "--impl", impl))["wal_version"] == 1
    assert wal.read_bytes().startswith(bytes.fromhex(ex["file_hex"]))


@pytest.mark.parametrize("writer,reader", [("python", "rust"), ("rust", "python")])
def test_cross_twin(writer, reader, tmp_path):
    wal = tmp_path / "x.wal"
    payloads = [hashlib.sha256(i.to_bytes(8, "big")).hexdigest().encode() for i in range(40)]
    a = out(cli("append", "--wal", wal, "--impl", writer, stdin=b"\n".join(payloads)))
    v = out(cli("verify", "--wal", wal, "--impl", reader))
    assert v == {**a, "truncated_bytes": 0, "wal_version": 2}
    assert out(cli("prove", "--wal", wal, "--impl", reader, "--index", 33)) == out(
        cli("prove", "--wal", wal, "--impl", writer, "--index", 33)
    )
    b = out(cli("append", "--wal", wal, "--impl", reader, stdin=b"more\n"))
    assert b == {"count": 41, "root": expected(payloads + [b"more"]).root()}


@pytest.mark.parametrize("action, flag", [("prove", "--index I"), ("consistency", "--old M")])
def test_proof_actions_require_their_argument(tmp_path, action, flag):
    wal = tmp_path / "a.wal"
    cli("append", "--wal", wal, stdin=b"x\n")
    r = cli(action, "--wal", wal, check=False)
    assert r.returncode == 2 and flag.encode() in r.stderr


def test_verify_replays_everything_and_checks_the_node_store(impl, tmp_path):
    # A gateway restart checks only the WAL's tail and the store's checkpoint; the auditor's
    # verify recomputes every node and finds a flipped one that a restart would not read.
    from gateway.audit.ledger import AuditLedger
    from gateway.audit.node_store import HEADER_LEN, node_pos
    from gateway.twins import Switches

    payloads = [hashlib.sha256(bytes([i])).digest() for i in range(100)]
    sw = Switches("py", {"mmr": impl, "wal": impl})
    with AuditLedger(tmp_path, switches=sw) as led:
        led.append_many(payloads)
        root = led.root()
    wal, store = tmp_path / "audit.wal", tmp_path / "audit.mmr"
    r = cli("verify", "--wal", wal, "--impl", impl)
    assert out(r) == {"count": 100, "root": root, "truncated_bytes": 0, "wal_version": 2}
    assert b"100 leaves agree with the WAL" in r.stderr
    data = bytearray(store.read_bytes())
    data[HEADER_LEN + 32 * node_pos(2, 5) + 7] ^= 1
    store.write_bytes(bytes(data))
    r = cli("verify", "--wal", wal, "--impl", impl, check=False)
    assert r.returncode == 1 and out(r)["root"] == root
    assert b"is corrupt: node" in r.stderr and b"--repair" in r.stderr, r.stderr
    assert store.read_bytes() == bytes(data)  # verify alone modifies nothing
    r = cli("verify", "--wal", wal, "--impl", impl, "--repair")
    assert b"rebuilt from the WAL" in r.stderr
    with AuditLedger(tmp_path, switches=sw) as led:
        assert led.store_recovery["action"] == "resumed" and led.store_recovery["replayed"] == 0
        assert led.inclusion_proof(21) == expected(payloads).inclusion_proof(21)
