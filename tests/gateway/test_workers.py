"""`--workers N` (gateway/serving/supervisor.py) and the sharded ledger (gateway/audit/shards.py): N
processes on one port serve the real `openai` client, the unit reports its layout in /health,
a drain completes every worker's records, kill -9 of one worker loses nothing durable, and
the shard roots and proofs verify up to the combined root (docs/workers.md)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.error

import pytest

from gateway.audit import shards
from gateway.audit.ledger import WAL_NAME, AuditLedger
from gateway.audit.mmr import MerkleMountainRange
from gateway.audit.wal import WriteAheadLog
from gateway.errors import ConfigError
from gateway.twins import Switches
from tests.gateway.helpers import API_KEY, assert_openai_error, auth, chat_body, http

CHAT = "/v1/chat/completions"


def _unit(gateway_factory, native_mock, tmp_path, mode="py", n=2, **kw):
    return gateway_factory(native_mock.url, mode=mode, workers=n, ledger_dir=str(tmp_path / "ledger"), **kw)


def _spread(gw, n: int) -> list[int]:
    """n requests, each on a new connection (so the kernel hands them to either worker)."""
    return [http("POST", gw.url + CHAT, chat_body(f"hello {i}"), auth())[0] for i in range(n)]


def _settled_root(gw, want: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = http("GET", gw.url + "/audit/root")
        assert status == 200, body
        root = json.loads(body)
        if root["count"] >= want and root["durable_count"] == root["count"] or time.monotonic() > deadline:
            return root
        time.sleep(0.05)


def _verify_cli(ledger) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "audit", "verify", "--ledger", str(ledger)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("mode", ["py", "rs-core"])
def test_workers_serve_openai_client_and_drain_every_shard(native_mock, gateway_factory, tmp_path, mode):
    import openai

    # each audit batch waits 300 ms: records are still queued in both workers at SIGTERM
    gw = _unit(gateway_factory, native_mock, tmp_path, mode, env={"GATEWAYLAB_LEDGER_DELAY_MS": "300"})
    h = gw.health()["workers"]
    assert (h["count"], h["layout"], h["ledger_layout"], h["ready"]) == (2, "workers", "sharded", True)
    pids = [w["pid"] for w in h["workers"]]
    assert len(set(pids)) == 2 and gw.pid not in pids and all(w["alive"] and w["cpus"] for w in h["workers"])
    assert h["clamped"] == (h["workers"][0]["cpus"] == h["workers"][1]["cpus"])
    served = set()
    for i in range(12):  # a new client (connection) per request: both workers take some
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=10)
        r = client.chat.completions.with_raw_response.create(
            model="mock", messages=[{"role": "user", "content": f"hi {i}"}]
        )
        assert r.parse().choices[0].message.content
        served.add(int(r.headers["x-request-id"].split("-")[1], 16))  # req-<pid hex>-...
        client.close()
    assert served <= set(pids)
    assert _spread(gw, 8) == [200] * 8
    queued = json.loads(http("GET", gw.url + "/audit/root")[2])
    assert queued["count"] < 20, queued  # the last records are still in the workers' queues
    assert gw.stop() == 0  # SIGTERM: every worker drains its audit queue
    got = _verify_cli(tmp_path / "ledger")
    assert got["layout"] == "sharded" and got["count"] == 20, got
    assert all(row["count"] > 0 for row in got["shards"]), got  # both workers served and recorded
    for k in range(2):  # each shard is an ordinary ledger: its records are complete JSON
        recs = [
            json.loads(p) for p in WriteAheadLog.replay(str(tmp_path / "ledger" / f"shard-{k}" / WAL_NAME))
        ]
        assert [r["seq"] for r in recs] == list(range(len(recs)))


@pytest.mark.parametrize("mode", ["py+rs", "rs-server"])
def test_sharded_proofs_verify_up_to_the_combined_root(native_mock, gateway_factory, tmp_path, mode):
    # rs-server: N one-thread processes (--threads is each worker's Tokio pool)
    gw = _unit(
        gateway_factory, native_mock, tmp_path, mode, **({"threads": 1} if mode == "rs-server" else {})
    )
    h = gw.health()["workers"]
    assert (h["count"], h["ledger_layout"]) == (2, "sharded") and all(w["threads"] == 1 for w in h["workers"])
    assert _spread(gw, 10) == [200] * 10
    root = _settled_root(gw, 10)
    checked = 0
    for row in root["shards"]:
        for i in range(row["count"]):
            status, _, body = http("GET", f"{gw.url}/audit/proof/{i}?shard={row['shard']}")
            assert status == 200, body
            doc = json.loads(body)
            assert doc["shard"] == row["shard"] and shards.verify_sharded_proof(doc)
            payload = WriteAheadLog.replay(str(tmp_path / "ledger" / f"shard-{row['shard']}" / WAL_NAME))[i]
            assert shards.verify_sharded_proof(doc, payload)
            assert not shards.verify_sharded_proof(doc, payload + b" ")
            forged = json.loads(body)
            other = 1 - row["shard"]
            forged["shards"][other]["count"] += 1  # a shard state that is not the one committed to
            assert not shards.verify_sharded_proof(forged)
            checked += 1
    assert checked == 10
    status, _, body = http("GET", f"{gw.url}/audit/consistency?old=0&shard=0")
    assert status == 200 and shards.verify_sharded_proof(json.loads(body))
    assert_openai_error(http("GET", gw.url + "/audit/proof/0")[::2], 400)  # no shard named
    assert_openai_error(http("GET", gw.url + "/audit/proof/0?shard=7")[::2], 404)
    assert_openai_error(http("GET", gw.url + "/audit/proof/999?shard=0")[::2], 404)
    assert_openai_error(http("GET", gw.url + "/audit/proof/0?shard=x")[::2], 400)
    # a well-formed index beyond any ledger is out of range against the shard's count, however
    # many digits; a sign is malformed; a shard number beyond the unit does not exist
    huge = "9" * 44
    err = assert_openai_error(http("GET", f"{gw.url}/audit/proof/{huge}?shard=0")[::2], 404)
    assert err == {
        "message": f"leaf index {huge} out of range for an MMR of {root['shards'][0]['count']} leaves",
        "type": "invalid_request_error",
        "code": "index_out_of_range",
    }, err
    assert (
        assert_openai_error(http("GET", f"{gw.url}/audit/consistency?old={huge}&shard=1")[::2], 400)["code"]
        == "old_out_of_range"
    )
    assert (
        assert_openai_error(http("GET", f"{gw.url}/audit/proof/0?shard={huge}")[::2], 404)["code"]
        == "shard_out_of_range"
    )
    assert (
        assert_openai_error(http("GET", f"{gw.url}/audit/proof/0?shard=-1")[::2], 400)["code"]
        == "invalid_shard"
    )
    assert gw.stop() == 0
    got = _verify_cli(tmp_path / "ledger")  # the auditor's replay gives the combined root served
    assert (got["count"], got["root"]) == (root["count"], root["root"]), (got, root)
    assert [r["root"] for r in got["shards"]] == [r["root"] for r in root["shards"]]


def _workers_after_kill(gw):
    """/health's workers section; None for a connection the kernel had already queued on the
    killed worker's listening socket (SO_REUSEPORT: that backlog is reset when it dies)."""
    try:
        return gw.health()["workers"]
    except (ConnectionResetError, urllib.error.URLError):
        return None


