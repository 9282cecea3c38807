"""rs-core refuses what it cannot run, with a message that names the field and the way out."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.config import from_mapping
from gateway.errors import ConfigError
from gateway.rs_core import RsCoreGateway
from gateway.stages.auth import hash_key
from gateway.twins import Switches


def test_rs_core_refuses_python_plugins(tmp_path):
    cfg = from_mapping(
        {
            "model_list": [{"model_name": "mock", "upstream": {"base_url": "http://127.0.0.1:9"}}],
            "keys": [{"id": "k", "sha256": hash_key("sk")}],
            "ledger": {"dir": str(tmp_path / "ledger")},
            "plugins": {"pre_call": ["gateway.plugins:example_keyword_filter"]},
        },
        env={},
    )
    with pytest.raises(ConfigError, match=r"^plugins\.pre_call: not available on rs-core"):
        RsCoreGateway(dataclasses.replace(cfg, switches=Switches("rs-core")))
    assert not (tmp_path / "ledger").exists(), "nothing may be opened before the refusal"
