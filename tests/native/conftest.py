"""Fixtures for the native mock upstream and load generator: real child processes,
127.0.0.1 only, free ports, always stopped (also on failure)."""

from __future__ import annotations

import os

import pytest

from harness.infra.native_procs import start_mock

# Two cores: the mock on the last CPU, the load generator on the first (clamped to what exists).
_CPUS = sorted(os.sched_getaffinity(0))
MOCK_CPUS = [_CPUS[-1]]
LOAD_CPUS = [_CPUS[0]]


@pytest.fixture(scope="module")
def mock():
    """A default mock, shared by a module; tests reset its stats when they count."""
    with start_mock(cpus=MOCK_CPUS, seed=1) as m:
        yield m


@pytest.fixture
def make_mock():
    """Start mocks with options; all are stopped at the end of the test."""
    started = []

    def _make(**opts):
        m = start_mock(cpus=opts.pop("cpus", MOCK_CPUS), **opts)
        started.append(m)
        return m

    yield _make
    for m in started:
        m.stop()
