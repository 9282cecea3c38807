"""In-process measurement probes of the gateway (docs/architecture.md "Measurements", GIL views 2-4).

Started by the gateway's lifespan when ``GATEWAYLAB_PROBES=1`` (``start(loop)``) and served
at ``GET /debug/probes`` (``snapshot(reset)``). Three views, each labelled:

- ``gil_wait`` (exact): a daemon thread sleeps until an absolute deadline, then needs the
  GIL for a tiny Python operation; the time from the deadline to holding the GIL is recorded
  in an HDR histogram. The thread's timer slack is set to 1 ns so the kernel does not add
  its usual ~50 us; what remains besides GIL waiting is OS wake-up latency, measured at start
  while the gateway is idle (``calibration``) and reported beside the figures.
- ``loop_lag`` (exact): a ``call_later`` ticker on the event loop records how late each tick
  fires (``loop.time()`` actual minus scheduled).
- ``native`` (exact): the extension's per-entry-point counters (``gateway._native.gil_stats``):
  calls, time holding the GIL, time detached, time waiting to re-acquire it.

Cheap by construction: one wake-up per ``GATEWAYLAB_PROBE_INTERVAL_MS`` (default 2 ms) on the
probe thread, one timer callback per ``GATEWAYLAB_LAG_INTERVAL_MS`` (default 10 ms) on the loop.

Without a GIL (a free-threaded build running with the GIL off, ``sys._is_gil_enabled()``
false) there is nothing for views 2 and 3 to time: the probe thread is not started and both
views say ``NO_GIL`` as their reason, never zeros. Loop lag is measured as always.

Test knob: ``GATEWAYLAB_INJECT_DELAY_US=N`` makes every task created on the gateway's loop
busy-wait N microseconds while holding the GIL (an injected slowdown that a sweep comparison
must flag), with the probes on or off (``install_inject_delay``, called at startup). Never set
outside tests.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
import threading
import time
from typing import Any

from hdrh.histogram import HdrHistogram

EXACT, SAMPLED = "exact", "sampled"
NO_GIL = "no GIL (free-threaded build, GIL off)"
_HIGHEST_NS = 60 * 1_000_000_000  # 60 s
_SIG = 3


def _hist() -> HdrHistogram:
    return HdrHistogram(1, _HIGHEST_NS, _SIG)


def _summary(h: HdrHistogram) -> dict[str, Any]:
    n = h.get_total_count()
    if n == 0:
        return {
            "count": 0,
            "p50_us": None,
            "p90_us": None,
            "p99_us": None,
            "p999_us": None,
            "max_us": None,
            "mean_us": None,
        }
    q = h.get_percentile_to_value_dict([50, 90, 99, 99.9])
    return {
        "count": int(n),
        "p50_us": q[50] / 1e3,
        "p90_us": q[90] / 1e3,
        "p99_us": q[99] / 1e3,
        "p999_us": q[99.9] / 1e3,
        "max_us": h.get_max_value() / 1e3,
        "mean_us": h.get_mean_value() / 1e3,
    }


def _set_timer_slack_ns(ns: int) -> bool:
    """prctl(PR_SET_TIMERSLACK) for the calling thread; False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(29, ctypes.c_ulong(ns), 0, 0, 0) == 0  # 29 = PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        return False


class _Recorder:
    """An HDR histogram behind a lock, swapped out on reset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._h = _hist()
        self.total_ns = 0

    def record(self, ns: int) -> None:
        v = min(max(ns, 1), _HIGHEST_NS)
        with self._lock:
            self._h.record_value(v)
            self.total_ns += v

    def take(self, reset: bool) -> tuple[HdrHistogram, int]:
        with self._lock:
            h, total = self._h, self.total_ns
            if reset:
                self._h, self.total_ns = _hist(), 0
            else:  # the probe keeps recording into the live one: hand out a copy
                h = _hist()
                h.add(self._h)
        return h, total


class GilProbe(threading.Thread):
    """Sleeps to an absolute deadline, then records how long it took to hold the GIL."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(name="gatewaylab-gil-probe", daemon=True)
        self.interval_s = interval_s
        self.rec = _Recorder()
        self.calibration: dict[str, Any] = {}
        self.timer_slack_set = False
        self._stop_evt = threading.Event()

    def _one(self) -> int:
        deadline = time.monotonic_ns() + int(self.interval_s * 1e9)
        # time.sleep uses clock_nanosleep(TIMER_ABSTIME) on Linux and releases the GIL; it
        # returns only once this thread holds the GIL again.
        time.sleep(self.interval_s)
        return time.monotonic_ns() - deadline

    def run(self) -> None:
        self.timer_slack_set = _set_timer_slack_ns(1)
        # Calibration while the gateway is idle: OS wake-up latency + an uncontended acquire.
        cal = _hist()
        for _ in range(100):
            cal.record_value(min(max(self._one(), 1), _HIGHEST_NS))
        self.calibration = _summary(cal)
        while not self._stop_evt.is_set():
            self.rec.record(self._one())

    def stop(self) -> None:
        self._stop_evt.set()


class LoopLag:
    """A call_later ticker on the gateway's event loop recording callback lateness."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        self.loop, self.interval_s = loop, interval_s
        self.rec = _Recorder()
        self._handle: asyncio.TimerHandle | None = None
        self._due_ns = 0
        self._stopped = False

    def start(self) -> None:
        self.loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        if self._stopped:
            return
        # Lateness is measured on the monotonic clock: uvloop's loop.time() is cached per
        # loop iteration at 1 ms resolution, too coarse for this view.
        self._due_ns = time.monotonic_ns() + int(self.interval_s * 1e9)
        self._handle = self.loop.call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        self.rec.record(time.monotonic_ns() - self._due_ns)
        self._arm()

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._handle.cancel)


def gil_enabled() -> bool:
    """Whether this process runs with a GIL: always before 3.13; on a free-threaded build,
    unless an extension without free-threading support (or PYTHON_GIL=1) turned it back on."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def _no_gil(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"label": EXACT, "available": False, "reason": NO_GIL, **(extra or {})}


