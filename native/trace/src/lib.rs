//! OpenTelemetry tracing for the Rust rungs (the Python twin is `gateway/tracing.py`).
//!
//! Spans are `tracing` spans; a [`Tracer`] is a `tracing::Dispatch` whose only layer is
//! tracing-opentelemetry over an SDK tracer provider that exports over OTLP/HTTP (protobuf)
//! in batches. Each gateway owns its `Tracer` and runs its request futures under it
//! (`WithSubscriber`), so two gateways in one process (rs-core in a test) do not share one;
//! with tracing off there is no `Tracer` at all: no SDK, no exporter thread, and the
//! pipeline's stage spans see no subscriber (a disabled callsite costs a load and a branch).
//!
//! Span tree of one chat request (the same names on every rung, docs/tracing.md):
//!
//! ```text
//! request                      (parent: the client's traceparent, when it sends one)
//! ├── guard, auth, parse, waf, route, ratelimit, adapter   (the pipeline's stages)
//! └── forward
//!     └── attempt  (attempt = 1, 2, ...; one per upstream attempt; traceparent goes upstream)
//! ```
//!
//! The audit record carries the trace id only of a sampled request ([`trace_id`]); an
//! unsampled one (or tracing off) writes the record exactly as before.
use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

pub use tracing::instrument::{Instrument, WithSubscriber};
pub use tracing::{Dispatch, Span};

/// Where spans go when the config names no endpoint (the harness's receiver passes its own).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318/v1/traces";

/// `off` | `on` | `sampled:R` (0 <= R <= 1), as gateway/tracing.py parses and checks it (the
/// one parser: the Rust rungs get the parsed mode in their normalized config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Off,
    On,
    Sampled(f64),
}

impl Mode {
    /// The label /health and the results use (`off`, `on`, `sampled:0.1`), written as
    /// gateway/tracing.py's TracingMode.label writes it (the ratio as Python's repr).
    pub fn label(&self) -> String {
        match self {
            Mode::Off => "off".into(),
            Mode::On => "on".into(),
            Mode::Sampled(r) => format!("sampled:{r:?}"),
        }
    }
}

/// One gateway's tracer: the dispatch its request futures run under and the provider that
/// exports what they record.
#[derive(Clone)]
pub struct Tracer {
    pub dispatch: Dispatch,
    provider: SdkTracerProvider,
}

impl Tracer {
    /// None when `mode` is off (nothing is initialised). `endpoint` is the full OTLP/HTTP
    /// traces URL; `flush_ms` the batch processor's delay between exports. Build it outside
    /// any Tokio runtime (the blocking exporter has one of its own).
    pub fn new(
        mode: Mode,
        endpoint: &str,
        service: &str,
        flush_ms: u64,
    ) -> Result<Option<Tracer>, String> {
        let sampler = match mode {
            Mode::Off => return Ok(None),
            Mode::On => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Mode::Sampled(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("tracing: OTLP exporter: {e}"))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(flush_ms.max(1)))
            .with_max_queue_size(65536)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .with_sampler(sampler)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_string())
                    .build(),
            )
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("gatewaylab"));
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        Ok(Some(Tracer { dispatch, provider }))
    }

    /// The root span of one chat request when the sampler keeps it (None otherwise), child
    /// of the client's `traceparent` when the headers carry a valid one (raw name/value
    /// pairs). Run the request under `dispatch` only when this is Some: an unsampled
    /// request then makes no more spans (the core's stage spans see no subscriber), as the
    /// Python twin makes none for it.
    pub fn request_span(
        &self,
        headers: &[(&[u8], &[u8])],
        request_id: &str,
        rung: &'static str,
    ) -> Option<Span> {
        let span = tracing::dispatcher::with_default(&self.dispatch, || {
            let span = tracing::info_span!(
                "request",
                otel.name = "request",
                otel.kind = "server",
                rung,
                request_id
            );
            if headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(b"traceparent"))
            {
                let parent = TraceContextPropagator::new().extract(&Headers(headers));
                if parent.span().span_context().is_valid() {
                    let _ = span.set_parent(parent);
                }
            }
            span
        });
        trace_id(&span).is_some().then_some(span)
    }

    /// Export what is queued and stop the exporter (the gateway is shutting down).
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }
}

struct Headers<'a, 'b>(&'a [(&'b [u8], &'b [u8])]);

impl Extractor for Headers<'_, '_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(key.as_bytes()))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|(n, _)| std::str::from_utf8(n).ok())
            .collect()
    }
}

