"""OpenTelemetry tracing on rungs 0 and 1 (`py`, `py+rs`), with the OpenTelemetry SDK.

The Rust rungs have the twin of this module in `native/trace` (`tracing` spans exported by
the Rust SDK); both give the same span tree, names and attributes (docs/tracing.md):

    request                     (child of the client's W3C traceparent, when it sends one)
    ├── guard, auth, parse, waf, route, ratelimit, adapter    (the pipeline's stages that ran)
    └── forward
        └── attempt             (attempt=1, 2, ...: one per upstream attempt; traceparent upstream)

Modes (`--tracing`, config key `tracing`): `off` (default: nothing here is imported or
initialised, so off costs nothing), `on` (every request), `sampled:R` (a parent-based
trace-id ratio sampler: a fraction R of the requests that arrive without a traceparent; a
client's sampled flag wins). Spans go over OTLP/HTTP (protobuf) to `tracing_endpoint`,
batched (`BatchSpanProcessor`, flushed every `flush_ms`). Each gateway owns its tracer
provider (never the process-global one), so two gateways in one process do not mix.

Stage spans come from the pure pipeline without a tracer in it: when the request is sampled,
`Context.marks` is a list and `decide()` appends `(stage, time_ns)` as each stage starts;
`RequestTrace.decided()` turns the marks into spans (a stage ends where the next begins).
An unsampled request has no marks and sends no traceparent; a sampled one's audit record
gets its trace id (`AuditMaterial.trace_id`, docs/formats.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError

DEFAULT_ENDPOINT = "http://127.0.0.1:4318/v1/traces"
_ns = time.time_ns


@dataclass(frozen=True)
class TracingMode:
    """`off` | `on` | `sampled:R` (0 <= R <= 1). `ratio` is 1.0 for on and 0.0 for off."""

    kind: str
    ratio: float

    @property
    def enabled(self) -> bool:
        return self.kind != "off"

    def label(self) -> str:
        return f"sampled:{self.ratio!r}" if self.kind == "sampled" else self.kind


OFF = TracingMode("off", 0.0)


def parse_mode(spec: str) -> TracingMode:
    """The one parser of a tracing mode (ConfigError otherwise): the Rust rungs get the parsed
    mode in their normalized config (gateway/config.py)."""
    bad = f"tracing: expected off, on or sampled:R with 0 <= R <= 1, got {spec!r}"
    if spec == "off":
        return OFF
    if spec == "on":
        return TracingMode("on", 1.0)
    if not isinstance(spec, str) or not spec.startswith("sampled:") or "_" in spec:
        raise ConfigError(bad)
    try:
        r = float(spec[len("sampled:") :])
    except ValueError:
        raise ConfigError(bad) from None
    if not 0.0 <= r <= 1.0:  # (NaN fails this too)
        raise ConfigError(bad)
    return TracingMode("sampled", r)


class Tracer:
    """One gateway's tracer: an SDK TracerProvider with its own sampler and OTLP exporter."""

    def __init__(
        self,
        mode: TracingMode,
        endpoint: str = DEFAULT_ENDPOINT,
        rung: str = "py",
        service: str = "gatewaylab",
        flush_ms: int = 200,
    ):
        if not mode.enabled:
            raise ValueError("Tracer: tracing is off (make no Tracer at all)")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
        from opentelemetry.trace import SpanKind, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        root = ALWAYS_ON if mode.kind == "on" else TraceIdRatioBased(mode.ratio)
        self.provider = TracerProvider(
            sampler=ParentBased(root), resource=Resource.create({"service.name": service})
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint, timeout=5),
                max_queue_size=65536,
                schedule_delay_millis=max(1, flush_ms),
            )
        )
        self.tracer = self.provider.get_tracer("gatewaylab")
        self.rung = rung
        self._propagator = TraceContextTextMapPropagator()
        self._server, self._client = SpanKind.SERVER, SpanKind.CLIENT
        self._in_context = set_span_in_context

    def request(self, headers: list, request_id: str) -> RequestTrace:
        """The root span of one chat request; `headers` are the raw ASGI (name, value) pairs."""
        parent = None
        for name, value in headers:
            if name == b"traceparent":
                parent = self._propagator.extract({"traceparent": value.decode("latin-1")})
                break
        span = self.tracer.start_span(
            "request",
            context=parent,
            kind=self._server,
            attributes={"rung": self.rung, "request_id": request_id},
        )
        return RequestTrace(self, span)

    def shutdown(self) -> None:
        """Export what is queued, then stop the exporter."""
        self.provider.force_flush()
        self.provider.shutdown()


class RequestTrace:
    """The spans of one request. `marks` is None when the request is not sampled."""

    __slots__ = ("_t", "span", "marks", "trace_id", "_ctx", "_forward")

    def __init__(self, tracer: Tracer, span):
        self._t = tracer
        self.span = span
        sc = span.get_span_context()
        sampled = sc.trace_flags.sampled
        self.marks: list | None = [] if sampled else None
        self.trace_id = f"{sc.trace_id:032x}" if sampled else ""
        self._ctx = tracer._in_context(span) if sampled else None
        self._forward: Any = None  # the forward stage's span, once it begins

    def decided(self, audit) -> None:
        """The pipeline has decided: its stage marks become spans; the audit material (if
        any) gets the trace id."""
        if self.marks is None:
            return
        if audit is not None:
            audit.trace_id = self.trace_id
        end = _ns()
        marks = self.marks
        start = self._t.tracer.start_span
        for i, (name, t) in enumerate(marks):
            t_end = marks[i + 1][1] if i + 1 < len(marks) else end
            start(name, context=self._ctx, start_time=t).end(end_time=t_end)

    def forward(self) -> None:
        """The forward stage begins (its attempts are children of it)."""
        if self._ctx is not None:
            self._forward = self._t.tracer.start_span("forward", context=self._ctx)

    def attempt(self, n: int, url: str, headers: list) -> tuple[object, list]:
        """Upstream attempt `n` (1-based), called by the forwarding code once per attempt:
        (span or None, the upstream headers with this attempt's traceparent)."""
        if self._forward is None:
            return None, headers
        t = self._t
        span = t.tracer.start_span(
            "attempt",
            context=t._in_context(self._forward),
            kind=t._client,
            attributes={"attempt": n, "url": url},
        )
        carrier: dict = {}
        t._propagator.inject(carrier, context=t._in_context(span))
        return span, [*headers, ("traceparent", carrier["traceparent"])]

    @staticmethod
    def attempt_done(span, status: int | None) -> None:
        if span is not None:
            if status is not None:
                span.set_attribute("http.status_code", status)
            span.end()

    def forward_done(self) -> None:
        """The forward stage is over (its last attempt has ended)."""
        if self._forward is not None:
            self._forward.end()
            self._forward = None

    def end(self) -> None:
        """The answer is ready (for a stream: its head and first chunk)."""
        self.forward_done()
        self.span.end()
