"""Noveum AI gateway (crates.io `noveum-ai-gateway`, a Rust binary in .peers/noveum) as `noveum`.

No config file: `OPENAI_BASE_URL` points its OpenAI provider at the mock, `HOST=127.0.0.1`
and `PORT` place it, `WORKER_THREADS` is the number of gateway cores (its Tokio runtime),
Nova Guard is off and `RUST_LOG=warn`. Requests carry `x-provider: openai`.

What it runs besides forwarding (`GOVERNANCE`): nothing. Nova Guard (its policies: banned
substrings, regexes, PII, rate limits, cost caps) is off (`NOVEUM_GUARD_ENABLED=false`), it has
no client keys of its own (Authorization goes on to the provider), and its console metrics
exporter is off (`DEBUG_METRICS` unset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.peers._base import Governance, PeerTarget, RequestShape
from harness.peers.installer import entry_point

GOVERNANCE = Governance(
    notes="Nova Guard off (NOVEUM_GUARD_ENABLED=false: no policies, no rate limit); no key of its own "
    "(Authorization goes on to the provider); no ledger; console metrics exporter off",
)


@dataclass(frozen=True)
class NoveumTarget(PeerTarget):
    ready_path: str = "/health"
    governance: Governance = GOVERNANCE
    runtime: str = "native"

    def argv(self, port: int, workdir: Path, cpus: list[int]) -> list[str]:
        return [str(entry_point("noveum"))]

    def env(self, mock_url: str, cpus: list[int], port: int) -> dict[str, str]:
        return {
            "OPENAI_BASE_URL": mock_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKER_THREADS": str(len(cpus)),
        }

    def request(self, api_key: str, mock_url: str) -> RequestShape:
        base = super().request(api_key, mock_url)
        return RequestShape(base.path, {**base.headers, "x-provider": "openai"}, base.body, base.route)


TARGETS = {"noveum": NoveumTarget("noveum", "noveum", route="chat")}
