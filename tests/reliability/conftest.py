"""Fixtures the reliability tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def mock():
    """A native mock upstream for the module's gateways (a module may define its own)."""
    from harness.infra.native_procs import start_mock

    with start_mock(seed=5) as m:
        yield m
