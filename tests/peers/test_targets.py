"""The target table: rungs and peers by name, one line for a mistake."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from harness.cli import main as cli_main
from harness.infra.sweep import parse_rates
from harness.infra.targets import RUNGS, TARGETS, kind, parse_targets


def test_rungs_and_peers_are_one_table():
    assert set(RUNGS) <= set(TARGETS)
    assert {"litellm", "litellm-rust", "litellm-chat", "portkey", "noveum"} <= set(TARGETS)
    assert kind(TARGETS["py+rs"]) == "rung" and kind(TARGETS["noveum"]) == "peer"
    assert TARGETS["litellm"].route == TARGETS["litellm-rust"].route == "messages"
    assert parse_targets("py,py+rs, noveum,py") == ["py", "py+rs", "noveum"]
    assert parse_targets(["py+rs,portkey", "litellm"]) == ["py+rs", "portkey", "litellm"]


def test_bad_targets_and_rates_are_clear_errors(capsys):
    with pytest.raises(ConfigError, match="unknown target 'bifrost'"):
        parse_targets("py,bifrost")
    with pytest.raises(ConfigError, match="need finite numbers > 0"):
        parse_rates("100,0")
    with pytest.raises(ConfigError, match="bad rates"):
        parse_rates("fast")
    assert parse_rates("1000, 250,500") == [250.0, 500.0, 1000.0]
    assert cli_main(["sweep", "--targets", "py,nope", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown target 'nope'" in err


def test_peers_cli_rejects_unknown_and_uninstallable(capsys):
    assert cli_main(["peers", "install", "nope"]) == 1
    assert "unknown peer 'nope'" in capsys.readouterr().err
    assert cli_main(["peers", "install", "bifrost"]) == 1
    assert "Go module proxy refuses" in capsys.readouterr().err


def test_sweep_magic_takes_targets_and_rates():
    from lab_ext.magics import sweep_kwargs, sweep_parser

    kw = sweep_kwargs(
        sweep_parser().parse_args(
            [
                "--targets",
                "py+rs,noveum",
                "litellm-rust",
                "--rates",
                "100,400",
                "--p99-cap-ms",
                "20",
                "--stream",
                "--upstream-itl-ms",
                "5",
            ]
        )
    )
    assert kw["targets"] == ["py+rs", "noveum", "litellm-rust"] and kw["rates"] == "100,400"
    assert kw["p99_cap_ms"] == 20 and kw["stream"] is True and kw["upstream"]["itl_ms"] == 5
