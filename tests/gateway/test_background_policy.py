"""The background path's threads (the ledger thread, the WAL's group-commit thread) run under
Linux's SCHED_BATCH, so their wake-ups never preempt the request path; the threads serving
requests keep the default policy (docs/architecture.md, "Background threads yield on
wake-up"). Read from the kernel: /proc/<pid>/task/<tid>/comm names a thread,
sched_getscheduler(tid) gives its policy."""

from __future__ import annotations

import os
import time

import pytest

from gateway import twins
from tests.gateway.helpers import auth, chat_body, http


def policies(pid: int) -> dict[str, set[int]]:
    """comm -> the policies of the process's threads of that name."""
    out: dict[str, set[int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            policy = os.sched_getscheduler(int(tid))
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        out.setdefault(comm, set()).add(policy)
    return out


def settled(pid: int, expect: dict[str, set[int]], timeout: float = 10.0) -> dict[str, set[int]]:
    """The process's policies once every expected thread shows its expected policy, or as
    they stand at the timeout. A thread is named and sets its policy itself, when it first
    runs, which may come a moment after the call that spawned it returned."""
    deadline = time.monotonic() + timeout
    while True:
        found = policies(pid)
        if all(found.get(comm) == want for comm, want in expect.items()) or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_the_python_wal_group_commit_thread_runs_under_sched_batch(tmp_path):
    WAL = twins.load("wal", "python")
    with WAL(str(tmp_path / "p.wal"), fsync="group") as w:
        w.append(b"one")
        deadline = time.monotonic() + 10
        while w.durable_count < 1 and time.monotonic() < deadline:  # the flusher has run
            time.sleep(0.01)
        assert w._flusher is not None and w._flusher.native_id is not None
        assert os.sched_getscheduler(w._flusher.native_id) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "only the flusher thread changes"


def test_the_rust_wal_group_commit_thread_runs_under_sched_batch(tmp_path):
    WAL = twins.load("wal", "rust")
    with WAL(str(tmp_path / "r.wal"), fsync="group") as w:
        w.append(b"one")
        found = settled(os.getpid(), {"gatewaylab-wal-": {os.SCHED_BATCH}})
        # every such thread in this process (earlier tests' included) is a background thread
        assert found.get("gatewaylab-wal-") == {os.SCHED_BATCH}, found
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


@pytest.mark.parametrize("mode", ["rs-core", "rs-server"])
def test_a_rust_rungs_ledger_threads_yield_and_its_request_threads_do_not(native_mock, gateway_factory, mode):
    gw = gateway_factory(native_mock.url, mode=mode, threads=1)
    status, _, _ = http("POST", gw.url + "/v1/chat/completions", chat_body(), auth())
    assert status == 200
    (pid,) = gw.worker_pids()
    # rs-core: its Tokio workers; rs-server with one thread: a current-thread runtime on the main thread
    workers = "gatewaylab-rs-c" if mode == "rs-core" else "gatewaylab-serv"
    found = settled(pid, {"gatewaylab-ledg": {os.SCHED_BATCH}, "gatewaylab-wal-": {os.SCHED_BATCH}})
    assert found.get("gatewaylab-ledg") == {os.SCHED_BATCH}, found
    assert found.get("gatewaylab-wal-") == {os.SCHED_BATCH}, found
    assert found.get(workers) == {os.SCHED_OTHER}, found
    # the main thread (rs-core: the Python loop serving requests; its tid is the pid)
    assert os.sched_getscheduler(pid) == os.SCHED_OTHER
