"""rs-core refuses what it cannot run (gateway/ladder.py), with a message that names the
rung, the field and the way out, before anything is opened."""

from __future__ import annotations

import pytest
import yaml

from gateway.errors import ConfigError
from gateway.options import ServeOptions, build_config
from gateway.stages.auth import hash_key


def test_rs_core_refuses_python_plugins(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "mock", "upstream": {"base_url": "http://127.0.0.1:9"}}],
                "keys": [{"id": "k", "sha256": hash_key("sk")}],
                "ledger": {"dir": str(tmp_path / "ledger")},
                "plugins": {"pre_call": ["gateway.plugins:example_keyword_filter"]},
            }
        )
    )
    with pytest.raises(ConfigError, match=r"^plugins\.pre_call: not available on rs-core \(.*rs-server"):
        build_config(ServeOptions(config=str(path), mode="rs-core"))
    assert not (tmp_path / "ledger").exists(), "nothing may be opened before the refusal"
