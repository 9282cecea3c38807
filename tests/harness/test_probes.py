"""In-gateway probes (gateway/probes.py) and the outside probes (harness/infra/probes.py) on
small live targets: labels, counts, reset windows, the injected-delay knob, py-spy parsing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from gateway import probes
from harness.infra.probes import PySpyGil, TreeSampler, parse_pyspy_raw


@pytest.fixture
def fresh_probes():
    yield
    if probes._current is not None:
        probes._current.stop()


def test_snapshot_without_start_names_what_is_missing(fresh_probes):
    s = probes.snapshot()
    assert s["running"] is False
    assert s["gil_wait"]["available"] is False and "GATEWAYLAB_PROBES" in s["gil_wait"]["reason"]
    assert s["native"]["label"] == "exact"


def test_probes_measure_gil_contention_and_loop_lag(fresh_probes):
    async def main():
        h = probes.start(asyncio.get_running_loop())
        assert probes.start() is h  # idempotent
        for _ in range(200):  # the probe thread calibrates first (100 idle acquisitions)
            if h.gil.calibration:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        quiet = probes.snapshot(reset=True)
        stop = time.monotonic() + 0.6

        def hog():  # pure-Python work: holds the GIL except at forced switches
            while time.monotonic() < stop:
                sum(range(500))

        t = threading.Thread(target=hog)
        t.start()
        await asyncio.sleep(0.6)
        t.join()
        busy = probes.snapshot(reset=True)
        after_reset = probes.snapshot()
        h.stop()
        return quiet, busy, after_reset

    # The hog's contention is the injected delay: with a 5 ms switch interval, a thread that
    # asks for the GIL while the hog holds it waits for the interval to run out, so the probe's
    # waits while the hog runs are about 5 ms each (set here, not left to the default).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        quiet, busy, after = asyncio.run(main())
    finally:
        sys.setswitchinterval(interval)
    for s in (quiet, busy):
        assert s["gil_wait"]["label"] == "exact" and s["loop_lag"]["label"] == "exact"
        assert s["gil_wait"]["count"] > 0 and s["loop_lag"]["count"] > 0
    assert quiet["gil_wait"]["calibration"]["count"] == 100
    # a thread hogging the GIL makes the probe wait (the switch interval is 5 ms)
    assert busy["gil_wait"]["max_us"] > quiet["gil_wait"]["p50_us"]
    assert busy["gil_wait"]["p99_us"] >= 1000  # a fifth of the injected 5 ms interval
    assert after["gil_wait"]["count"] < busy["gil_wait"]["count"]  # reset started a new window
    assert after["window_s"] < busy["window_s"] + 1


def test_native_counters_are_reported_exactly():
    s = probes._native_stats(reset=False)
    assert s["label"] == "exact"
    assert s["available"] is True, s
    assert set(s["totals"]) >= {"calls", "hold_ns", "detached_ns", "reacquire_wait_ns"}


def test_injected_delay_slows_every_task(fresh_probes, monkeypatch):
    monkeypatch.setenv("GATEWAYLAB_INJECT_DELAY_US", "2000")

    async def main():
        loop = asyncio.get_running_loop()
        h = probes.start(loop)
        assert probes.install_inject_delay(loop) == 2000  # what the gateway's startup does
        t0 = time.perf_counter()
        await asyncio.gather(*[loop.create_task(asyncio.sleep(0)) for _ in range(5)])
        dt = time.perf_counter() - t0
        h.stop()
        return dt, probes.snapshot()

    dt, snap = asyncio.run(main())
    # a lower bound the injection implies: each of the 5 tasks busy-waits 2 ms on this clock
    assert dt >= 5 * 0.002
    assert snap["running"] is False


def test_pyspy_raw_parser():
    text = textwrap.dedent("""\
        thread (123): MainThread;run (uvicorn/server.py:60);serve (x.py:1) 40
        thread (123): MainThread;other (y.py:2) 2
        thread (0x7f00aa): gatewaylab-gil-probe;run (probes.py:99) 3
    """)
    assert parse_pyspy_raw(text) == {"MainThread (123)": 42, "gatewaylab-gil-probe (0x7f00aa)": 3}


def test_tree_sampler_and_pyspy_on_a_busy_child(tmp_path):
    code = textwrap.dedent("""
        import threading, time
        def spin():
            end = time.monotonic() + 4
            while time.monotonic() < end:
                sum(range(1000))
        threading.Thread(target=spin, name="spinner").start()
        time.sleep(4)
    """)
    p = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.8)
        ts = TreeSampler(p.pid).start()
        spy = PySpyGil(p.pid, 1, tmp_path / "raw.txt", rate=100).start()
        g = spy.stop()
        cpu = ts.stop()
    finally:
        p.kill()
        p.wait()
    assert cpu["cpu_user_s"] > 0 and cpu["cpu_cores"] > 0 and cpu["rss_peak_mb"] > 1
    assert any("python" in k or "spinner" in k for k in cpu["threads_cpu_s"])
    if g["available"]:
        assert g["label"] == "sampled"
        assert g["held_share"] > 0.3  # the spinner holds the GIL nearly all the time
        assert any("spinner" in t for t in g["threads"])
    else:
        assert g["reason"]  # never silently empty
