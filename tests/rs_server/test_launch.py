"""Starting rung 3 from Python: the flags the binary gets, a missing binary, and rs-server as
a sweep mode (one configuration, interpreter probes not applicable)."""

from __future__ import annotations

import os
import sys

import pytest

from gateway import rs_server
from gateway.errors import ConfigError


def test_the_binary_gets_the_serve_flags_and_the_gateway_cores():
    args = rs_server.server_args(
        {
            "upstream": "http://127.0.0.1:9",
            "api_key": "k",
            "ledger": "/tmp/l",
            "port": 0,
            "stages": "none",
            "audit": "off",
            "shell": "asgi",
            "server": "uvicorn",
        }
    )
    assert args[0] == rs_server.binary_path()
    flags = dict(zip(args[1::2], args[2::2]))
    assert (
        flags["--upstream"] == "http://127.0.0.1:9"
        and flags["--api-key"] == "k"
        and flags["--ledger"] == "/tmp/l"
    )
    assert (flags["--stages"], flags["--audit"], flags["--port"]) == ("none", "off", "0")
    assert flags["--threads"] == str(len(os.sched_getaffinity(0)))
    assert flags["--python"] == sys.executable
    assert flags["--float-sum"] == ("neumaier" if sys.version_info >= (3, 12) else "plain")
    with pytest.raises(ConfigError, match="--impl"):
        rs_server.server_args({"impl": ["mmr=python"]})


def test_a_missing_binary_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv(rs_server.BIN_ENV, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="make dev"):
        rs_server.binary_path()


def test_rs_server_is_one_sweep_configuration_whatever_the_shells():
    from harness.sweep import _configs

    cfgs = _configs(["py", "rs-server"], None, ["asgi", "fastapi"])
    assert [(c.mode, c.shell) for c in cfgs] == [("py", "asgi"), ("py", "fastapi"), ("rs-server", "asgi")]
