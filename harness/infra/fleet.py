"""A fleet of native mock deployments for router experiments (docs/router.md).

    with start_fleet([{"latency_ms": 1}, {"latency_ms": 1, "error_rate": 0.2}, {"stall_every": 50, "stall_ms": 200}],
                     seed=7) as fleet:
        path = fleet.write_config(tmp_dir, router={"strategy": "latency-based"})
        ... start a gateway with config=path, drive load ...
        fleet.requests()   # chat requests each deployment received (its upstream load)

Each deployment is one `gatewaylab mock` process (native/tools/src/mock.rs) with its own
options: latency/jitter, error status and rate, dropped connections, stalls (every N-th
request freezes that server for stall_ms). Seeds differ per deployment (seed + index), so
their injected errors are independent but reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from harness.infra.native_procs import MockProcess, start_mock

CHAT = "POST /v1/chat/completions"


class Fleet:
    def __init__(self, mocks: list[MockProcess], options: list[dict]):
        self.mocks = mocks
        self.options = options

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.mocks]

    def requests(self, reset: bool = False) -> list[int]:
        """Chat requests each deployment received (every outcome: answered, errored, dropped)."""
        return [sum(m.stats(reset=reset)["by_route"].get(CHAT, {}).values()) for m in self.mocks]

    def reset(self) -> None:
        for m in self.mocks:
            m.reset_stats()

    def model_list(
        self,
        model: str = "mock",
        weights: Iterable[int] | None = None,
        limits: Iterable[Mapping[str, int]] | None = None,
    ) -> list[dict]:
        """LiteLLM-style entries: one per deployment, all named `model` (one group)."""
        weights = list(weights) if weights is not None else [1] * len(self.mocks)
        limits = list(limits) if limits is not None else [{}] * len(self.mocks)
        return [
            {"model_name": model, "upstream": {"kind": "openai", "base_url": url}, "weight": w, **lim}
            for url, w, lim in zip(self.urls, weights, limits)
        ]

    def write_config(
        self,
        directory: str,
        api_key: str,
        router: Mapping[str, Any] | None = None,
        model: str = "mock",
        extra_models: Iterable[Mapping[str, Any]] = (),
        weights: Iterable[int] | None = None,
        limits: Iterable[Mapping[str, int]] | None = None,
        **more: Any,
    ) -> str:
        """A gateway config (gateway/config.py) routing `model` over the fleet, with one client
        key `api_key`, its ledger in `directory`; returns its path. `router=None` still routes
        (a group turns the router on) with the default settings. `more` adds top-level fields."""
        from gateway.stages.auth import hash_key
        from harness.infra.targets import unreachable_limits

        cfg: dict[str, Any] = {
            "model_list": [*self.model_list(model, weights, limits), *map(dict, extra_models)],
            # the key's limits far above the load: the rate limiter runs and never refuses
            "keys": [{"id": "fleet", "sha256": hash_key(api_key), **unreachable_limits()}],
            "ledger": {"dir": os.path.join(directory, "ledger")},
            **more,
        }
        if router is not None:
            cfg["router"] = dict(router)
        path = os.path.join(directory, "fleet-gateway.yaml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        return path

    def stop(self) -> None:
        for m in self.mocks:
            m.stop()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_fleet(options: Iterable[Mapping[str, Any]], seed: int = 0, cpus=None) -> Fleet:
    """Start one mock per options mapping (start_mock's options); all are stopped if one fails."""
    opts = [dict(o) for o in options]
    mocks: list[MockProcess] = []
    try:
        for i, o in enumerate(opts):
            o.setdefault("seed", seed + i)
            mocks.append(start_mock(cpus=cpus, **o))
    except BaseException:
        for m in mocks:
            m.stop()
        raise
    return Fleet(mocks, opts)
