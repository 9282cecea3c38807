"""Gateway configs the harness starts its targets with, written as the YAML every rung reads.

    from harness.configs import benchmark_config, write_benchmark_config
    path = write_benchmark_config(run_dir / "gateway.yaml", mock.url, API_KEY, ledger_dir)
    start_gateway(None, None, mode="rs-server", config=str(path), ...)

`benchmark_config` is the zero-config default (`gateway.config.embedded`: one model `mock`
with passthrough, one key `default`) plus per-key `rpm`/`tpm` limits that a benchmark never
reaches. A key without limits makes the rate limiter return at once on every rung, so a
label that says "every stage on" would not be true; with these limits the limiter runs its
real check (refill, take, compare) on every request and never answers 429.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Per-key limits no benchmark reaches: a run sends at most a few hundred thousand requests a
# minute with bodies of a few hundred bytes ((bytes + 3) // 4 tokens each).
UNREACHED_RPM = 1_000_000_000
UNREACHED_TPM = 1_000_000_000_000


def benchmark_config(
    upstream: str,
    api_key: str,
    ledger_dir: str | os.PathLike,
    *,
    rpm: int = UNREACHED_RPM,
    tpm: int = UNREACHED_TPM,
    kind: str = "openai",
) -> dict[str, Any]:
    """The config mapping (validated: ConfigError on a bad value); see the module docstring."""
    from gateway.config import from_mapping
    from gateway.stages.auth import hash_key

    cfg = {
        "model_list": [{"model_name": "mock", "upstream": {"kind": kind, "base_url": upstream}}],
        "passthrough": True,
        "keys": [{"id": "default", "sha256": hash_key(api_key), "rpm": int(rpm), "tpm": int(tpm)}],
        "ledger": {"dir": os.fspath(ledger_dir)},
    }
    from_mapping(cfg, env={})  # refuse here, not in a gateway started under a profiler
    return cfg


def write_benchmark_config(
    path: str | os.PathLike,
    upstream: str,
    api_key: str,
    ledger_dir: str | os.PathLike,
    **limits: int,
) -> Path:
    """Write `benchmark_config(...)` as YAML to `path`; returns the path."""
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(benchmark_config(upstream, api_key, ledger_dir, **limits), sort_keys=False))
    return p
