"""Peer gateways against their real installs (`make test` runs `gatewaylab peers install`
first): each adapter in a short closed-loop cell and one open-loop step with non-zero 2xx
counts and the process tree's RSS recorded; LiteLLM's `x-litellm-rust` answer header on both
of its /v1/messages targets; a peer that cannot start is a failed cell with its reason while
the sweep goes on; install is idempotent and `list` names what cannot be installed."""

from __future__ import annotations

import psutil
import pytest

from harness import peers
from harness.cli import main as cli_main
from harness.infra.sweep import run_sweep

pytestmark = pytest.mark.slow

PEER_TARGETS = ["litellm", "litellm-rust", "litellm-chat", "portkey", "noveum"]
SMALL = dict(
    profile="xeon-4c",
    duration_s=1.0,
    warmup_s=0.3,
    repeat=1,
    gil=False,
    capacity=False,
    report=False,
    progress=False,
)


def _children() -> set[int]:
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    }


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    out = tmp_path_factory.mktemp("peer-runs")
    before = _children()
    closed = run_sweep(targets=["py+rs", *PEER_TARGETS], concurrency=(4,), out=out, name="closed", **SMALL)
    opened = run_sweep(targets=PEER_TARGETS, rates=[20], out=out, name="open", **SMALL)
    return {"closed": closed, "open": opened, "leftovers": _children() - before}


def test_install_is_idempotent_and_list_names_bifrost(capsys):
    missing = [r["peer"] for r in peers.listing() if r["status"] not in ("installed", "not installable")]
    assert not missing, f"run `gatewaylab peers install` first (make test does): {missing}"
    lines: list[str] = []
    peers.install(log=lines.append)  # nothing to do: every pinned version is on disk
    assert len(lines) == 3 and all("already installed" in ln for ln in lines), lines
    man = peers.manifest()["peers"]
    for name, pin in peers.pins().items():
        if pin.get("installable", True):
            assert man[name]["version"] == pin["version"] and man[name]["entry"]
    assert cli_main(["peers", "list"]) == 0
    out = capsys.readouterr().out
    assert "| bifrost |" in out and "Go module proxy refuses" in out
    for name in ("litellm", "portkey", "noveum"):
        assert (
            f"| {name} | {peers.pins()[name]['version']} | {peers.pins()[name]['version']} | installed" in out
        )


@pytest.mark.parametrize("loop", ["closed", "open"])
@pytest.mark.parametrize("target", PEER_TARGETS)
def test_each_peer_serves_through_the_sweep(sweeps, loop, target):
    t = sweeps[loop].table
    row = t[t["mode"] == target].iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["target_kind"] == "peer" and row["peer_version"] == peers.installed_version(
        target.split("-")[0]
    )
    assert row["requests"] > 0 and row["rps"] > 0  # 2xx answers
    assert row["rss_peak_mb"] > 0
    cpu = row["cpu_user_s"] + row["cpu_sys_s"]
    assert cpu == cpu and cpu >= 0  # measured (/proc); Noveum at 20 req/s spends less than one 10 ms tick
    if loop == "closed":
        assert cpu > 0
    assert row["ovh_p50_us"] == row["ovh_p50_us"]  # the direct baseline on its route exists
    if loop == "open":
        assert row["rate"] == 20 and row["concurrency"] == 0


def test_litellm_header_confirms_the_path(sweeps):
    t = sweeps["closed"].table.set_index("mode")
    # ... and LiteLLM refuses a wrong key (its governance says it checks the master key)
    # (400 "No connected db.": a key that is not the master key is looked up in a database it has not)
    assert t.loc["litellm-rust", "path_check"] == "status=200,x-litellm-rust=true,wrong_key=400"
    assert t.loc["litellm", "path_check"] == "status=200,x-litellm-rust=None,wrong_key=400"
    assert t.loc["litellm", "route"] == t.loc["litellm-rust", "route"] == "messages"
    assert t.loc["litellm-chat", "route"] == "chat"
    assert sweeps["closed"].meta["peers"] == {
        p: peers.installed_version(p) for p in ("litellm", "noveum", "portkey")
    }


def test_peer_rows_carry_the_governance_matrix_they_ran(sweeps):
    """Peers are labelled as shipped, with what that includes; the auth claim was checked with
    a wrong key when each started (Portkey and Noveum pass it on to the upstream)."""
    t = sweeps["closed"].table.set_index("mode")
    for target in PEER_TARGETS:
        row = t.loc[target]
        assert row["governance"] == "shipped" and row["governance_notes"], target
        assert not (row["gov_waf"] or row["gov_ratelimit"] or row["gov_ledger"] or row["gov_tracing"]), target
        assert row["stage_check"].startswith("n/a") and row["claimed_stages"] == ""
    assert t.loc["litellm-chat", "gov_auth"] and t.loc["litellm-chat", "path_check"].endswith("wrong_key=400")
    for target in ("portkey", "noveum"):
        assert not t.loc[target, "gov_auth"] and t.loc[target, "path_check"] == "status=200,wrong_key=200"
    ours = t.loc["py+rs"]
    assert ours["governance"] == "on" and ours["gov_auth"] and ours["gov_ratelimit"] and ours["gov_ledger"]
    assert "ratelimit=" in ours["stage_check"]


def test_rungs_and_peers_share_one_run_and_leave_nothing_behind(sweeps):
    t = sweeps["closed"].table
    assert set(t["mode"]) == {"py+rs", *PEER_TARGETS}
    assert t.loc[t["mode"] == "py+rs", "target_kind"].iloc[0] == "rung"
    assert sweeps["leftovers"] == set()


def test_a_peer_that_cannot_start_is_a_failed_cell_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAYLAB_PEERS_DIR", str(tmp_path / "empty"))  # nothing installed there
    res = run_sweep(targets=["portkey", "py+rs"], concurrency=(2,), out=tmp_path, name="missing", **SMALL)
    t = res.table.set_index("mode")
    assert t.loc["portkey", "status"] == "failed"
    assert (
        "peer did not start" in t.loc["portkey", "error"]
        and "gatewaylab peers install portkey" in t.loc["portkey", "error"]
    )
    assert t.loc["py+rs", "status"] == "ok"


def test_open_loop_ladder_stops_at_the_first_unsustained_rate(tmp_path):
    # a cap no gateway meets (1 µs): the first rate fails, the rest are skipped, none sustained
    res = run_sweep(
        targets=["noveum"], rates=[10, 20, 40], p99_cap_ms=0.001, out=tmp_path, name="ladder", **SMALL
    )
    t = res.table.sort_values("rate")
    assert list(t["status"]) == ["ok", "skipped", "skipped"]
    assert "ladder stopped at 10/s" in t["error"].iloc[1]
    from harness.results.stats import sustainable_rates

    s = sustainable_rates(res.table, p99_cap_us=1.0)
    assert s["sustainable_rate"].isna().all() and s["first_failed_rate"].iloc[0] == 10
