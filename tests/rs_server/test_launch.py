"""Starting rung 3 from Python: the spec the binary gets (the normalized config, the engine's
options, the server's), a missing binary, and rs-server as a sweep mode (one configuration,
interpreter probes not applicable)."""

from __future__ import annotations

import os
import sys

import orjson
import pytest

from gateway.errors import ConfigError
from gateway.options import ServeOptions, build_config
from gateway.rungs import rs_server


def test_the_binary_gets_one_spec_with_the_checked_config_and_the_gateway_cores(tmp_path):
    opts = ServeOptions(
        upstream="http://127.0.0.1:9",
        api_key="k",
        ledger=str(tmp_path / "l"),
        mode="rs-server",
        stages="none",
        audit="off",
        ack="durable",
        max_in_flight=3,
    )
    cfg = build_config(opts)
    s = rs_server.spec(opts, cfg)
    assert set(s) == {"config", "engine", "server"}
    c = s["config"]
    assert c == cfg.normalized()
    assert (c["pipeline"]["stages"], c["pipeline"]["audit"]) == ([], False)
    assert (c["ledger"]["dir"], c["ledger"]["ack"], c["limits"]["max_in_flight"]) == (
        str(tmp_path / "l"),
        "durable",
        3,
    )
    assert c["pipeline"]["models"][0]["url"] == "http://127.0.0.1:9/v1/chat/completions"
    e = s["engine"]
    assert e["rung"] == "rs-server" and e["threads"] == len(os.sched_getaffinity(0))
    assert e["float_sum"] == ("neumaier" if sys.version_info >= (3, 12) else "plain")
    assert s["server"] == {
        "host": "127.0.0.1",
        "port": 0,
        "reuse_port": False,
        "worker": None,
        "python": sys.executable,
    }
    fd = rs_server.spec_fd(s)
    try:
        assert os.get_inheritable(fd)
        assert orjson.loads(os.read(fd, 1 << 20)) == s
        assert rs_server.command(fd) == [rs_server.binary_path(), "--spec", f"/dev/fd/{fd}"]
    finally:
        os.close(fd)


def test_a_missing_binary_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv(rs_server.BIN_ENV, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="make dev"):
        rs_server.binary_path()


def test_rs_server_is_one_sweep_configuration_whatever_the_shells():
    from harness.infra.sweep import _configs

    cfgs = _configs(["py", "rs-server"], None, ["asgi", "fastapi"])
    assert [(c.mode, c.shell) for c in cfgs] == [("py", "asgi"), ("py", "fastapi"), ("rs-server", "-")]
