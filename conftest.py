"""Shared fixtures. `impl` runs a test once per twin (python, rust).

It also installs tests/standalone_guard.py for the whole session: a test that reads
anything beside the checkout fails the session (the repository stands alone)."""

from __future__ import annotations

import sys

import pytest

from gateway import twins
from tests import standalone_guard

standalone_guard.install()


def pytest_sessionfinish(session, exitstatus):
    if standalone_guard.OUTSIDE_READS:
        seen = sorted(set(standalone_guard.OUTSIDE_READS))
        sys.stderr.write(
            "\nERROR: tests read outside the checkout (the repository must stand alone):\n"
            + "".join(f"  {p}\n" for p in seen[:20])
        )
        session.exitstatus = 1


@pytest.fixture(params=list(twins.IMPLS))
def impl(request) -> str:
    """'python' or 'rust'. The Rust leg fails (never skips) if the extension is missing."""
    return request.param


@pytest.fixture
def native():
    return twins.native()
