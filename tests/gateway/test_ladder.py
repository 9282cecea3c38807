"""Every (rung, option) pair of the table of rungs (gateway/ladder.py): each option either
works on the rung, shown by its effect in /health (or on disk), or is refused before anything
starts with one line that names the rung, by the command line and by every config path.
Nothing is silently ignored."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.ladder import RUNGS, Rung
from gateway.options import ServeOptions, build_config
from gateway.serving.launch import start_gateway
from gateway.stages.auth import hash_key
from harness.cli import main as cli
from tests.gateway.helpers import API_KEY

pytestmark = pytest.mark.slow
HOOK = "gateway.plugins:example_keyword_filter"


@dataclass(frozen=True)
class Option:
    name: str
    supported: Callable[[Rung], bool]
    flags: tuple[str, ...] = ()  # on the command line
    kw: dict = field(default_factory=dict)  # ServeOptions / start_gateway keywords
    yaml: dict = field(default_factory=dict)  # in the config file instead
    effect: Callable[[dict, str], bool] = lambda h, ledger: True


def _worker0(h: dict) -> dict:
    return h["workers"]["workers"][0]


OPTIONS = [
    Option(
        "--impl mmr=python",
        lambda r: r.per_component,
        ("--impl", "mmr=python"),
        {"impl": ("mmr=python",)},
        effect=lambda h, _: h["switches"]["mmr"] == "python",
    ),
    Option(
        "--shell fastapi",
        lambda r: "fastapi" in r.shells,
        ("--shell", "fastapi"),
        {"shell": "fastapi"},
        effect=lambda h, _: h["shell"] == "fastapi",
    ),
    Option(
        "--server granian",
        lambda r: "granian" in r.servers,
        ("--server", "granian"),
        {"server": "granian"},
        effect=lambda h, _: h["server"] == "granian",
    ),
    Option(
        "--threads 2",
        lambda r: r.threads,
        ("--threads", "2"),
        {"threads": 2},
        effect=lambda h, _: _worker0(h)["threads"] == 2,
    ),
    Option(
        "--workers 2",
        lambda r: True,
        ("--workers", "2"),
        {"workers": 2},
        effect=lambda h, _: (h["workers"]["count"], h["workers"]["layout"]) == (2, "workers"),
    ),
    *(
        Option(
            f"--ledger-layout {layout}",
            lambda r, layout=layout: layout in r.layouts,
            ("--ledger-layout", layout),
            {"ledger_layout": layout},
            effect=lambda h, _, layout=layout: h["workers"]["ledger_layout"] == layout,
        )
        for layout in ("single", "sharded", "single-writer")
    ),
    Option(
        "--ack durable",
        lambda r: True,
        ("--ack", "durable"),
        {"ack": "durable"},
        effect=lambda h, _: h["audit"]["ack"] == "durable",
    ),
    Option(
        "--max-in-flight 7",
        lambda r: True,
        ("--max-in-flight", "7"),
        {"max_in_flight": 7},
        effect=lambda h, _: h["limits"]["max_in_flight"] == 7,
    ),
    Option(
        "--stages none",
        lambda r: True,
        ("--stages", "none"),
        {"stages": "none"},
        effect=lambda h, _: h["stages"] == "none",
    ),
    Option(
        "--audit off",
        lambda r: True,
        ("--audit", "off"),
        {"audit": "off"},
        effect=lambda h, _: h["audit_enabled"] is False,
    ),
    Option(
        "--tracing sampled:0",
        lambda r: True,
        ("--tracing", "sampled:0"),
        {"tracing": "sampled:0"},
        effect=lambda h, _: h["tracing"] == "sampled:0.0",
    ),
    Option(
        "--ledger DIR with a config without ledger.dir",
        lambda r: True,
        effect=lambda h, ledger: os.path.exists(os.path.join(ledger, "audit.wal")),
    ),
    Option(
        "plugins.pre_call",
        lambda r: r.plugins is not None,
        yaml={"plugins": {"pre_call": [HOOK]}},
        effect=lambda h, _: h["plugins"]["pre_call"] == [HOOK],
    ),
    Option(
        "background.queue_size",
        lambda r: r.background,
        yaml={"background": {"queue_size": 7}},
        effect=lambda h, _: h["queue"]["size"] == 7,
    ),
    Option(
        "shell (in the config)",
        lambda r: bool(r.shells),
        yaml={"shell": "fastapi"},
        effect=lambda h, _: h["shell"] == "fastapi",
    ),
]
PAIRS = [(mode, o) for mode in RUNGS for o in OPTIONS]


def _config(tmp_path, upstream: str, extra: dict) -> str:
    import yaml

    doc: dict[str, Any] = {
        "model_list": [{"model_name": "mock", "upstream": {"base_url": upstream}}],
        "passthrough": True,
        "keys": [{"id": "default", "sha256": hash_key(API_KEY)}],
        **extra,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_the_matrix_covers_every_rung_and_both_outcomes():
    outcomes = {(mode, o.supported(RUNGS[mode])) for mode, o in PAIRS}
    assert {m for m, _ in outcomes} == set(RUNGS)
    assert {ok for _, ok in outcomes} == {True, False}


@pytest.mark.parametrize("mode,option", PAIRS, ids=[f"{m}:{o.name}" for m, o in PAIRS])
def test_each_option_works_or_is_refused_naming_the_rung(mode, option, native_mock, tmp_path, capsys):
    ledger = str(tmp_path / "ledger")
    config = _config(tmp_path, native_mock.url, option.yaml)
    opts = ServeOptions(config=config, ledger=ledger, mode=mode, **option.kw)
    if not option.supported(RUNGS[mode]):
        with pytest.raises(ConfigError) as e:
            build_config(opts)
        msg = str(e.value)
        assert "\n" not in msg and f"not available on {mode} (" in msg, msg
        # the command line says the same, in one line, and starts nothing
        argv = ["serve", "--config", config, "--ledger", ledger, "--mode", mode, "--port", "0", *option.flags]
        assert cli(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"gatewaylab serve: error: {msg}"], err
        assert not os.path.exists(ledger), "nothing may be opened before the refusal"
        return
    gw = start_gateway(None, None, mode=mode, config=config, ledger_dir=ledger, **option.kw)
    try:
        health = gw.health()
        assert health["mode"] == mode
        assert option.effect(health, ledger), json.dumps(health, indent=1)
    finally:
        assert gw.stop() == 0, gw.output()
