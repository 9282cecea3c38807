"""LiteLLM proxy (PyPI `litellm[proxy]`, its own venv in .peers/litellm) as sweep targets.

Three targets, one config: the proxy serves `/v1/messages` with an Anthropic upstream (the
native mock speaks Anthropic messages) and `/v1/chat/completions` with an OpenAI upstream.

| target | route | LITELLM_RUST | served by |
|---|---|---|---|
| `litellm` | /v1/messages | false | LiteLLM's Python path |
| `litellm-rust` | /v1/messages | true | LiteLLM's Rust bridge (`x-litellm-rust: true` on the answer) |
| `litellm-chat` | /v1/chat/completions | false | Python (1.108's rollout keeps this route Python-only) |

`check` verifies on a real answer that the path is the one the target claims: the
`x-litellm-rust` response header is `true` exactly on `litellm-rust`. One worker (the
profile's gateway cores pin it); no database, a master key (LiteLLM refuses to start without one),
telemetry off and the model cost map read from the wheel, not fetched.

What it runs besides forwarding (`GOVERNANCE`): the master key is checked on every request (no
database, so no virtual keys, per-key limits or spend log); no guardrail, no rate limit
configured, no callback exporting traces or logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.peers._base import CHAT_BODY, MESSAGES_BODY, Governance, PeerTarget, RequestShape
from harness.peers.installer import entry_point

# LiteLLM refuses to start without a strong master key (its own check); every request carries it.
MASTER_KEY = "sk-gatewaylab-" + "5f0c9a7e3b1d4e6f8a2c0b9d7e5f3a1c"


GOVERNANCE = Governance(
    auth=True,
    notes="auth: the master key, compared on every request (no database: any other key gets 400); "
    "no guardrail; no per-key limits (they need the database); spend and error logs off; no callbacks",
)


@dataclass(frozen=True)
class LiteLLMTarget(PeerTarget):
    rust: bool = False
    governance: Governance = GOVERNANCE
    runtime: str = "python"
    ready_path: str = "/health/liveliness"
    path_header: str | None = "x-litellm-rust"

    def write_config(self, mock_url: str, workdir: Path) -> None:
        (workdir / "litellm.yaml").write_text(
            "model_list:\n"
            f"  - model_name: {MESSAGES_BODY['model']}\n"
            "    litellm_params:\n"
            f"      model: anthropic/{MESSAGES_BODY['model']}\n"
            f"      api_base: {mock_url}\n"
            "      api_key: sk-mock\n"
            f"  - model_name: {CHAT_BODY['model']}\n"
            "    litellm_params:\n"
            f"      model: openai/{CHAT_BODY['model']}\n"
            f"      api_base: {mock_url}/v1\n"
            "      api_key: sk-mock\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
            "  turn_off_message_logging: true\n"
            "  drop_params: true\n"
            "general_settings:\n"
            f"  master_key: {MASTER_KEY}\n"
            "  disable_spend_logs: true\n"
            "  disable_error_logs: true\n"
        )

    def argv(self, port: int, workdir: Path, cpus: list[int]) -> list[str]:
        return [
            str(entry_point("litellm")),
            "--config",
            str(workdir / "litellm.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]

    def env(self, mock_url: str, cpus: list[int], port: int) -> dict[str, str]:
        return {
            "LITELLM_RUST": "true" if self.rust else "false",
            "ANTHROPIC_API_KEY": "sk-mock",
            "OPENAI_API_KEY": "sk-mock",
        }

    def request(self, api_key: str, mock_url: str) -> RequestShape:
        base = super().request(api_key, mock_url)
        return RequestShape(
            base.path, {**base.headers, "authorization": f"Bearer {MASTER_KEY}"}, base.body, base.route
        )

    def check(self, status: int, headers: Mapping[str, str], body: bytes) -> str | None:
        bad = super().check(status, headers, body)
        if bad:
            return bad
        flag = headers.get("x-litellm-rust")
        if self.rust and flag != "true":
            return f"expected the Rust bridge to serve {self.route} (x-litellm-rust: true), got {flag!r}"
        if not self.rust and flag == "true":
            return "the Rust bridge served a request with LITELLM_RUST=false"
        return None


TARGETS = {
    "litellm": LiteLLMTarget("litellm", "litellm", route="messages", rust=False),
    "litellm-rust": LiteLLMTarget("litellm-rust", "litellm", route="messages", rust=True),
    "litellm-chat": LiteLLMTarget("litellm-chat", "litellm", route="chat", rust=False),
}
