"""A ledger that cannot be written: every rung under `ledger.ack: durable` answers 503
`audit_unavailable` (OpenAI-shaped, type server_error), never acknowledges an answer without
its record, keeps serving, and restarts on the same ledger with every acknowledged answer in it.

The failing disk is the file-size limit (RLIMIT_FSIZE, set on the running gateway with
prlimit): a write past it fails with EFBIG, as a full disk fails with ENOSPC. The WAL twins
stop after the first failed write or fsync (tests/audit/test_wal_io_error.py), so every later
record fails too. Both Python rungs and the rs-server binary ignore SIGXFSZ, so the limit is
an error, not a signal that kills the gateway."""

from __future__ import annotations

import json
import os
import resource
import urllib.error
import urllib.request

import pytest
import yaml

from gateway.audit.wal import WriteAheadLog
from gateway.serving.launch import start_gateway
from gateway.stages.auth import hash_key
from tests.reliability.rungs import DURABLE_ACK_RUNGS

KEY = "sk-gatewaylab-diskfull"
BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "disk full"}]}).encode()
pytestmark = pytest.mark.slow


def _gateway(mock, ledger, mode):
    cfg = ledger.parent / f"gw-{mode}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "mock", "upstream": {"kind": "openai", "base_url": mock.url}}],
                "keys": [{"id": "d", "sha256": hash_key(KEY)}],
                "ledger": {"dir": str(ledger), "fsync": "group", "ack": "durable"},
            }
        )
    )
    return start_gateway(None, None, mode=mode, config=str(cfg))


def _post(url):
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=BODY,
        method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.headers["x-request-id"], json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers["x-request-id"], json.loads(e.read())


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("mode", DURABLE_ACK_RUNGS)
def test_a_ledger_that_cannot_be_written_answers_503_and_loses_no_acknowledged_record(mock, tmp_path, mode):
    ledger = tmp_path / "ledger"
    wal = ledger / "audit.wal"
    acked = []
    gw = _gateway(mock, ledger, mode)
    try:
        for _ in range(5):
            status, rid, _ = _post(gw.url)
            assert status == 200
            acked.append(rid)
        assert _get(gw.url + "/audit/root")["durable_count"] == 5
        # the next record cannot be written whole: the limit falls inside its frame
        resource.prlimit(
            gw.app_pid, resource.RLIMIT_FSIZE, (os.path.getsize(wal) + 100, resource.RLIM_INFINITY)
        )
        for _ in range(3):  # the first hits the limit, the others a WAL that has stopped
            status, _, body = _post(gw.url)
            assert status == 503, (status, body)
            err = body["error"]
            assert (err["code"], err["type"]) == ("audit_unavailable", "server_error"), err
            assert isinstance(err["message"], str) and err["message"]
        # still serving: health and the ledger's root answer, and the root stayed at 5
        assert _get(gw.url + "/health")["audit"]["ack"] == "durable"
        root = _get(gw.url + "/audit/root")
        assert (root["count"], root["durable_count"]) == (5, 5), root
        # and says so, under the same metric name on every rung: three records not written
        with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert "gateway_audit_failures_total 3.0" in metrics, [
            m for m in metrics.splitlines() if "audit" in m
        ]
    finally:
        gw.stop()
    # the same ledger, a new process without the limit: every acknowledged answer is there,
    # the torn frame of the failed write is cut off, and the log goes on appending
    payloads = WriteAheadLog.replay(str(wal))
    assert [json.loads(p)["request_id"] for p in payloads] == acked
    gw = _gateway(mock, ledger, mode)
    try:
        root = _get(gw.url + "/audit/root")
        assert root["count"] == 5, root
        status, rid, _ = _post(gw.url)
        assert status == 200
        assert _get(gw.url + "/audit/root")["count"] == 6
    finally:
        gw.stop()
    assert [json.loads(p)["request_id"] for p in WriteAheadLog.replay(str(wal))] == acked + [rid]


def test_the_rs_server_binary_started_directly_survives_the_file_size_limit(mock, tmp_path):
    """Started from a shell (SIGXFSZ at its default action, which kills), not through
    `python -m gateway.serving.server` (whose interpreter ignores it before the exec): the binary
    ignores SIGXFSZ itself, so the limit is a 503, not a dead gateway."""
    import subprocess
    import time

    from gateway.options import ServeOptions, build_config
    from gateway.rungs import rs_server
    from gateway.serving.launch import free_port

    ledger = tmp_path / "ledger"
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "mock", "upstream": {"kind": "openai", "base_url": mock.url}}],
                "keys": [{"id": "d", "sha256": hash_key(KEY)}],
                "ledger": {"dir": str(ledger), "fsync": "group", "ack": "durable"},
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    opts = ServeOptions(config=str(cfg), mode="rs-server", port=port)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(rs_server.spec(opts, build_config(opts))))
    # restore_signals (the default) puts SIGXFSZ back to SIG_DFL in the child, as a shell would
    proc = subprocess.Popen(
        [rs_server.binary_path(), "--spec", str(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        restore_signals=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(url + "/health")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the binary did not start"
                time.sleep(0.1)
        assert _post(url)[0] == 200
        resource.prlimit(
            proc.pid,
            resource.RLIMIT_FSIZE,
            (os.path.getsize(ledger / "audit.wal") + 100, resource.RLIM_INFINITY),
        )
        status, _, body = _post(url)
        assert (status, body["error"]["code"]) == (503, "audit_unavailable"), body
        assert proc.poll() is None, "the file-size limit killed the binary"
        assert _get(url + "/audit/root")["count"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()
