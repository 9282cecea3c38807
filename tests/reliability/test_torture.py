"""`gatewaylab torture` at a small size on every rung: a few SIGKILLs under load, each
followed by the checks of harness/infra/torture.py (WAL verifies, nothing durable lost, every
observed root a prefix, restart on the same ledger)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.infra.torture import TortureError, run_torture
from tests.reliability.rungs import DURABLE_ACK_RUNGS, RUNGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", RUNGS)
def test_kills_lose_nothing(mode, tmp_path):
    r = run_torture(
        mode, kills=3, rate=150, seed=12, ledger_dir=str(tmp_path / "ledger"), min_run_s=0.3, max_run_s=0.9
    )
    assert r.failures == []
    assert (r.kills, r.records_lost, r.roots_failed, r.refused, r.restart_mismatches) == (3, 0, 0, 0, 0)
    assert r.roots_checked >= 3  # at least one observed root per kill, plus the recovered states
    assert r.final_count > 0 and r.requests_ok > 0


@pytest.mark.parametrize("mode", DURABLE_ACK_RUNGS)
def test_durable_ack_loses_no_acknowledged_answer(mode, tmp_path):
    r = run_torture(
        mode,
        kills=3,
        ack="durable",
        rate=100,
        seed=21,
        ledger_dir=str(tmp_path / "ledger"),
        min_run_s=0.3,
        max_run_s=0.8,
    )
    assert r.failures == [] and r.ok
    assert r.acked > 0 and r.acked_missing == 0
    assert r.records_lost == 0 and r.roots_failed == 0


def test_granian_master_and_worker_are_both_killed(tmp_path):
    r = run_torture(
        "py+rs",
        kills=2,
        server="granian",
        rate=150,
        seed=3,
        ledger_dir=str(tmp_path / "ledger"),
        min_run_s=0.3,
        max_run_s=0.6,
    )
    assert r.ok, r.failures
    assert r.kills == 2 and r.final_count > 0


def test_fsync_always(tmp_path):
    r = run_torture(
        "py",
        kills=2,
        fsync="always",
        rate=150,
        seed=5,
        ledger_dir=str(tmp_path / "ledger"),
        min_run_s=0.3,
        max_run_s=0.6,
    )
    assert r.ok, r.failures


def test_bad_options_are_one_line_errors():
    with pytest.raises(TortureError, match="did not start"):
        run_torture("no-such-rung", kills=1)
    for argv in (
        ["--mode", "no-such-rung", "--kills", "1"],
        ["--mode", "py", "--kills", "-1"],
        ["--mode", "py", "--kills", "1", "--rate", "0"],
    ):
        p = subprocess.run(
            [sys.executable, "-m", "harness.cli", "torture", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 1
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("gatewaylab torture: error:"), p.stderr
        assert "Traceback" not in p.stderr