def test_kill9_of_one_worker_loses_nothing_durable(native_mock, gateway_factory, tmp_path):
    gw = _unit(gateway_factory, native_mock, tmp_path, "py")
    assert _spread(gw, 16) == [200] * 16
    before = _settled_root(gw, 16)
    assert before["durable_count"] == 16
    victim = gw.health()["workers"]["workers"][1]
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (layout := _workers_after_kill(gw)) is None or layout["dead"] != [1]:  # the supervisor reports it
        assert time.monotonic() < deadline, layout
        time.sleep(0.05)
    assert _spread(gw, 4) == [200] * 4  # the other worker goes on serving
    err = assert_openai_error(http("GET", gw.url + "/audit/root")[::2], 503)
    assert err["code"] == "shard_unavailable" and "shard 1" in err["message"]
    assert gw.stop() != 0  # a unit that lost a worker does not exit cleanly
    assert "worker 1" in gw.output()
    for row in before["shards"]:  # every record durable before the kill is in its shard, unchanged
        payloads = WriteAheadLog.replay(str(tmp_path / "ledger" / f"shard-{row['shard']}" / WAL_NAME))
        assert len(payloads) >= row["durable_count"]
        m = MerkleMountainRange()
        m.append_many(payloads[: row["count"]])
        assert m.root() == row["root"]
    # the unit restarts on the same ledger: the killed shard recovers and the unit serves again
    gw2 = _unit(gateway_factory, native_mock, tmp_path, "py")
    assert _spread(gw2, 2) == [200] * 2
    after = _settled_root(gw2, before["count"] + 6)
    assert after["count"] == before["count"] + 6


