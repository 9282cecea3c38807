"""Helpers for the rs-server tests (the gateway tests' helpers, plus a ledger wait).
Imported as `tests.rs_server.helpers`."""

from __future__ import annotations

import json
import time

from tests.gateway.helpers import API_KEY, assert_openai_error, auth, chat_body, http  # noqa: F401


def wait_count(url: str, n: int, timeout: float = 10.0) -> dict:
    """/audit/root once it counts n records."""
    deadline = time.monotonic() + timeout
    while True:
        root = json.loads(http("GET", url + "/audit/root")[2])
        if root["count"] >= n or time.monotonic() > deadline:
            return root
        time.sleep(0.02)
