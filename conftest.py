"""Shared fixtures. `impl` runs a test once per twin (python, rust)."""
from __future__ import annotations

import pytest

from gateway import twins


@pytest.fixture(params=list(twins.IMPLS))
def impl(request) -> str:
    """'python' or 'rust'. The Rust leg fails (never skips) if the extension is missing."""
    return request.param


@pytest.fixture
def native():
    return twins.native()
