"""Portkey gateway (npm `@portkey-ai/gateway`, .peers/portkey) as the `portkey` sweep target.

Started as `node build/start-server.js --port=P --headless`; it has no config file: each
request names its upstream with `x-portkey-provider: openai` and
`x-portkey-custom-host: <mock>/v1` (127.0.0.1 is on its default trusted-host list).
Its server binds every interface by default, so a preload (`loopback.cjs`) makes a listen
without a host bind 127.0.0.1 only. `NODE_ENV=production` keeps its log UI off.

What it runs besides forwarding (`GOVERNANCE`): nothing. It has no client keys of its own (the
Authorization header goes on to the provider), no guardrail named in the request, no rate
limit, and the open-source gateway keeps no log store.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.peers._base import Governance, PeerTarget, RequestShape
from harness.peers.installer import PeerError, entry_point

_PRELOAD = Path(__file__).with_name("loopback.cjs")


GOVERNANCE = Governance(
    notes="no key of its own (Authorization goes on to the provider); no guardrail in the request; "
    "no rate limit; no log store (open-source gateway, headless)",
)


@dataclass(frozen=True)
class PortkeyTarget(PeerTarget):
    ready_path: str = "/"
    governance: Governance = GOVERNANCE
    runtime: str = "node"

    def argv(self, port: int, workdir: Path, cpus: list[int]) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise PeerError("node is not installed (the Makefile installs Debian's nodejs)")
        return [node, "--require", str(_PRELOAD), str(entry_point("portkey")), f"--port={port}", "--headless"]

    def request(self, api_key: str, mock_url: str) -> RequestShape:
        base = super().request(api_key, mock_url)
        return RequestShape(
            base.path,
            {**base.headers, "x-portkey-provider": "openai", "x-portkey-custom-host": f"{mock_url}/v1"},
            base.body,
            base.route,
        )


TARGETS = {"portkey": PortkeyTarget("portkey", "portkey", route="chat")}
