"""Gateway metrics, exposed in Prometheus text format by prometheus_client.

The hot path only does integer arithmetic on plain Python objects (a dict increment, a
bisect into fixed buckets); the prometheus_client families are built at scrape time by a
custom collector, so a request pays well under a microsecond per observation and takes no
lock (everything runs on the event loop thread).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from gateway import _native

# The metric names of every rung, one list each, owned by the Rust engine
# (native/engine/src/metrics.rs) and read here through the extension: the counters
# (`gateway_<name>_total`), the hot-path stages (`gateway_stage_seconds{stage}`: decide =
# guard to adapter, the pure pipeline; forward = the upstream exchange; respond = the
# response adapter; spawn = the audit hand-off; total; plugins = rs-server's sidecar call)
# and the histogram buckets (seconds, fine at the low end where the stages live); and the
# pipeline stages whose runs are counted (`gateway_stage_runs_total{stage}`: RUN_STAGES, what
# either pipeline twin counts, then RUNS_AUDIT, the audit records written).
COUNTERS: tuple[str, ...] = tuple(_native.COUNTERS)
STAGES: tuple[str, ...] = tuple(_native.STAGES)
_BUCKETS: tuple[float, ...] = tuple(_native.BUCKETS)
RUN_STAGES: tuple[str, ...] = tuple(_native.RUN_STAGES)
RUNS_AUDIT: str = _native.RUNS_AUDIT
_BUCKETS_NS = tuple(int(b * 1e9) for b in _BUCKETS)


class Histogram:
    __slots__ = ("counts", "sum_ns")

    def __init__(self):
        self.counts = [0] * (len(_BUCKETS_NS) + 1)
        self.sum_ns = 0

    def observe_ns(self, ns: int) -> None:
        self.counts[bisect_left(_BUCKETS_NS, ns)] += 1
        self.sum_ns += ns

    def set(self, counts: list[int], sum_ns: int) -> None:
        """Take another histogram's state (rs-core: the engine's, at scrape time)."""
        self.counts = list(counts)
        self.sum_ns = sum_ns

    def family_args(self):
        acc, out = 0, []
        for b, c in zip(_BUCKETS, self.counts):
            acc += c
            out.append((repr(b), acc))
        acc += self.counts[-1]
        out.append(("+Inf", acc))
        return out, self.sum_ns / 1e9


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.stage = {s: Histogram() for s in STAGES}
        self.audit_lag = Histogram()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.gauges: dict[str, Callable[[], float]] = {}
        # called at scrape time before the counters are read (rs-core copies the Rust side's)
        self.refresh: Callable[[], None] | None = None
        # {stage: times it ran} of the rung's pipeline (gateway_stage_runs_total), read at scrape time
        self.stage_runs: Callable[[], Mapping[str, int]] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def count_request(self, route: str, status: int) -> None:
        k = (route, status)
        r = self.requests
        r[k] = r.get(k, 0) + 1

    def collect(self):
        if self.refresh is not None:
            self.refresh()
        c = CounterMetricFamily(
            "gateway_requests", "HTTP requests by route and status", labels=["route", "status"]
        )
        for (route, status), n in sorted(self.requests.items()):
            c.add_metric([route, str(status)], n)
        yield c
        h = HistogramMetricFamily("gateway_stage_seconds", "hot-path stage latency", labels=["stage"])
        for name, hist in self.stage.items():
            buckets, total = hist.family_args()
            h.add_metric([name], buckets, total)
        yield h
        h = HistogramMetricFamily("gateway_audit_lag_seconds", "request end -> ledger append")
        buckets, total = self.audit_lag.family_args()
        h.add_metric([], buckets, total)
        yield h
        for name, n in self.counters.items():
            yield CounterMetricFamily(f"gateway_{name}", name.replace("_", " "), value=n)
        if self.stage_runs is not None:
            c = CounterMetricFamily(
                "gateway_stage_runs", "times each stage ran (audit: records written)", labels=["stage"]
            )
            runs = self.stage_runs()
            for name in RUN_STAGES:
                c.add_metric([name], runs[name])
            c.add_metric([RUNS_AUDIT], self.counters["audit_records"])
            yield c
        for name, fn in self.gauges.items():
            yield GaugeMetricFamily(f"gateway_{name}", name.replace("_", " "), value=fn())
        stats = _native.gil_stats(False)
        if stats:
            fams = {
                k: CounterMetricFamily(f"gateway_native_{k}", f"Rust entry points: {k}", labels=["entry"])
                for k in ("calls", "hold_ns", "detached_ns", "reacquire_wait_ns")
            }
            for entry, d in sorted(stats.items()):
                for k, fam in fams.items():
                    fam.add_metric([entry], d.get(k, 0))
            yield from fams.values()

    def render(self) -> bytes:
        return generate_latest(self.registry)
