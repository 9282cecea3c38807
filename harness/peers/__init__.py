"""Peer gateways: real gateways measured beside our rungs, in the same run (docs/peers.md).

    from harness import peers
    peers.install(["portkey"])          # from its own registry into .peers/portkey (idempotent)
    peers.listing()                      # what is installed: versions, paths, or why not
    from harness.peers.targets import PEER_TARGETS

Versions are pinned in one file, ``versions.toml`` beside this module. Each peer installs
into its own folder under ``.peers/`` (git-ignored; ``$GATEWAYLAB_PEERS_DIR`` moves it):
LiteLLM in its own venv (its dependencies never touch ours), Portkey with npm, Noveum with
``cargo install --locked --root`` (its build directory is kept outside the checkout, keyed by
version, so a fresh clone on the same machine reuses it). ``.peers/manifest.json`` records
what was installed: version, registry, package, entry point, folder, install seconds.

One adapter per peer (``litellm.py``, ``portkey.py``, ``noveum.py``): it writes the peer's
config pointing at the native mock, starts it pinned to the gateway cores with telemetry off
and no outbound network, knows its readiness check and request shape, and stops its whole
process tree (``_base.py``).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PINS_FILE = Path(__file__).with_name("versions.toml")


def peers_dir() -> Path:
    return Path(os.environ.get("GATEWAYLAB_PEERS_DIR") or ROOT / ".peers")


def pins() -> dict[str, dict[str, Any]]:
    """name -> its pin from versions.toml (registry, package, version; installable/reason)."""
    with open(PINS_FILE, "rb") as f:
        return tomllib.load(f)


def manifest() -> dict[str, Any]:
    """The install manifest: {"peers": {name: {...}}} ({"peers": {}} before any install)."""
    path = peers_dir() / "manifest.json"
    if not path.exists():
        return {"peers": {}}
    return json.loads(path.read_text())


def installed_version(name: str) -> str | None:
    """The version the manifest records for `name`, or None."""
    rec = manifest()["peers"].get(name)
    return rec["version"] if rec else None


def install(names: list[str] | None = None, log=print) -> dict[str, Any]:
    from harness.peers.installer import install as _install

    return _install(names, log=log)


def listing() -> list[dict[str, Any]]:
    from harness.peers.installer import listing as _listing

    return _listing()


__all__ = ["install", "listing", "manifest", "pins", "peers_dir", "installed_version", "ROOT"]