def _native_stats(reset: bool) -> dict[str, Any]:
    if not gil_enabled():
        return _no_gil({"entries": {}, "totals": {}})
    try:
        from gateway import _native  # type: ignore[attr-defined]
    except ImportError as e:
        return {
            "label": EXACT,
            "available": False,
            "reason": f"extension not built: {e}",
            "entries": {},
            "totals": {},
        }
    fn = getattr(_native, "gil_stats", None)
    if fn is None:
        return {
            "label": EXACT,
            "available": False,
            "reason": "gateway._native has no gil_stats",
            "entries": {},
            "totals": {},
        }
    entries = {k: dict(v) for k, v in fn(reset).items()}
    keys = ("calls", "hold_ns", "detached_ns", "reacquire_wait_ns")
    totals = {k: sum(int(e.get(k, 0)) for e in entries.values()) for k in keys}
    totals["max_reacquire_wait_ns"] = max(
        (int(e.get("max_reacquire_wait_ns", 0)) for e in entries.values()), default=0
    )
    return {"label": EXACT, "available": True, "reason": None, "entries": entries, "totals": totals}


def _inject_delay_factory(delay_us: int):
    """Task factory that busy-waits `delay_us` (holding the GIL) per task: a test-only slowdown."""
    delay_ns = delay_us * 1000

    def factory(loop, coro, **kw):
        end = time.perf_counter_ns() + delay_ns
        while time.perf_counter_ns() < end:
            pass
        return asyncio.Task(coro, loop=loop, **kw)

    return factory


class ProbeHandle:
    def __init__(self, gil: GilProbe | None, lag: LoopLag) -> None:
        self.gil, self.lag = gil, lag
        self.started_ns = time.monotonic_ns()
        self.window_start_ns = self.started_ns

    def stop(self) -> None:
        global _current
        if self.gil is not None:
            self.gil.stop()
        if self.lag is not None:
            self.lag.stop()
        if _current is self:
            _current = None


_current: ProbeHandle | None = None


def start(loop: asyncio.AbstractEventLoop | None = None) -> ProbeHandle:
    """Start the GIL probe thread and the loop-lag ticker (idempotent per process)."""
    global _current
    if _current is not None:
        return _current
    loop = loop or asyncio.get_running_loop()
    interval = float(os.environ.get("GATEWAYLAB_PROBE_INTERVAL_MS", "2")) / 1e3
    lag_interval = float(os.environ.get("GATEWAYLAB_LAG_INTERVAL_MS", "10")) / 1e3
    gil = None
    if gil_enabled():  # without a GIL there is no acquisition to time
        gil = GilProbe(interval)
        gil.start()
    lag = LoopLag(loop, lag_interval)
    lag.start()
    _current = ProbeHandle(gil, lag)
    _current.inject_delay_us = inject_delay_us()  # type: ignore[attr-defined]
    return _current


def inject_delay_us() -> int:
    return int(os.environ.get("GATEWAYLAB_INJECT_DELAY_US", "0") or 0)


def install_inject_delay(loop: asyncio.AbstractEventLoop) -> int:
    """The test knob GATEWAYLAB_INJECT_DELAY_US on `loop` (probes on or off); its value."""
    delay_us = inject_delay_us()
    if delay_us > 0:
        loop.set_task_factory(_inject_delay_factory(delay_us))
    return delay_us


def snapshot(reset: bool = False) -> dict[str, Any]:
    """All probe figures since the last reset (JSON-ready). `reset=True` starts a new window."""
    now = time.monotonic_ns()
    h = _current
    out: dict[str, Any] = {"pid": os.getpid(), "running": h is not None, "gil_enabled": gil_enabled()}
    if h is None:
        missing = {"label": EXACT, "available": False, "reason": "probes not started (GATEWAYLAB_PROBES!=1)"}
        out.update(window_s=None, gil_wait=dict(missing), loop_lag=dict(missing), native=_native_stats(reset))
        return out
    out["window_s"] = (now - h.window_start_ns) / 1e9
    out["inject_delay_us"] = getattr(h, "inject_delay_us", 0)
    if reset:
        h.window_start_ns = now
    if h.gil is None:
        gil = _no_gil()
    else:
        gh, gtotal = h.gil.rec.take(reset)
        gil = {
            "label": EXACT,
            "available": True,
            "reason": None,
            **_summary(gh),
            "total_wait_s": gtotal / 1e9,
            "interval_ms": h.gil.interval_s * 1e3,
            "timer_slack_1ns": h.gil.timer_slack_set,
            "calibration": h.gil.calibration,
            "note": "deadline-to-GIL latency; includes OS wake-up latency (see calibration)",
        }
    lh, ltotal = h.lag.rec.take(reset)
    lag = {
        "label": EXACT,
        "available": True,
        "reason": None,
        **_summary(lh),
        "total_lag_s": ltotal / 1e9,
        "interval_ms": h.lag.interval_s * 1e3,
        "loop": type(h.lag.loop).__module__.split(".")[0],
    }
    out.update(gil_wait=gil, loop_lag=lag, native=_native_stats(reset))
    return out
