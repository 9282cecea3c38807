"""A small OTLP/HTTP trace receiver the harness starts locally (docs/tracing.md).

    with OtlpReceiver() as rx:                 # 127.0.0.1, a free port, a daemon thread
        start_gateway(..., tracing="on", tracing_endpoint=rx.endpoint)
        ...
        spans = rx.wait_for(lambda s: len(s) >= 9, timeout=10)

It accepts `POST /v1/traces` with an `ExportTraceServiceRequest` in protobuf (what both
SDKs' OTLP/HTTP exporters send; gzip accepted), decodes it with `opentelemetry-proto` and
answers an empty `ExportTraceServiceResponse`. Spans are kept as `ReceivedSpan` records
(`keep=False` decodes nothing and only counts exports and bytes: a sweep needs the
exporters to have somewhere to send, not the spans, and decoding would take CPU from the
mock and the load generator). It is a test and measurement sink, not a collector: no retries asked for, nothing
forwarded.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str  # "" for a root span
    name: str
    kind: int  # OTLP SpanKind: 1 internal, 2 server, 3 client
    start_ns: int
    end_ns: int
    service: str
    attributes: dict = field(default_factory=dict)


def _value(v):
    which = v.WhichOneof("value")
    return None if which is None else getattr(v, which)


class OtlpReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, keep: bool = True):
        self.keep = keep
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.exports = 0  # requests received
        self.span_count = 0  # spans received (0 with keep=False: nothing is decoded)
        self.bytes = 0
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's name)
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                if self.path != "/v1/traces":
                    return self._answer(404, b"", "text/plain")
                try:
                    rx._ingest(body, self.headers.get("content-encoding"))
                except Exception as e:  # noqa: BLE001 - a bad export is the exporter's 400
                    return self._answer(400, str(e).encode(), "text/plain")
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceResponse,
                )

                self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

            def _answer(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):  # quiet
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """The OTLP/HTTP traces URL to give a gateway (`tracing_endpoint`)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1/traces"

    def _ingest(self, body: bytes, encoding: str | None) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        if not self.keep:
            with self._lock:
                self.exports += 1
                self.bytes += len(body)
            return
        if encoding == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest.FromString(body)
        out = []
        count = 0
        for rs in req.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                count += len(ss.spans)
                for s in ss.spans:
                    out.append(
                        ReceivedSpan(
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            s.name,
                            s.kind,
                            s.start_time_unix_nano,
                            s.end_time_unix_nano,
                            service,
                            {a.key: _value(a.value) for a in s.attributes},
                        )
                    )
        with self._lock:
            self.exports += 1
            self.span_count += count
            self.bytes += len(body)
            self._spans.extend(out)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self.exports = self.span_count = self.bytes = 0

    def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Poll until `done(spans)` holds (the exporters send in batches); the spans then, or
        TimeoutError naming how many arrived."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"OTLP receiver: condition not met after {timeout}s ({len(spans)} spans received)"
                )
            time.sleep(0.05)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def traces(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    """Spans grouped by trace id."""
    out: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        out.setdefault(s.trace_id, []).append(s)
    return out


def tree(spans: list[ReceivedSpan]) -> dict:
    """One trace's spans as `{name: {child name: {...}}}` from its root (children sorted by
    start; repeated names get `#2`, `#3`...), for comparing shapes across rungs."""
    by_parent: dict[str, list[ReceivedSpan]] = {}
    ids = {s.span_id for s in spans}
    for s in spans:
        by_parent.setdefault(s.parent_span_id if s.parent_span_id in ids else "", []).append(s)

    def build(parent: str) -> dict:
        out: dict = {}
        for s in sorted(by_parent.get(parent, []), key=lambda s: s.start_ns):
            name, k = s.name, 2
            while name in out:
                name, k = f"{s.name}#{k}", k + 1
            out[name] = build(s.span_id)
        return out

    return build("")
