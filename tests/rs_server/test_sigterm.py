"""SIGTERM under load loses no record: every request the binary answered is in the WAL after
it exits, with its ledger thread slowed so work is queued when the signal arrives."""

from __future__ import annotations

import json
import threading

import pytest

from gateway.audit.wal import WriteAheadLog
from tests.rs_server.helpers import auth, chat_body, http

pytestmark = pytest.mark.slow


def test_sigterm_drains_the_audit_queue(native_mock, gateway_factory):
    gw = gateway_factory(native_mock.url, env={"GATEWAYLAB_LEDGER_DELAY_MS": "20"})
    answered = []
    lock = threading.Lock()

    def client(i):
        for j in range(15):
            try:
                s, _, _ = http(
                    "POST", gw.url + "/v1/chat/completions", chat_body(f"c{i} r{j}"), auth(), timeout=10
                )
            except OSError:
                return  # the listener closed: the gateway is stopping
            with lock:
                answered.append(s)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    import time

    deadline = time.monotonic() + 60
    while len(answered) < 40 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert gw.stop() == 0
    for t in threads:
        t.join(30)
    ok = sum(1 for s in answered if s == 200)
    payloads = WriteAheadLog.replay(gw.ledger_dir + "/audit.wal")
    assert ok >= 40 and len(payloads) == len(answered), (ok, len(answered), len(payloads))
    assert [json.loads(p)["seq"] for p in payloads] == list(range(len(payloads)))