def test_combined_root_rule():
    rows = [{"count": 3, "root": "ab" * 32}, {"count": 0, "root": "00" * 32}]
    want = hashlib.sha256(
        b"\x03"
        + struct.pack(">I", 2)
        + struct.pack(">Q", 3)
        + bytes.fromhex("ab" * 32)
        + struct.pack(">Q", 0)
        + bytes(32)
    ).hexdigest()
    assert shards.combined_root(rows) == want
    assert shards.combined_root(rows[::-1]) != want  # shard order is part of the commitment
    assert shards.combined_root([]) == hashlib.sha256(b"\x03" + bytes(4)).hexdigest()


def test_layout_is_chosen_in_one_place():
    assert shards.resolve_layout(None, 1) == "single"
    assert shards.resolve_layout(None, 4) == "sharded"
    assert shards.resolve_layout("sharded", 1) == "sharded"
    with pytest.raises(ConfigError, match="single has one writer"):
        shards.resolve_layout("single", 2)
    with pytest.raises(ConfigError, match="ledger.layout"):
        shards.resolve_layout("raid", 2)


def test_a_bad_unit_is_one_line(native_mock, tmp_path):
    env = dict(
        os.environ,
        GATEWAYLAB_SERVE=json.dumps(
            {
                "upstream": native_mock.url,
                "api_key": "k",
                "ledger": str(tmp_path / "l"),
                "workers": 2,
                "ledger_layout": "single",
                "port": 0,
            }
        ),
    )
    p = subprocess.run(
        [sys.executable, "-m", "gateway.serving.server"], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "single has one writer" in p.stderr, p.stderr


@pytest.mark.parametrize("impl", ["python", "rust"])
def test_shard_files_are_the_same_bytes_from_both_twins(tmp_path, impl):
    """A shard is an ordinary ledger: both twins write identical shard files and the same roots."""
    recs = [[f'{{"k":{k},"i":{i}}}'.encode() for i in range(5 + 3 * k)] for k in range(3)]
    roots = {}
    for twin in ("python", impl):
        base = tmp_path / twin
        rows = []
        for k, payloads in enumerate(recs):
            with AuditLedger(
                shards.shard_dir(str(base), k),
                fsync="none",
                switches=Switches("py", {"mmr": twin, "wal": twin}),
            ) as led:
                led.append_many(payloads)
                rows.append({"count": led.count, "root": led.root()})
        roots[twin] = shards.combined_root(rows)
        assert shards.iter_layout(str(base)) == (
            "sharded",
            [shards.shard_dir(str(base), k) for k in range(3)],
        )
    assert roots["python"] == roots[impl]
    for k in range(3):
        for name in (WAL_NAME, "audit.mmr"):
            a = (tmp_path / "python" / f"shard-{k}" / name).read_bytes()
            b = (tmp_path / impl / f"shard-{k}" / name).read_bytes()
            assert a == b, (k, name)


def test_combined_root_vectors():
    """tests/vectors/shards_v1.json, read by this test and by native/core/src/shards.rs's."""
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "shards_v1.json").read_text())
    assert doc["format"] == shards.FORMAT
    for case in doc["cases"]:
        for k, s in enumerate(case["shards"]):
            m = MerkleMountainRange()
            for i in range(s["count"]):
                m.append(f"s{k}-{i}".encode())
            assert m.root() == s["root"]
        assert shards.combined_root(case["shards"]) == case["combined"]
