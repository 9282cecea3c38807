"""The binary reads the Python gateway's YAML config with the same checks: for every bad
config below, its one-line error is the Python ConfigError's message (naming the field), and
a good config is accepted by both."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from gateway import config as cfgmod
from gateway.errors import ConfigError
from gateway.rs_server import DEFAULT_BIN

KEY = "0" * 64
BASE = {
    "model_list": [{"model_name": "m", "upstream": {"base_url": "http://127.0.0.1:9"}}],
    "keys": [{"id": "a", "sha256": KEY}],
    "ledger": {"dir": "led"},
}


def with_(**changes):
    d = {**BASE, **changes}
    return {k: v for k, v in d.items() if v is not None}


BAD = {
    "unknown top field": with_(colour="blue"),
    "no model_list": with_(model_list=None),
    "empty model_list": with_(model_list=[]),
    "model entry not a mapping": with_(model_list=["m"]),
    "model_name missing": with_(model_list=[{"upstream": {"base_url": "http://h"}}]),
    # the router (docs/router.md): the same name twice is a group of deployments
    "group of mixed kinds": with_(
        model_list=[
            *BASE["model_list"],
            {"model_name": "m", "upstream": {"kind": "anthropic", "base_url": "http://h"}},
        ]
    ),
    "deployment weight zero": with_(
        model_list=[{"model_name": "m", "upstream": {"base_url": "http://h"}, "weight": 0}]
    ),
    "deployment rpm a float": with_(
        model_list=[{"model_name": "m", "upstream": {"base_url": "http://h"}, "rpm": 1.5}]
    ),
    "router not a mapping": with_(router=[1]),
    "router unknown field": with_(router={"retries": 2}),
    "router bad strategy": with_(router={"strategy": "fastest"}),
    "router negative retries": with_(router={"num_retries": -1}),
    "router cooldown a float": with_(router={"cooldown_ms": 2.5}),
    "router backoff max below base": with_(router={"backoff_base_ms": 100, "backoff_max_ms": 10}),
    "router fallbacks a mapping": with_(router={"fallbacks": {"m": ["x"]}}),
    "router fallback unknown": with_(router={"fallbacks": [{"m": ["x"]}]}),
    "router fallback to itself": with_(router={"fallbacks": [{"m": ["m"]}]}),
    "router fallback of another kind": with_(
        model_list=[
            *BASE["model_list"],
            {"model_name": "c", "upstream": {"kind": "anthropic", "base_url": "http://h"}},
        ],
        router={"fallbacks": [{"m": ["c"]}]},
    ),
    "bad kind": with_(
        model_list=[{"model_name": "m", "upstream": {"kind": "cohere", "base_url": "http://h"}}]
    ),
    "bad base_url": with_(model_list=[{"model_name": "m", "upstream": {"base_url": "ftp://h"}}]),
    "base_url not a str": with_(model_list=[{"model_name": "m", "upstream": {"base_url": 5}}]),
    "unset api_key_env": with_(
        model_list=[
            {"model_name": "m", "upstream": {"base_url": "http://h", "api_key_env": "GATEWAYLAB_NOPE_UNSET"}}
        ]
    ),
    "no keys": with_(keys=[]),
    "bad sha256": with_(keys=[{"id": "a", "sha256": "ABC"}]),
    "duplicate key id": with_(keys=[{"id": "a", "sha256": KEY}, {"id": "a", "sha256": KEY}]),
    "rpm zero": with_(keys=[{"id": "a", "sha256": KEY, "rpm": 0, "tpm": 5}]),
    "rpm without tpm": with_(keys=[{"id": "a", "sha256": KEY, "rpm": 5}]),
    "rpm a bool": with_(keys=[{"id": "a", "sha256": KEY, "rpm": True, "tpm": 5}]),
    "waf not a mapping": with_(waf=[1]),
    "waf rule bad kind": with_(waf={"rules": [{"id": "r", "kind": "glob", "pattern": "x"}]}),
    "waf rule no pattern": with_(waf={"rules": [{"id": "r", "kind": "literal"}]}),
    "waf rule no id": with_(waf={"rules": [{"kind": "literal", "pattern": "x"}]}),
    "waf rule lookahead": with_(waf={"rules": [{"id": "r", "kind": "regex", "pattern": "a(?=b)"}]}),
    "waf duplicate id": with_(
        waf={
            "rules": [
                {"id": "r", "kind": "literal", "pattern": "x"},
                {"id": "r", "kind": "literal", "pattern": "y"},
            ]
        }
    ),
    "no ledger dir": with_(ledger={"fsync": "group"}),
    "bad fsync": with_(ledger={"dir": "led", "fsync": "sometimes"}),
    "negative group delay": with_(ledger={"dir": "led", "group_delay_ms": -1}),
    "bad queue policy": with_(background={"policy": "spill"}),
    "negative batch window": with_(background={"batch_window_ms": -1.5}),
    "body limit a string": with_(limits={"max_body_bytes": "1MB"}),
    "header limit zero": with_(limits={"max_header_bytes": 0}),
    "bad mode": with_(mode="turbo"),
    "bad impl component": with_(impl={"gpu": "rust"}),
    "bad impl value": with_(impl={"mmr": "c"}),
    "bad stage": with_(stages=["auth", "teleport"]),
    "stages not a list": with_(stages=5),
    "audit not a bool": with_(audit="yes please"),
    "bad shell": with_(shell="django"),
    "bad server": with_(server="gunicorn"),
    "plugin spec": with_(plugins={"pre_call": ["not a module path"]}),
    "plugin timeout": with_(plugins={"pre_call": [], "timeout_ms": 0}),
    "plugin pool": with_(plugins={"max_in_flight": 1.5}),
    "tracing not a mapping": with_(tracing="on"),
    "tracing unknown field": with_(tracing={"colour": "blue"}),
    "tracing bad mode": with_(tracing={"mode": "sometimes"}),
    "tracing ratio out of range": with_(tracing={"mode": "sampled:2"}),
    "tracing mode a number": with_(tracing={"mode": 5}),
    "tracing bad endpoint": with_(tracing={"mode": "on", "endpoint": "ftp://h"}),
}


def binary_error(path) -> str:
    p = subprocess.run(
        [DEFAULT_BIN, "--config", str(path), "--port", "0"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gatewaylab-server: error: "), p.stderr
    return lines[0][len("gatewaylab-server: error: ") :]


@pytest.mark.parametrize("name", list(BAD))
def test_the_binary_names_the_field_as_python_does(tmp_path, name, monkeypatch):
    monkeypatch.delenv("GATEWAYLAB_MODE", raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(BAD[name]))
    with pytest.raises(ConfigError) as e:
        cfgmod.load(str(path))
    assert binary_error(path) == str(e.value)


def test_a_missing_file_and_bad_yaml(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        cfgmod.load(str(path))
    assert binary_error(path) == str(e.value)
    path.write_text("model_list: [unclosed\n")
    assert binary_error(path).startswith(f"config file {path}: invalid YAML: ")


def test_the_default_waf_rules_are_the_same(tmp_path):
    """The binary's copy of the shipped rule set equals gateway.stages.waf.default_rules()."""
    from gateway.stages.waf import default_rules

    rules = default_rules()
    # a config that lists them again trips the duplicate-id check on the first one, in both
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(with_(waf={"rules": rules})))
    with pytest.raises(ConfigError) as e:
        cfgmod.load(str(path))
    assert binary_error(path) == str(e.value)
    # and with the defaults off, the same rules as extra rules are accepted by both
    path.write_text(yaml.safe_dump(with_(waf={"default_rules": False, "rules": rules}), sort_keys=False))
    cfgmod.load(str(path))
    p = subprocess.run(
        [DEFAULT_BIN, "--config", str(path), "--port", "0", "--audit", "off", "--host", "256.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "cannot listen" in p.stderr, p.stderr  # got past the config to binding
