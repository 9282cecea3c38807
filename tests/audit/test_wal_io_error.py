"""A write or fsync that fails stops the WAL, in both twins alike: the failing call raises the
OS error, every later append, flush or batch raises WalError ("stopped after an I/O error"),
nothing is counted that was not written whole, close still releases the file and its lock,
and the next open recovers exactly the frames written whole (the torn frame is cut off).
A batch written in one call (fsync none, group) that fails part-way is not counted by the
writer, yet its frames that reached the file whole come back on the next open: the log then
holds records whose requests were answered 503 `audit_unavailable` under `ledger.ack:
durable`. Nothing acknowledged is lost and every root served before is a prefix of the
recovered log; a record may exist for an answer that was an error.

Stopping rather than retrying is the safe answer to both kinds of failure: a retried write
could leave a torn frame in the middle of the log, and after a failed fsync the kernel may
have dropped the dirty pages it could not write, so a later fsync that succeeds proves
nothing about them. The failing disk here is the file-size limit (RLIMIT_FSIZE: a write past
it fails with EFBIG, as a full disk fails with ENOSPC), set in a child process so pytest's
own files are not limited. tests/reliability/test_disk_full.py runs the same failure through
every rung's gateway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import twins

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = r"""
import json, os, resource, sys
from gateway import twins
impl, fsync, path = sys.argv[1], sys.argv[2], sys.argv[3]
WAL = twins.load("wal", impl)
out = {}
w = WAL(path, fsync=fsync)
first = [b"r%02d:" % i + b"x" * 96 for i in range(5)]     # 108-byte frames
for p in first:
    w.append(p)
w.flush()
size = os.path.getsize(path)
# room for two more frames and part of a third
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 2 * 108 + 50, resource.RLIM_INFINITY))
batch = [b"b%02d:" % i + b"y" * 96 for i in range(3)]
try:
    w.append_many(batch)
    out["batch"] = "ok"
except Exception as e:
    out["batch"] = type(e).__name__
    out["batch_is_wal_error"] = type(e).__name__ == "WalError"
out["count_after_batch"] = w.count
out["durable_after_batch"] = w.durable_count
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
later = []
for op in (lambda: w.append(b"later"), lambda: w.append_many([b"a", b"b"]), w.flush):
    try:
        op()
        later.append("ok")
    except Exception as e:
        later.append([type(e).__name__, str(e).replace(path, "PATH")])
out["later"] = later
out["count_after_later"] = w.count
try:
    w.close()
    out["close"] = "ok"
except Exception as e:
    out["close"] = [type(e).__name__, str(e).replace(path, "PATH")]
w2 = WAL(path, fsync=fsync)   # same process: the lock was released
out["recovery"] = w2.recovery
w2.append(b"after")
out["count_reopened"] = w2.count
w2.close()
replayed = WAL.replay(path)
out["replayed_prefix_ok"] = replayed[:5] == first and replayed[-1] == b"after"
out["replayed_batch"] = [p[:3].decode() for p in replayed[5:-1]]
print(json.dumps(out))
"""


def _run(impl: str, fsync: str, path: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", SCENARIO, impl, fsync, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.mark.parametrize("fsync", ["none", "group", "always"])
def test_a_failed_write_stops_the_wal_the_same_way_in_both_twins(tmp_path, fsync):
    got = {impl: _run(impl, fsync, tmp_path / f"{impl}.wal") for impl in twins.IMPLS}
    py, rs = got["python"], got["rust"]
    assert py == rs, got
    # the batch fails with the OS error itself (EFBIG), not a WalError
    assert py["batch"] == "OSError" and py["batch_is_wal_error"] is False
    kept = ["b00", "b01"]  # the frames of the batch that fit below the limit
    if fsync == "always":  # record by record: the two that fit are written, fsynced, counted
        assert (py["count_after_batch"], py["durable_after_batch"]) == (7, 7)
    else:  # one write for the batch, which failed: the writer counts none of it
        assert py["count_after_batch"] == 5
    stopped = ["WalError", "WAL PATH stopped after an I/O error: File too large (os error 27)"]
    assert py["later"] == [stopped, stopped, stopped]
    assert py["count_after_later"] == py["count_after_batch"]
    assert py["close"] == "ok"
    # reopened: exactly the frames written whole; the torn one (50 bytes) cut off
    assert py["recovery"] == {"records": 5 + len(kept), "truncated_bytes": 50}
    assert py["replayed_prefix_ok"] and py["replayed_batch"] == kept
    assert py["count_reopened"] == 6 + len(kept)


LEDGER_SCENARIO = r"""
import json, os, resource, sys
from gateway.audit.ledger import AuditLedger
from gateway.twins import Switches
mode, d = sys.argv[1], sys.argv[2]
led = AuditLedger(d, fsync="group", switches=Switches.resolve(mode))
for i in range(5):
    led.append(b"r%02d:" % i + b"x" * 96)
root = led.root()
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(led.path) + 50, resource.RLIM_INFINITY))
out = {}
try:
    led.append(b"torn" * 30)
except OSError as e:
    out["append"] = type(e).__name__
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
out["count"], out["root_kept"] = led.count, led.root() == root
try:
    led.close()   # the checkpoint fails on the stopped WAL; the WAL and the store are released all the same
    out["close"] = "ok"
except OSError as e:
    out["close"] = type(e).__name__
again = AuditLedger(d, fsync="group", switches=Switches.resolve(mode))
out["reopened"], out["reopened_root_kept"] = again.count, again.root() == root
again.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", ["py", "py+rs"])
def test_a_ledger_whose_wal_stopped_still_closes_and_reopens(tmp_path, mode):
    r = subprocess.run(
        [sys.executable, "-c", LEDGER_SCENARIO, mode, str(tmp_path / "ledger")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == {
        "append": "OSError",
        "count": 5,
        "root_kept": True,
        "close": "WalError",
        "reopened": 5,
        "reopened_root_kept": True,
    }
