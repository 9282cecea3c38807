"""pre_call hooks for the plugin tests (imported by the sidecar, or in-process on py)."""

from __future__ import annotations

import time


def _text(call) -> str:
    return " ".join(
        m.get("content") or "" for m in call.request["messages"] if isinstance(m.get("content"), str)
    )


def deny_secrets(call):
    """Reject prompts that mention a secret; say which key asked."""
    if "secret" in _text(call):
        return f"no secrets for {call.key_id} on {call.model}"
    return None


def slow_or_broken(call):
    text = _text(call)
    if "slow" in text:
        time.sleep(2.0)
    if "boom" in text:
        raise RuntimeError("the hook broke")
    return None


def passes(call):
    return None