/// A stage span (`guard`, `auth`, `parse`, `waf`, `route`, `ratelimit`, `adapter`,
/// `forward`), child of the current span. One callsite for all of them: its name is the
/// `otel.name` field.
#[inline]
pub fn stage(name: &'static str) -> Span {
    tracing::info_span!("stage", otel.name = name)
}

/// The span of upstream attempt `n` (1-based), child of the current span (`forward`). The
/// forwarder calls this once per attempt and sends [`traceparent`] of it upstream.
pub fn attempt(n: u32, url: &str) -> Span {
    tracing::info_span!(
        "attempt",
        otel.name = "attempt",
        otel.kind = "client",
        attempt = n as i64,
        url,
        http.status_code = tracing::field::Empty
    )
}

/// A traced request's forward stage and one upstream attempt in it: the spans and the
/// traceparent the attempt sends (None when the request is not sampled). Spans end when
/// dropped; poll the attempt's I/O inside `span` (`.instrument(a.span.clone())`).
pub struct Attempt {
    pub span: Span,
    _forward: Span,
    pub traceparent: Option<String>,
}

impl Attempt {
    /// Attempt `n` (1-based) under a new forward span, child of the current span. The
    /// forwarding code calls this once per attempt (the router's retries are attempts 2, 3...).
    pub fn begin(n: u32, url: &str) -> Attempt {
        let forward = stage("forward");
        let span = forward.in_scope(|| attempt(n, url));
        let traceparent = traceparent(&span);
        Attempt {
            span,
            _forward: forward,
            traceparent,
        }
    }
}

/// The current span's trace id when it is sampled (the request span, inside a traced task).
pub fn current_trace_id() -> Option<String> {
    trace_id(&Span::current())
}

/// Record the upstream's answer on an attempt span.
pub fn attempt_status(span: &Span, status: u16) {
    span.record("http.status_code", status as i64);
}

/// The W3C `traceparent` of `span`, when it is sampled (an unsampled request sends none).
pub fn traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() || !sc.is_sampled() {
        return None;
    }
    let mut out: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.remove("traceparent")
}

/// The trace id (32 lowercase hex) of `span` when it is sampled: what the audit record keeps.
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| format!("{}", sc.trace_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_as_python_writes_them() {
        assert_eq!(Mode::Off.label(), "off");
        assert_eq!(Mode::On.label(), "on");
        assert_eq!(Mode::Sampled(0.25).label(), "sampled:0.25");
        assert_eq!(Mode::Sampled(0.0).label(), "sampled:0.0");
    }

    #[test]
    fn off_initialises_nothing() {
        assert!(Tracer::new(Mode::Off, DEFAULT_ENDPOINT, "t", 100)
            .unwrap()
            .is_none());
    }

    #[test]
    fn ids_and_traceparent_follow_the_client() {
        let t = Tracer::new(Mode::On, "http://127.0.0.1:9/v1/traces", "t", 10_000)
            .unwrap()
            .unwrap();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let hs: Vec<(&[u8], &[u8])> = vec![(b"traceparent", tp.as_bytes())];
        let span = t.request_span(&hs, "r1", "rs-server").unwrap();
        assert_eq!(
            trace_id(&span).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        let a = tracing::dispatcher::with_default(&t.dispatch, || {
            span.in_scope(|| attempt(1, "http://u"))
        });
        let up = traceparent(&a).unwrap();
        assert!(
            up.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && up.ends_with("-01"),
            "{up}"
        );
        assert_ne!(&up[36..52], "b7ad6b7169203331");
        // sampled:0 keeps nothing of its own, but a sampled parent still wins (parent-based)
        let z = Tracer::new(
            Mode::Sampled(0.0),
            "http://127.0.0.1:9/v1/traces",
            "t",
            10_000,
        )
        .unwrap()
        .unwrap();
        assert!(z.request_span(&[], "r2", "rs-server").is_none());
        assert!(trace_id(&z.request_span(&hs, "r3", "rs-server").unwrap()).is_some());
        let unsampled: Vec<(&[u8], &[u8])> = vec![(
            b"traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )];
        assert!(t.request_span(&unsampled, "r4", "rs-server").is_none()); // the client's flag wins
        drop(span);
        drop(a);
        t.shutdown();
        z.shutdown();
    }
}
