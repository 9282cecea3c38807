"""The config has one validator, gateway/config.py, for every rung: `gatewaylab serve --mode
rs-server` with a bad config is refused in Python, in one line naming the field, before the
binary starts; the binary only deserializes the normalized config it is given, and refuses a
spec that is out of step with gateway/config.py (an unknown field) in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from gateway import config as cfgmod
from gateway.errors import ConfigError
from gateway.rungs.rs_server import binary_path

KEY = "0" * 64
BASE = {
    "model_list": [{"model_name": "m", "upstream": {"base_url": "http://127.0.0.1:9"}}],
    "keys": [{"id": "a", "sha256": KEY}],
    "ledger": {"dir": "led"},
}


def _serve(path, *flags) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "serve",
            "--config",
            str(path),
            "--mode",
            "rs-server",
            "--port",
            "0",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"keys": [{"id": "a", "sha256": "ABC"}]},
        {"limits": {"max_body_bytes": "1MB"}},
        {"tracing": {"mode": "sampled:2"}},
        {"colour": "blue"},
    ],
)
def test_a_bad_config_is_refused_by_the_one_validator_before_the_binary(tmp_path, bad):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({**BASE, **bad}))
    with pytest.raises(ConfigError) as e:
        cfgmod.load(str(path))
    p = _serve(path)
    assert p.returncode == 1 and p.stderr.splitlines() == [f"gatewaylab serve: error: {e.value}"], p.stderr
    assert not (tmp_path / "led").exists()


def _spec(tmp_path) -> dict:
    cfg = cfgmod.from_mapping(BASE, env={}, base_dir=str(tmp_path))
    spec = cfgmod.engine_spec(cfg, 1)
    spec["engine"]["rung"] = "rs-server"
    spec["server"] = {
        "host": "127.0.0.1",
        "port": 0,
        "reuse_port": False,
        "worker": None,
        "python": sys.executable,
    }
    return spec


def _binary(tmp_path, spec: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return subprocess.run([binary_path(), "--spec", str(path)], capture_output=True, text=True, timeout=30)


def test_the_binary_refuses_a_spec_out_of_step_in_one_line(tmp_path):
    spec = _spec(tmp_path)
    spec["config"]["limits"]["max_in_flght"] = 3
    p = _binary(tmp_path, spec)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert (
        lines[0].startswith("gatewaylab-server: error: --spec ")
        and "unknown field `max_in_flght`" in lines[0]
    )
    p = subprocess.run(
        [binary_path(), "--config", "gateway.yaml"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "gatewaylab-server: error: usage: gatewaylab-server --spec FILE  (JSON: see gateway/rungs/rs_server.py)"
    ]


def test_the_binary_takes_the_normalized_config_as_it_is(tmp_path):
    spec = _spec(tmp_path)
    spec["server"]["host"] = "256.0.0.1"  # gets past the spec to binding, and no further
    p = _binary(tmp_path, spec)
    assert p.returncode == 1 and "cannot listen" in p.stderr, p.stderr
