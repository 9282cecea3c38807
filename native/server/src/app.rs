//! The gateway: routes, and the request path around the core pipeline.
//!
//! ```text
//! hyper (parses the head; refuses what it cannot frame) -> guard (core check_headers) -> body
//! (limit, read timeout) -> Pipeline::decide (core: auth, parse, WAF, route, rate limit,
//! adapter) -> [plugins: sidecar pre_call] -> upstream (net::client) ->
//! Pipeline::respond / stream relay (core) -> client;  audit job -> ledger thread (core)
//! ```
//!
//! The decision is the core crate's, the same code rung 2 calls: this file does I/O only.
//! Endpoints and their answers are the Python gateway's (`gateway/shell_asgi.py`,
//! `gateway/app.py`). A panic while serving a request becomes a 500 for that request (the
//! process and the other connections go on); SIGTERM stops accepting, lets in-flight
//! requests finish and drains the audit queue before the process exits.
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use gatewaylab_core::entropy::PySum;
use gatewaylab_core::job::{Answer, AuditJob};
use gatewaylab_core::ledger::{Ledger, LedgerThread};
use gatewaylab_core::pipeline::{
    self, AuditMaterial, Context, Decision, DeploymentConfig, Forwarding, KeyConfig, ModelConfig,
    Pipeline, PipelineConfig, Rejection, RuleConfig, UpstreamFailure,
};
use gatewaylab_core::router::{drive, Outcome, Router};
use gatewaylab_core::wal::FsyncPolicy;
use gatewaylab_net::client::{Failure, Upstream};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::body::GwBody;
use crate::cli::Options;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::sidecar::{Sidecar, Verdict};
use crate::unit::Unit;

const CHAT: &str = "/v1/chat/completions";
/// Retry-After on a shed request, seconds (gateway/app.py RETRY_AFTER_S)
const RETRY_AFTER_S: u64 = 1;

/// One admitted chat request; dropping it frees its place.
pub struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunks buffered between the upstream relay and a slow client.
const STREAM_BUFFER: usize = 16;

pub struct Gateway {
    cfg: Config,
    opts: Options,
    metrics: Metrics,
    sidecar: Option<Sidecar>,
    pipeline: Pipeline,
    upstream: Upstream,
    ledger: Option<LedgerThread>,
    /// ledger.ack durable: whole answers wait for their record's group commit
    durable: bool,
    /// chat requests being served (admission control, `limits.max_in_flight`)
    in_flight: Arc<AtomicU64>,
    ids: AtomicU64,
    /// audit hand-offs attached to answers not yet handed over (waited for before the drain)
    pending_audits: AtomicU64,
    id_prefix: String,
    started: Instant,
    /// a worker of a unit (--workers N): its place, and its peers' control sockets
    unit: Option<Unit>,
    /// The router (docs/router.md), when the config has groups; its clock is `started`.
    router: Option<std::sync::Mutex<Router>>,
    /// None with tracing off (nothing initialised; requests run as before)
    tracer: Option<gatewaylab_trace::Tracer>,
}

/// A failure the router retries: 429, 5xx (timeouts and connection errors too).
fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

pub fn json_response(status: u16, body: impl Into<Bytes>) -> Response<GwBody> {
    let mut r = Response::new(GwBody::full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An OpenAI-shaped error answer (the core's error body: the same bytes as every rung).
pub fn error(status: u16, message: &str, code: &str) -> Response<GwBody> {
    json_response(status, pipeline::error_body(status, message, code))
}

fn rejection_response(r: &Rejection) -> Response<GwBody> {
    let mut resp = json_response(r.status, r.body());
    for (k, v) in &r.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().append(HeaderName::from_static(k), v);
        }
    }
    resp
}

/// Read and drop up to `cap` bytes of a rejected request's body, so a client still sending
/// gets to read the answer (the Python guard's `discard_body`).
async fn discard_body(body: &mut Incoming, cap: usize) {
    let mut seen = 0usize;
    while seen <= cap {
        match tokio::time::timeout(BODY_READ_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(f))) => seen += f.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

fn body_error(status: u16, code: &'static str, message: String) -> Rejection {
    let headers = if status == 400 {
        vec![("connection", "close".to_string())]
    } else {
        Vec::new()
    };
    Rejection {
        status,
        code,
        message,
        headers,
        audit: None,
    }
}

/// The whole body, failing with 413 as soon as it grows past `max` (never buffering more;
/// the Python guard's `read_body`).
async fn read_body(body: &mut Incoming, max: usize) -> Result<Bytes, Rejection> {
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut size = 0usize;
    loop {
        let frame = match tokio::time::timeout(BODY_READ_TIMEOUT, body.frame()).await {
            Err(_) => {
                let secs = BODY_READ_TIMEOUT.as_secs();
                return Err(body_error(
                    408,
                    "request_timeout",
                    format!("request body not received within {secs}s"),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // hyper refused the body's framing (a bad chunk size, chunk extensions or
                // trailers over its 16 KiB caps: an InvalidData I/O error under the body error),
                // or the client went away; the Python rungs answer the first as
                // gateway/framing.py does
                let refused = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .filter(|io| io.kind() == std::io::ErrorKind::InvalidData);
                return Err(if let Some(why) = refused {
                    body_error(
                        400,
                        "bad_http_framing",
                        format!("malformed HTTP request: {why}"),
                    )
                } else {
                    body_error(
                        400,
                        "client_disconnected",
                        "client disconnected while sending the body".into(),
                    )
                });
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len();
        if size > max {
            discard_body(body, 8 * max).await;
            return Err(body_error(
                413,
                "body_too_large",
                format!("request body exceeds {max} bytes"),
            ));
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
            None => buf.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

fn route_label(path: &str) -> &'static str {
    match path {
        CHAT => CHAT,
        "/health" => "/health",
        "/v1/models" => "/v1/models",
        "/metrics" => "/metrics",
        "/audit/root" => "/audit/root",
        "/audit/consistency" => "/audit/consistency",
        p if p.starts_with("/audit/proof/") => "/audit/proof",
        _ => "other",
    }
}

/// `parse_qs(query, keep_blank_values=True)[name][0]`
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k, true) == name).then(|| percent_decode(v, true))
    })
}

/// %XX escapes; `+` is a space in a query (form encoding, as parse_qs reads it) and itself in
/// a path (as the ASGI servers give it).
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The audit endpoints' indexes (/audit/proof/{index}, ?old=, ?shard=; gateway/app.py
/// index_digits): ASCII digits only, as many as the client likes, without their leading zeros;
/// None (400) for a sign, space, `_`, letter or nothing. A well-formed number beyond the
/// ledger is out of range (404 / 400 old_out_of_range), however many digits.
fn index_digits(raw: &str) -> Option<&str> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = raw.trim_start_matches('0');
    Some(if t.is_empty() { "0" } else { t })
}

/// The index as the ledger twins take it (i64, gateway/app.py INDEX_MAX); None beyond.
fn index_value(digits: &str) -> Option<u64> {
    digits.parse::<i64>().ok().map(|n| n as u64)
}

/// The MMR twins' words for an index beyond the ledger (gateway/app.py out_of_range).
fn out_of_range(inclusion: bool, digits: &str, count: u64) -> String {
    let what = if inclusion { "leaf index" } else { "old count" };
    format!("{what} {digits} out of range for an MMR of {count} leaves")
}

/// gateway.pipeline.stages_label
fn stages_label(stages: &[String]) -> String {
    if stages.len() == crate::config::STAGES.len() {
        "all".into()
    } else if stages.is_empty() {
        "none".into()
    } else {
        stages.join(",")
    }
}

pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn failure(f: Failure, timeout: Duration) -> UpstreamFailure {
    match f {
        Failure::Timeout(_) => UpstreamFailure::timeout(timeout.as_secs_f64()),
        Failure::Unavailable(detail) => UpstreamFailure::unavailable(&detail),
    }
}

/// The core pipeline's view of the configuration.
pub fn pipeline_config(cfg: &Config) -> PipelineConfig {
    PipelineConfig {
        keys: cfg
            .keys
            .iter()
            .map(|k| KeyConfig {
                id: k.id.clone(),
                sha256: k.sha256.clone(),
                rpm: k.rpm,
                tpm: k.tpm,
            })
            .collect(),
        waf_rules: cfg
            .waf_rules
            .iter()
            .map(|r| RuleConfig {
                id: r.id.clone(),
                kind: r.kind.clone(),
                pattern: r.pattern.clone(),
                case_insensitive: r.case_insensitive,
            })
            .collect(),
        models: cfg
            .models
            .iter()
            .map(|(name, u)| ModelConfig {
                name: name.clone(),
                kind: u.kind.clone(),
                url: u.url(),
                model: u.model.clone(),
                api_key: u.api_key.clone(),
            })
            .collect(),
        passthrough: cfg.passthrough,
        max_body_bytes: cfg.max_body_bytes as u64,
        max_header_bytes: cfg.max_header_bytes as u64,
        stages: cfg.stages.clone(),
        audit: cfg.audit,
        router: cfg.router.clone(),
        deployments: cfg
            .deployments
            .iter()
            .map(|(name, u)| DeploymentConfig {
                group: name.clone(),
                kind: u.kind.clone(),
                url: u.url(),
                model: u.model.clone(),
                api_key: u.api_key.clone(),
            })
            .collect(),
    }
}

impl Gateway {
    /// `tracer`: built by `run` before the runtime starts (the OTLP exporter's blocking
    /// client must not be created inside it); None with tracing off.
    pub fn new(
        cfg: Config,
        opts: Options,
        sidecar: Option<Sidecar>,
        sum: PySum,
        tracer: Option<gatewaylab_trace::Tracer>,
    ) -> Result<Self, String> {
        let pipeline = Pipeline::new(&pipeline_config(&cfg))?;
        let router = match &cfg.router {
            None => None,
            Some(v) => Some(std::sync::Mutex::new(Router::from_json(&v.to_string())?)),
        };
        let upstream = Upstream::new(
            cfg.upstream_pool as usize,
            Duration::from_secs_f64(cfg.upstream_timeout_s),
            Duration::from_secs(5),
        );
        let ledger = if cfg.audit {
            let policy =
                FsyncPolicy::parse(&cfg.fsync).map_err(|e| format!("ledger.fsync: {e}"))?;
            let led = Ledger::open(Path::new(&cfg.ledger_dir), policy, cfg.group_delay_ms)
                .map_err(|e| format!("ledger {}: {e}", cfg.ledger_dir))?;
            let r = led.recovery();
            if r.truncated_bytes > 0 {
                eprintln!(
                    "gateway: ledger recovery truncated a torn tail of {} bytes",
                    r.truncated_bytes
                );
            }
            // GATEWAYLAB_LEDGER_DELAY_MS: a pause before each batch, so tests can stop the
            // gateway with work queued (as on the other rungs)
            let delay_ms: f64 = std::env::var("GATEWAYLAB_LEDGER_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            let delay = Duration::try_from_secs_f64(delay_ms.max(0.0) / 1000.0).unwrap_or_default();
            Some(LedgerThread::spawn(led, sum, delay).map_err(|e| format!("ledger thread: {e}"))?)
        } else {
            None
        };
        let id_prefix = format!(
            "req-{:x}-{:x}-",
            std::process::id(),
            (unix_ns() as u64) & 0xffff_ffff
        );
        let durable = cfg.ack == "durable";
        let unit = match (opts.worker, &opts.unit_dir) {
            (Some((index, count)), Some(dir)) => Some(Unit {
                index,
                count,
                dir: dir.into(),
                sharded: opts.ledger_layout.as_deref() == Some("sharded"),
            }),
            _ => None,
        };
        Ok(Self {
            unit,
            cfg,
            opts,
            metrics: Metrics::default(),
            sidecar,
            pipeline,
            upstream,
            ledger,
            durable,
            in_flight: Arc::new(AtomicU64::new(0)),
            ids: AtomicU64::new(0),
            pending_audits: AtomicU64::new(0),
            id_prefix,
            started: Instant::now(),
            router,
            tracer,
        })
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<GwBody> {
        let path = req.uri().path().to_string();
        let t0 = Instant::now();
        let resp = if path == CHAT && req.method() == Method::POST {
            match self.admit() {
                None => self.shed(),
                Some(permit) => {
                    let rid = format!("{}{}", self.id_prefix, self.ids.fetch_add(1, Relaxed));
                    // a sampled request runs in its span under the tracer; any other as without tracing
                    let traced = self.tracer.as_ref().and_then(|t| {
                        let pairs: Vec<(&[u8], &[u8])> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
                            .collect();
                        t.request_span(&pairs, &rid, "rs-server")
                            .map(|span| (span, t.dispatch.clone()))
                    });
                    match traced {
                        None => self.chat(req, t0, permit, rid, false).await,
                        Some((span, dispatch)) => {
                            use gatewaylab_trace::{Instrument, WithSubscriber};
                            self.chat(req, t0, permit, rid, true)
                                .instrument(span)
                                .with_subscriber(dispatch)
                                .await
                        }
                    }
                }
            }
        } else {
            self.other(req, &path).await
        };
        self.metrics
            .count_request(route_label(&path), resp.status().as_u16());
        resp
    }

    /// Admission control: a chat request is served only while fewer than
    /// `limits.max_in_flight` are (a stream counts until its relay ends).
    fn admit(&self) -> Option<InFlight> {
        let before = self.in_flight.fetch_add(1, Relaxed);
        if before >= self.cfg.max_in_flight as u64 {
            self.in_flight.fetch_sub(1, Relaxed);
            return None;
        }
        Some(InFlight(Arc::clone(&self.in_flight)))
    }

    /// The answer beyond the limit: 503 `overloaded` with Retry-After, before anything is read,
    /// decided, forwarded or audited (gateway/app.py `GatewayBase.admitted_chat`).
    fn shed(&self) -> Response<GwBody> {
        self.metrics.incr("requests_shed");
        let n = self.cfg.max_in_flight;
        let mut r = error(
            503,
            &format!(
                "the gateway is overloaded ({n} requests in flight); retry after {RETRY_AFTER_S} s"
            ),
            "overloaded",
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(RETRY_AFTER_S));
        r
    }

    /// The guard on hyper's view of the head: the core's `check_headers`, the function
    /// rung 2 runs (what hyper hides is refused earlier, by `raw_head_check`).
    fn guard(&self, headers: &hyper::HeaderMap) -> Result<(), Rejection> {
        let pairs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
            .collect();
        pipeline::check_headers(
            &pairs,
            self.cfg.max_header_bytes as u64,
            self.cfg.max_body_bytes as u64,
        )
        .map(|_| ())
    }

    /// The guard on the head, then the body within its limit (gateway/shell_asgi.py's order).
    async fn head_and_body(
        &self,
        parts: &hyper::http::request::Parts,
        body: &mut Incoming,
    ) -> Result<Bytes, Rejection> {
        let max_b = self.cfg.max_body_bytes as usize;
        if let Err(r) = self.guard(&parts.headers) {
            if r.status == 413 {
                discard_body(body, 8 * max_b).await; // declared too large: drop the body, then answer
            }
            return Err(r);
        }
        read_body(body, max_b).await
    }

    async fn other(&self, req: Request<Incoming>, path: &str) -> Response<GwBody> {
        let (parts, mut body) = req.into_parts();
        if let Err(r) = self.head_and_body(&parts, &mut body).await {
            return rejection_response(&r);
        }
        if parts.method == Method::GET {
            match path {
                "/health" => return json_response(200, self.health()),
                "/v1/models" => return json_response(200, self.models()),
                "/metrics" => {
                    let mut r = Response::new(GwBody::full(self.metrics_text()));
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    return r;
                }
                "/audit/root" => return self.audit_root().await,
                "/audit/consistency" => {
                    let shard = query_param(parts.uri.query(), "shard");
                    return match query_param(parts.uri.query(), "old") {
                        None => error(400, "query parameter 'old' is required", "missing_old"),
                        Some(old) => {
                            self.proof(
                                &old,
                                "'old'",
                                "invalid_old",
                                false,
                                400,
                                "old_out_of_range",
                                shard,
                            )
                            .await
                        }
                    };
                }
                p if p.starts_with("/audit/proof/") => {
                    let raw = percent_decode(&p["/audit/proof/".len()..], false);
                    let shard = query_param(parts.uri.query(), "shard");
                    return self
                        .proof(
                            &raw,
                            "leaf index",
                            "invalid_index",
                            true,
                            404,
                            "index_out_of_range",
                            shard,
                        )
                        .await;
                }
                _ => {}
            }
        }
        let known = matches!(
            path,
            "/health" | "/v1/models" | "/metrics" | "/audit/root" | "/audit/consistency" | CHAT
        ) || path.starts_with("/audit/proof/");
        if known {
            error(
                405,
                &format!("method {} not allowed on {path}", parts.method),
                "method_not_allowed",
            )
        } else {
            error(
                404,
                &format!("no route for {} {path}", parts.method),
                "not_found",
            )
        }
    }

    /// Hand an audit job to the ledger thread (latency: request start to answer ready).
    fn submit(&self, material: Option<AuditMaterial>, status: u16, answer: Answer, t0: Instant) {
        let latency_us = t0.elapsed().as_micros() as i64;
        self.submit_job(material, status, answer, latency_us);
    }

    /// The audit hand-off of a whole answer, once the answer has gone to the connection
    /// (body.rs: after_send), so the response is written before the ledger thread wakes.
    fn audit_after_send(
        self: &Arc<Self>,
        resp: &mut Response<GwBody>,
        material: Option<AuditMaterial>,
        status: u16,
        answer: Vec<u8>,
        t0: Instant,
    ) {
        if material.is_none() || self.ledger.is_none() {
            return;
        }
        let latency_us = t0.elapsed().as_micros() as i64;
        let gw = self.clone();
        self.pending_audits.fetch_add(1, Relaxed);
        resp.body_mut().after_send(Box::new(move || {
            gw.submit_job(material, status, Answer::Body(answer), latency_us);
            gw.pending_audits.fetch_sub(1, Relaxed);
        }));
    }

    /// Under ledger.ack durable: hand the job over and wait until the group commit that
    /// covers its record is done; a record that cannot be written turns the answer into 503
    /// `audit_unavailable`. Otherwise the audit goes after the answer (`audit_after_send`).
    async fn finish(
        self: &Arc<Self>,
        mut resp: Response<GwBody>,
        material: Option<AuditMaterial>,
        status: u16,
        answer: Vec<u8>,
        t0: Instant,
    ) -> Response<GwBody> {
        let ledger = match (&material, self.ledger.as_ref()) {
            (Some(_), Some(l)) if self.durable => l,
            _ => {
                self.audit_after_send(&mut resp, material, status, answer, t0);
                return resp;
            }
        };
        let material = material.expect("matched above");
        let latency_us = t0.elapsed().as_micros() as i64;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ts = Instant::now();
        ledger.submit_acked(
            AuditJob {
                material,
                status,
                answer: Answer::Body(answer),
                latency_us,
            },
            Box::new(move |r| {
                let _ = tx.send(r); // the client may be gone: the record is written all the same
            }),
        );
        self.metrics
            .observe("spawn", ts.elapsed().as_nanos() as u64);
        match rx.await {
            Ok(Ok(())) => resp,
            Ok(Err(why)) => error(503, &why, "audit_unavailable"),
            Err(_) => error(
                503,
                "the audit ledger stopped before the record was written",
                "audit_unavailable",
            ),
        }
    }

    fn submit_job(
        &self,
        material: Option<AuditMaterial>,
        status: u16,
        answer: Answer,
        latency_us: i64,
    ) {
        let (Some(material), Some(ledger)) = (material, self.ledger.as_ref()) else {
            return;
        };
        let ts = Instant::now();
        if !ledger.submit(AuditJob {
            material,
            status,
            answer,
            latency_us,
        }) {
            // only after shutdown began: the drain has already been asked for
            self.metrics.incr("background_dropped");
        }
        self.metrics
            .observe("spawn", ts.elapsed().as_nanos() as u64);
    }

    /// `traced`: this runs inside the request's span (native/trace), under the gateway's tracer;
    /// `permit`: its place among the requests in flight (held until the answer, or the relay, ends).
    async fn chat(
        self: &Arc<Self>,
        req: Request<Incoming>,
        t0: Instant,
        permit: InFlight,
        rid: String,
        traced: bool,
    ) -> Response<GwBody> {
        let (parts, mut body) = req.into_parts();
        let body = match self.head_and_body(&parts, &mut body).await {
            Ok(b) => b,
            Err(r) => return rejection_response(&r),
        };
        let pairs: Vec<(&[u8], &[u8])> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
            .collect();
        let mono_ns = self.started.elapsed().as_nanos() as i128;
        let ctx = Context {
            time_ns: unix_ns(),
            mono_ns,
            request_id: &rid,
        };
        let request = pipeline::Request {
            method: "POST",
            path: CHAT,
            headers: &pairs,
            body: &body,
        };
        let decision = self.pipeline.decide(&request, &ctx);
        let t1 = Instant::now();
        self.metrics
            .observe("decide", t1.duration_since(t0).as_nanos() as u64);
        let trace_id = if traced {
            gatewaylab_trace::current_trace_id()
        } else {
            None
        };
        let stamp = |audit: &mut Option<AuditMaterial>| {
            if let (Some(a), Some(id)) = (audit.as_mut(), trace_id.as_ref()) {
                a.trace_id = id.clone();
            }
        };
        let mut fwd = match decision {
            Decision::Reject(mut r) => {
                stamp(&mut r.audit);
                if r.code == "waf_blocked" {
                    self.metrics.incr("waf_blocks");
                }
                let resp = rejection_response(&r);
                let out = r.body();
                let resp = self.finish(resp, r.audit, r.status, out, t0).await;
                self.metrics
                    .observe("total", t0.elapsed().as_nanos() as u64);
                return resp;
            }
            Decision::Forward(f) => f,
        };
        stamp(&mut fwd.audit);
        if self.sidecar.is_some() {
            if let Some((status, code, message)) = run_plugins(
                &self.metrics,
                self.sidecar.as_ref(),
                &fwd.key_id,
                &fwd.public_model,
                &body,
            )
            .await
            {
                let out = pipeline::error_body(status, &message, code);
                let resp = json_response(status, out.clone());
                return self.finish(resp, fwd.audit, status, out, t0).await;
            }
        }
        if self.router.is_some() && self.pipeline.is_routed(&fwd) {
            return self.routed(fwd, body, t0, rid, permit, traced).await;
        }
        // a traced request's forward stage and its one upstream attempt (routed: one per attempt)
        let attempt = traced.then(|| gatewaylab_trace::Attempt::begin(1, &fwd.url));
        if let Some(tp) = attempt.as_ref().and_then(|a| a.traceparent.clone()) {
            fwd.headers.push(("traceparent".to_string(), tp));
        }
        let attempt_span = attempt
            .as_ref()
            .map_or_else(tracing_span_none, |a| a.span.clone());
        if fwd.stream {
            use gatewaylab_trace::Instrument;
            return self
                .stream(fwd, t0, rid, permit)
                .instrument(attempt_span)
                .await;
        }
        let t2;
        let sent = {
            use gatewaylab_trace::Instrument;
            let post = self
                .upstream
                .post(&fwd.url, &fwd.headers, Bytes::from(fwd.body.clone()));
            post.instrument(attempt_span).await
        };
        if let (Some(a), Ok(r)) = (&attempt, &sent) {
            gatewaylab_trace::attempt_status(&a.span, r.status().as_u16());
        }
        let result = match sent {
            Err(f) => Err(failure(f, self.upstream.timeout())),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let mut rbody = resp.into_body();
                match self.upstream.collect(&mut rbody).await {
                    Err(f) => Err(failure(f, self.upstream.timeout())),
                    Ok(b) => {
                        t2 = Instant::now();
                        self.metrics
                            .observe("forward", t2.duration_since(t1).as_nanos() as u64);
                        let r = self.pipeline.respond(&fwd, status, &b);
                        self.metrics
                            .observe("respond", t2.elapsed().as_nanos() as u64);
                        r
                    }
                }
            }
        };
        let resp = match result {
            Ok((status, out, _)) => {
                let mut r = json_response(status, out.clone());
                if status == 200 {
                    if let Ok(v) = HeaderValue::from_str(&rid) {
                        r.headers_mut().insert("x-request-id", v);
                    }
                }
                self.finish(r, fwd.audit, status, out, t0).await
            }
            Err(f) => {
                self.metrics.incr("upstream_errors");
                let out = f.body();
                let r = json_response(f.status, out.clone());
                self.finish(r, fwd.audit, f.status, out, t0).await
            }
        };
        self.metrics
            .observe("total", t0.elapsed().as_nanos() as u64);
        resp
    }

    /// A stream that failed before its first byte (or a routed request that failed): a whole
    /// error answer, audited as one.
    async fn stream_failed(
        self: &Arc<Self>,
        fwd: Forwarding,
        f: UpstreamFailure,
        t0: Instant,
    ) -> Response<GwBody> {
        self.metrics.incr("upstream_errors");
        let out = f.body();
        let r = json_response(f.status, out.clone());
        let r = self.finish(r, fwd.audit, f.status, out, t0).await;
        self.metrics
            .observe("total", t0.elapsed().as_nanos() as u64);
        r
    }

    /// SSE: the upstream's head and first chunk decide between an error answer and a
    /// stream; then a relay task adapts each upstream chunk as it arrives.
    async fn stream(
        self: &Arc<Self>,
        fwd: Forwarding,
        t0: Instant,
        rid: String,
        permit: InFlight,
    ) -> Response<GwBody> {
        let timeout = self.upstream.timeout();
        let resp = match self
            .upstream
            .post(&fwd.url, &fwd.headers, Bytes::from(fwd.body.clone()))
            .await
        {
            Ok(r) => r,
            Err(f) => return self.stream_failed(fwd, failure(f, timeout), t0).await,
        };
        let status = resp.status().as_u16();
        if self.tracer.is_some() {
            // inside the attempt span when traced (chat instruments this call with it)
            gatewaylab_trace::attempt_status(&gatewaylab_trace::Span::current(), status);
        }
        let mut up = resp.into_body();
        if !(200..300).contains(&status) {
            let _ = self.upstream.collect(&mut up).await;
            return self
                .stream_failed(fwd, UpstreamFailure::status(status), t0)
                .await;
        }
        let first = match self.upstream.next_chunk(&mut up).await {
            Ok(c) => c,
            Err(f) => return self.stream_failed(fwd, failure(f, timeout), t0).await,
        };
        self.relay(fwd, up, first, t0, rid, permit)
    }

    /// A request to a model group: each attempt goes where the router says (docs/router.md);
    /// a stream is retried only until its first chunk. `traced`: one attempt span per attempt.
    async fn routed(
        self: &Arc<Self>,
        fwd: Forwarding,
        body: Bytes,
        t0: Instant,
        rid: String,
        permit: InFlight,
        traced: bool,
    ) -> Response<GwBody> {
        let router = self.router.as_ref().expect("routed requests have a router");
        let timeout = self.upstream.timeout();
        let clock = || self.started.elapsed().as_nanos() as u64;
        let sleep = |ns| tokio::time::sleep(Duration::from_nanos(ns));
        let tokens = (body.len() as u64).div_ceil(4);
        let (f2, b2) = (&fwd, &body);
        let attempts = AtomicU64::new(0);
        let attempts = &attempts;
        let open = |group: String, index: usize| async move {
            let mut t = match self.pipeline.target(&group, index, f2, b2) {
                Err(f) => return (Outcome::Fail, Err(f)),
                Ok(t) => t,
            };
            let n = attempts.fetch_add(1, Relaxed) as u32 + 1;
            let attempt = traced.then(|| gatewaylab_trace::Attempt::begin(n, &t.url));
            if let Some(tp) = attempt.as_ref().and_then(|a| a.traceparent.clone()) {
                t.headers.push(("traceparent".to_string(), tp));
            }
            let post = {
                use gatewaylab_trace::Instrument;
                let span = attempt
                    .as_ref()
                    .map_or_else(tracing_span_none, |a| a.span.clone());
                self.upstream
                    .post(&t.url, &t.headers, Bytes::from(t.body))
                    .instrument(span)
            };
            let resp = match post.await {
                Ok(r) => r,
                Err(f) => return (Outcome::Fail, Err(failure(f, timeout))),
            };
            let status = resp.status().as_u16();
            if let Some(a) = &attempt {
                gatewaylab_trace::attempt_status(&a.span, status);
            }
            let mut up = resp.into_body();
            if !f2.stream || !(200..300).contains(&status) {
                // a JSON answer, or a stream refused with a status: read the body either way
                return match self.upstream.collect(&mut up).await {
                    Err(f) => (Outcome::Fail, Err(failure(f, timeout))),
                    Ok(b) => (
                        if retryable(status) {
                            Outcome::Fail
                        } else {
                            Outcome::Ok
                        },
                        Ok((status, None, b)),
                    ),
                };
            }
            match self.upstream.next_chunk(&mut up).await {
                Ok(first) => (Outcome::Ok, Ok((status, Some((up, first)), Bytes::new()))),
                Err(f) => (Outcome::Fail, Err(failure(f, timeout))),
            }
        };
        let result = match drive(router, &fwd.public_model, tokens, clock, open, sleep).await {
            Err(e) => Err(UpstreamFailure::unavailable(&e)),
            Ok(None) => Err(UpstreamFailure::no_deployment(&fwd.public_model)),
            Ok(Some(r)) => r,
        };
        match result {
            Err(f) => self.stream_failed(fwd, f, t0).await,
            Ok((_, Some((up, first)), _)) => self.relay(fwd, up, first, t0, rid, permit),
            Ok((status, None, _)) if fwd.stream => {
                self.stream_failed(fwd, UpstreamFailure::status(status), t0)
                    .await
            }
            Ok((status, None, b)) => match self.pipeline.respond(&fwd, status, &b) {
                Err(f) => self.stream_failed(fwd, f, t0).await,
                Ok((status, out, _)) => {
                    let mut r = json_response(status, out.clone());
                    if status == 200 {
                        if let Ok(v) = HeaderValue::from_str(&rid) {
                            r.headers_mut().insert("x-request-id", v);
                        }
                    }
                    let r = self.finish(r, fwd.audit, status, out, t0).await;
                    self.metrics
                        .observe("total", t0.elapsed().as_nanos() as u64);
                    r
                }
            },
        }
    }

    /// Relay an upstream stream whose first chunk is in, adapting each chunk as it arrives.
    fn relay(
        self: &Arc<Self>,
        fwd: Forwarding,
        mut up: Incoming,
        first: Option<Bytes>,
        t0: Instant,
        rid: String,
        permit: InFlight,
    ) -> Response<GwBody> {
        let timeout = self.upstream.timeout();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_BUFFER);
        let gw = self.clone();
        tokio::spawn(async move {
            let _permit = permit; // in flight until the relay ends
            let mut relay = gw.pipeline.relay(&fwd);
            let mut status = 499u16; // until we know better: the client went away
            let mut chunk = first;
            let mut error: Option<UpstreamFailure> = None;
            'relay: loop {
                let Some(c) = chunk.take() else {
                    status = 200;
                    if !relay.done().is_empty() {
                        let _ = tx.send(Bytes::from_static(relay.done())).await;
                    }
                    break;
                };
                match relay.feed(&c) {
                    Err(f) => {
                        error = Some(f);
                        break 'relay;
                    }
                    Ok(out) if !out.is_empty() => {
                        if tx.send(Bytes::from(out)).await.is_err() {
                            break 'relay; // the client hung up
                        }
                    }
                    Ok(_) => {}
                }
                tokio::select! {
                    next = gw.upstream.next_chunk(&mut up) => match next {
                        Ok(n) => chunk = n,
                        Err(f) => { error = Some(failure(f, timeout)); break 'relay; }
                    },
                    _ = tx.closed() => break 'relay,
                }
            }
            if let Some(f) = error {
                gw.metrics.incr("upstream_errors");
                status = f.status;
                let mut ev = b"data: ".to_vec();
                ev.extend_from_slice(&f.body());
                ev.extend_from_slice(b"\n\n");
                let _ = tx.send(Bytes::from(ev)).await;
            }
            if status == 499 {
                gw.metrics.incr("streams_abandoned");
            }
            let collected = std::mem::take(&mut relay.collected);
            gw.submit(fwd.audit, status, Answer::Chunks(collected), t0);
            gw.metrics.observe("total", t0.elapsed().as_nanos() as u64);
        });
        let mut r = Response::new(GwBody::stream(rx));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&rid) {
            h.insert("x-request-id", v);
        }
        r
    }

    /// This worker's ledger state, {"count", "root", "durable_count"} (None: --audit off).
    fn local_root(&self) -> Option<serde_json::Value> {
        let l = self.ledger.as_ref()?;
        let led = l.ledger();
        Some(
            json!({"count": led.count(), "root": led.root_hex(), "durable_count": led.durable_count()}),
        )
    }

    /// The control protocol's answer (crate::unit; gateway.workers.Peers._local).
    pub fn control_answer(&self, req: &serde_json::Value) -> serde_json::Value {
        let op = req.get("op").and_then(|v| v.as_str()).unwrap_or("");
        let Some(l) = self.ledger.as_ref() else {
            return json!({"error": "the audit ledger is off (--audit off)"});
        };
        match op {
            "root" => json!({"ok": self.local_root()}),
            "inclusion" | "consistency" => {
                let n = req.get("n").and_then(|v| v.as_i64()).unwrap_or(-1);
                let led = l.ledger();
                let count = led.count();
                let out = match u64::try_from(n) {
                    Err(_) if op == "inclusion" => Err(format!(
                        "leaf index {n} out of range for an MMR of {count} leaves"
                    )),
                    Err(_) => Err(format!(
                        "old count {n} out of range for an MMR of {count} leaves"
                    )),
                    Ok(n) if op == "inclusion" => led
                        .inclusion_proof(n)
                        .map(|p| p.to_json())
                        .map_err(|e| e.to_string()),
                    Ok(n) => led
                        .consistency_proof(n)
                        .map(|p| p.to_json())
                        .map_err(|e| e.to_string()),
                };
                match out {
                    Ok(proof) => {
                        json!({"ok": {"proof": proof, "root": {"count": led.count(), "root": led.root_hex(),
                                                                       "durable_count": led.durable_count()}}})
                    }
                    Err(m) => json!({"error": m, "index_error": true}),
                }
            }
            other => json!({"error": format!("unknown op {other:?}")}),
        }
    }

    async fn ask(&self, unit: &Unit, k: usize, req: &serde_json::Value) -> serde_json::Value {
        if k == unit.index {
            self.control_answer(req)
        } else {
            unit.ask(k, req).await
        }
    }

    /// Every shard's state, or the 503 that names the shards not answering.
    async fn shard_states(
        &self,
        unit: &Unit,
        skip: Option<usize>,
    ) -> Result<Vec<serde_json::Value>, Response<GwBody>> {
        let req = json!({"op": "root"});
        let answers =
            futures_util::future::join_all((0..unit.count).map(|k| self.ask(unit, k, &req))).await;
        let down: Vec<String> = answers
            .iter()
            .enumerate()
            .filter(|(k, a)| Some(*k) != skip && a.get("ok").is_none_or(|v| v.is_null()))
            .map(|(k, a)| {
                format!(
                    "shard {k}: {}",
                    a.get("error")
                        .and_then(|e| e.as_str())
                        .unwrap_or("no ledger")
                )
            })
            .collect();
        if !down.is_empty() {
            return Err(error(
                503,
                &format!("the combined root needs every shard; {}", down.join("; ")),
                "shard_unavailable",
            ));
        }
        Ok(answers.into_iter().map(|mut a| a["ok"].take()).collect())
    }

    /// The combined root over shard rows (crate::shards in the core, "shards v1").
    fn combined(rows: &[serde_json::Value]) -> String {
        let pairs: Vec<(u64, gatewaylab_core::hash::Hash)> = rows
            .iter()
            .map(|r| {
                let root = r["root"]
                    .as_str()
                    .and_then(gatewaylab_core::hash::from_hex)
                    .unwrap_or([0u8; 32]);
                (r["count"].as_u64().unwrap_or(0), root)
            })
            .collect();
        gatewaylab_core::hash::to_hex(&gatewaylab_core::shards::combined_root(&pairs))
    }

    async fn sharded_root(&self, unit: &Unit) -> Response<GwBody> {
        let states = match self.shard_states(unit, None).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let rows: Vec<serde_json::Value> = states
            .iter()
            .enumerate()
            .map(|(k, s)| json!({"shard": k, "count": s["count"], "root": s["root"], "durable_count": s["durable_count"]}))
            .collect();
        let count: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap_or(0)).sum();
        let durable: u64 = rows
            .iter()
            .map(|r| r["durable_count"].as_u64().unwrap_or(0))
            .sum();
        let doc = json!({"layout": "sharded", "format": "shards v1", "root": Self::combined(&rows), "count": count,
                         "durable_count": durable, "shards": rows});
        json_response(200, serde_json::to_vec(&doc).expect("serialises"))
    }

    async fn audit_root(&self) -> Response<GwBody> {
        if let Some(unit) = self.unit.as_ref().filter(|u| u.sharded) {
            if self.ledger.is_some() {
                return self.sharded_root(unit).await;
            }
        }
        let Some(l) = self.ledger.as_ref() else {
            return error(404, "the audit ledger is off (--audit off)", "audit_off");
        };
        let led = l.ledger();
        // key order as the Python gateway writes it
        let body = format!(
            "{{\"count\":{},\"root\":\"{}\",\"durable_count\":{}}}",
            led.count(),
            led.root_hex(),
            led.durable_count()
        );
        json_response(200, body)
    }

    async fn proof(
        &self,
        raw: &str,
        what: &str,
        invalid_code: &str,
        inclusion: bool,
        range_status: u16,
        range_code: &str,
        shard: Option<String>,
    ) -> Response<GwBody> {
        let Some(digits) = index_digits(raw) else {
            return error(
                400,
                &format!(
                    "{what} must be a non-negative integer, got {}",
                    crate::config::py_str(raw)
                ),
                invalid_code,
            );
        };
        let n = index_value(digits);
        let Some(l) = self.ledger.as_ref() else {
            return error(404, "the audit ledger is off (--audit off)", "audit_off");
        };
        if let Some(unit) = self.unit.as_ref().filter(|u| u.sharded) {
            return self
                .shard_proof(unit, n, digits, inclusion, range_status, range_code, shard)
                .await;
        }
        if shard.is_some() {
            return error(
                400,
                "query parameter 'shard' applies to a sharded ledger only",
                "not_sharded",
            );
        }
        let led = l.ledger();
        let count = led.count();
        let out = match n {
            None => Err(out_of_range(inclusion, digits, count)),
            Some(n) if inclusion => led
                .inclusion_proof(n)
                .map(|p| p.to_json())
                .map_err(|e| e.to_string()),
            Some(n) => led
                .consistency_proof(n)
                .map(|p| p.to_json())
                .map_err(|e| e.to_string()),
        };
        match out {
            Ok(v) => json_response(200, serde_json::to_vec(&v).expect("a proof serialises")),
            Err(m) => error(range_status, &m, range_code),
        }
    }

    /// Shard K's proof made by its owner, among every shard's state (docs/workers.md).
    #[allow(clippy::too_many_arguments)]
    async fn shard_proof(
        &self,
        unit: &Unit,
        n: Option<u64>,
        digits: &str,
        inclusion: bool,
        range_status: u16,
        range_code: &str,
        shard: Option<String>,
    ) -> Response<GwBody> {
        let last = unit.count - 1;
        let Some(raw) = shard else {
            return error(
                400,
                &format!("query parameter 'shard' (0..{last}) is required: the ledger is sharded"),
                "missing_shard",
            );
        };
        let Some(k_digits) = index_digits(&raw) else {
            return error(
                400,
                &format!(
                    "'shard' must be a non-negative integer, got {}",
                    crate::config::py_str(&raw)
                ),
                "invalid_shard",
            );
        };
        let Some(k) = k_digits.parse::<usize>().ok().filter(|k| *k < unit.count) else {
            return error(
                404,
                &format!("shard {k_digits} does not exist (0..{last})"),
                "shard_out_of_range",
            );
        };
        let kind = if inclusion {
            "inclusion"
        } else {
            "consistency"
        };
        let Some(n) = n else {
            // beyond any ledger: out of range against the shard's count, no proof to ask for
            let got = self.ask(unit, k, &json!({"op": "root"})).await;
            return match got
                .get("ok")
                .and_then(|v| v.get("count"))
                .and_then(|c| c.as_u64())
            {
                Some(count) => error(
                    range_status,
                    &out_of_range(inclusion, digits, count),
                    range_code,
                ),
                None => {
                    let msg = got
                        .get("error")
                        .and_then(|e| e.as_str())
                        .unwrap_or("no ledger");
                    error(503, &format!("shard {k}: {msg}"), "shard_unavailable")
                }
            };
        };
        let mut got = self.ask(unit, k, &json!({"op": kind, "n": n})).await;
        let Some(ok) = got.get_mut("ok").map(|v| v.take()) else {
            let msg = got
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no answer")
                .to_string();
            if got.get("index_error").and_then(|v| v.as_bool()) == Some(true) {
                return error(range_status, &msg, range_code);
            }
            return error(503, &format!("shard {k}: {msg}"), "shard_unavailable");
        };
        let mut states = match self.shard_states(unit, Some(k)).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let proof = &ok["proof"];
        // the proof's own end state is the shard state it belongs to
        states[k] = if inclusion {
            json!({"count": proof["leaf_count"], "root": proof["root"]})
        } else {
            json!({"count": proof["new_count"], "root": proof["new_root"]})
        };
        let rows: Vec<serde_json::Value> = states
            .iter()
            .enumerate()
            .map(|(j, s)| json!({"shard": j, "count": s["count"], "root": s["root"]}))
            .collect();
        let doc = json!({"layout": "sharded", "format": "shards v1", "kind": kind, "shard": k, "proof": proof,
                         "combined_root": Self::combined(&rows), "shards": rows});
        json_response(200, serde_json::to_vec(&doc).expect("serialises"))
    }

    fn models(&self) -> Vec<u8> {
        let data: Vec<_> = self
            .cfg
            .models
            .iter()
            .map(|(name, _)| json!({"id": name, "object": "model", "created": 0, "owned_by": "gatewaylab"}))
            .collect();
        serde_json::to_vec(&json!({"object": "list", "data": data})).expect("serialises")
    }

    fn ledger_counts(&self) -> (u64, u64, u64) {
        match &self.ledger {
            None => (0, 0, 0),
            Some(l) => {
                let s = l.stats();
                (l.ledger().count(), l.depth(), s.submitted.load(Relaxed))
            }
        }
    }

    /// Records the ledger thread could not write (a stopped WAL: a full disk, say).
    fn audit_failures(&self) -> u64 {
        self.ledger
            .as_ref()
            .map_or(0, |l| l.stats().failed.load(Relaxed))
    }

    fn health(&self) -> Vec<u8> {
        let switches: serde_json::Map<String, serde_json::Value> = crate::config::COMPONENTS
            .iter()
            .map(|c| (c.to_string(), json!("rust")))
            .collect();
        let (records, depth, spawned) = self.ledger_counts();
        let v = json!({
            "status": "ok", "pid": std::process::id(), "shell": "hyper", "server": "gatewaylab-server",
            "mode": "rs-server", "label": "rs-server", "switches": switches,
            "stages": stages_label(&self.cfg.stages), "audit_enabled": self.cfg.audit, "threads": self.opts.threads,
            "queue": {"policy": "block", "size": null, "depth": depth,
                      "dropped": self.metrics.get("background_dropped")},
            "audit": {"records": records, "spawned": spawned, "ack": self.cfg.ack},
            "plugins": {"pre_call": self.cfg.plugins.pre_call,
                        "sidecar_pid": self.sidecar.as_ref().map(Sidecar::pid),
                        "sidecar_alive": self.sidecar.as_ref().map(Sidecar::alive)},
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "workers": self.workers_section(),
        });
        serde_json::to_vec(&v).expect("serialises")
    }

    /// /health's "workers", as gateway/workers.py's health_section writes it for the Python rungs.
    fn workers_section(&self) -> serde_json::Value {
        let Some((index, count)) = self.opts.worker else {
            let cpus = allowed_cpus();
            return json!({"count": 1, "index": 0, "layout": "single-process", "ledger_layout": null, "ready": true,
                          "workers": [{"index": 0, "pid": std::process::id(), "cpus": cpus,
                                       "threads": self.opts.threads, "alive": true}],
                          "dead": [], "clamped": false, "notes": []});
        };
        let unit: serde_json::Value = self
            .unit
            .as_ref()
            .and_then(|u| std::fs::read(u.layout_file()).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"workers": [], "notes": [], "clamped": false}));
        let workers = unit.get("workers").cloned().unwrap_or_else(|| json!([]));
        let dead: Vec<serde_json::Value> = workers
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter(|w| w.get("alive") == Some(&json!(false)))
                    .filter_map(|w| w.get("index").cloned())
                    .collect()
            })
            .unwrap_or_default();
        json!({"count": count, "index": index, "layout": "workers", "ledger_layout": unit.get("ledger_layout"),
               "ready": unit.get("ready").cloned().unwrap_or(json!(false)),
               "workers": workers, "dead": dead, "clamped": unit.get("clamped").cloned().unwrap_or(json!(false)),
               "notes": unit.get("notes").cloned().unwrap_or_else(|| json!([]))})
    }

    fn metrics_text(&self) -> Vec<u8> {
        let (records, depth, spawned) = self.ledger_counts();
        self.metrics.set("audit_records", records);
        self.metrics.set("background_spawned", spawned);
        self.metrics.set("audit_failures", self.audit_failures());
        let in_flight = self.in_flight.load(Relaxed) as f64;
        let mut text = self.metrics.render(&[
            ("background_queue_depth", depth as f64),
            ("requests_in_flight", in_flight),
        ]);
        let mut runs = self.pipeline.stage_runs().to_vec();
        runs.push(("audit", records));
        crate::metrics::render_stage_runs(&mut text, &runs);
        text.into_bytes()
    }

    /// Stop: drain the audit queue into the WAL and close it.
    pub fn shutdown(&self) -> Result<(), String> {
        match &self.ledger {
            Some(l) => l.drain(),
            None => Ok(()),
        }
    }
}

/// What the raw head shows and hyper's view hides or refuses with an empty 400: invalid
/// bytes in a header line, two Content-Length lines (hyper keeps one of two equal ones),
/// Content-Length beside Transfer-Encoding (hyper drops the Content-Length). The Python
/// rungs' HTTP parser (httptools under uvicorn) refuses exactly these before the guard runs,
/// answering 400 `bad_http_framing` (gateway/server.py); so does this, on a closed connection.
/// The answer to a head over the net layer's limits: 431 `headers_too_large`.
fn head_too_large_answer() -> Vec<u8> {
    let body = pipeline::error_body(
        431,
        &format!(
            "request head too large (over the server's buffer or {} header fields)",
            pipeline::MAX_HEADER_FIELDS
        ),
        "headers_too_large",
    );
    let mut out = format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

pub fn raw_head_check(head: &[u8]) -> Option<Vec<u8>> {
    let answer = |status: u16, reason: &str, message: &str, code: &str| {
        let body = pipeline::error_body(status, message, code);
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        Some(out)
    };
    let refuse = |why: &str| {
        answer(
            400,
            "Bad Request",
            &format!("malformed HTTP request: {why}"),
            "bad_http_framing",
        )
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    // the request line's verdicts, as the Python rungs' guard gives them (gateway/stages/guard.py
    // check_scope): HTTP/1.0 and 1.1 only (505), exactly one non-empty Host on HTTP/1.1, no
    // Transfer-Encoding on HTTP/1.0
    let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let request_line = request_line.strip_suffix(b"\r").unwrap_or(request_line);
    let version = request_line
        .rsplit(|&b| b == b' ')
        .next()
        .unwrap_or_default();
    if version.starts_with(b"HTTP/")
        && version != b"HTTP/1.1"
        && version != b"HTTP/1.0"
        && version.len() == 8
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit()
    {
        let v = String::from_utf8_lossy(&version[5..]).into_owned();
        return answer(
            505,
            "HTTP Version Not Supported",
            &format!("HTTP/{v} is not supported (HTTP/1.0 and 1.1 only)"),
            "unsupported_http_version",
        );
    }
    let (mut cl, mut te, mut hosts, mut empty_host) = (0, 0, 0, false);
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return refuse("header line without a colon");
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| token(b)) {
            return refuse("invalid bytes in a header name");
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return refuse("invalid bytes in a header value");
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            cl += 1;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te += 1;
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            empty_host = value.iter().all(|b| b.is_ascii_whitespace());
        }
    }
    if cl > 1 {
        return refuse("duplicate Content-Length header");
    }
    if cl > 0 && te > 0 {
        return refuse("Content-Length together with Transfer-Encoding");
    }
    if hosts > 1 {
        return answer(
            400,
            "Bad Request",
            "more than one Host header",
            "invalid_host",
        );
    }
    if (hosts == 0 && version == b"HTTP/1.1") || empty_host {
        return answer(
            400,
            "Bad Request",
            "an HTTP/1.1 request without a Host header (or with an empty one)",
            "invalid_host",
        );
    }
    if te > 0 && version == b"HTTP/1.0" {
        return answer(
            400,
            "Bad Request",
            "Transfer-Encoding in an HTTP/1.0 request",
            "ambiguous_framing",
        );
    }
    None
}

/// Run the plugin hooks for a forwarded request: None to go on, or the client's answer.
pub async fn run_plugins(
    metrics: &Metrics,
    sidecar: Option<&Sidecar>,
    key_id: &str,
    model: &str,
    body: &[u8],
) -> Option<(u16, &'static str, String)> {
    let sc = sidecar?;
    let t = Instant::now();
    let out = match sc.pre_call(key_id, model, body).await {
        Ok(Verdict::Pass) => None,
        Ok(Verdict::Reject(m)) => Some((403, "plugin_rejected", m)),
        Ok(Verdict::Failed(m)) => Some((500, "plugin_failed", m)),
        Err(e) => {
            metrics.incr("plugin_errors");
            Some(e.answer())
        }
    };
    metrics.observe("plugins", t.elapsed().as_nanos() as u64);
    out
}

/// The CPUs this process may run on (its affinity), for /health.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it for this process
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .collect()
    }
}

/// Build the gateway, bind, announce, serve until SIGTERM/SIGINT, drain the audit queue.
fn tracing_span_none() -> gatewaylab_trace::Span {
    gatewaylab_trace::Span::none()
}

pub fn run(cfg: Config, opts: Options) -> Result<(), String> {
    // before the runtime: the OTLP exporter's blocking HTTP client must not start inside it
    let tracer =
        gatewaylab_trace::Tracer::new(cfg.tracing, &cfg.tracing_endpoint, "gatewaylab", 200)?;
    let tracer_at_exit = tracer.clone();
    let rt =
        gatewaylab_net::server::build_runtime(opts.threads).map_err(|e| format!("runtime: {e}"))?;
    let result = rt.block_on(async move {
        let cannot = |e: std::io::Error| {
            format!(
                "--port: cannot listen on {}:{}: {}",
                opts.host, opts.port, e
            )
        };
        let listener = if opts.reuse_port {
            // a worker of a unit: every worker listens on the port with SO_REUSEPORT and the
            // kernel spreads connections over them
            let addr = tokio::net::lookup_host((opts.host.as_str(), opts.port))
                .await
                .map_err(cannot)?
                .next()
                .ok_or_else(|| format!("--host: {} resolves to no address", opts.host))?;
            let sock = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(cannot)?;
            sock.set_reuseaddr(true).map_err(cannot)?;
            sock.set_reuseport(true).map_err(cannot)?;
            sock.bind(addr).map_err(cannot)?;
            sock.listen(2048).map_err(cannot)?
        } else {
            tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
                .await
                .map_err(cannot)?
        };
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let sidecar = if cfg.plugins.pre_call.is_empty() {
            None
        } else {
            Some(
                Sidecar::start(
                    &opts.python,
                    &cfg.plugins.pre_call,
                    Duration::from_secs_f64(cfg.plugins.timeout_ms / 1000.0),
                    cfg.plugins.max_in_flight as usize,
                    Duration::from_secs(60),
                )
                .await?,
            )
        };
        let sum = opts.float_sum;
        let limits = gatewaylab_net::server::Limits {
            max_connections: 4096,
            // above the guard's own limit, so its 400 headers_too_large answers first
            max_header_bytes: (cfg.max_header_bytes as usize)
                .saturating_mul(2)
                .max(16 * 1024)
                + 4096,
            header_read_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(30)),
            drain_timeout: Duration::from_secs(30),
            head_check: Some(Arc::new(raw_head_check)),
            // a head over hyper's buffer or field count: the guard's 431, OpenAI-shaped, not
            // hyper's bare one (the Python rungs give the same: gateway/framing.py, guard.py)
            head_too_large: Some(head_too_large_answer()),
            max_header_fields: pipeline::MAX_HEADER_FIELDS,
        };
        let gw = Arc::new(Gateway::new(cfg, opts, sidecar, sum, tracer)?);
        if let Some(unit) = gw.unit.as_ref() {
            // a worker of a unit: its peers reach its shard here (bound before it announces)
            let listener = unit.bind()?;
            let g = gw.clone();
            crate::unit::serve(listener, move |req| g.control_answer(req));
        }
        let sig = gatewaylab_net::server::termination_signal();
        println!("gateway listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let g = gw.clone();
        let served = gatewaylab_net::server::serve(
            listener,
            limits,
            move |_| {
                let g = g.clone();
                hyper::service::service_fn(move |req| {
                    let g = g.clone();
                    async move {
                        // a panic in one request is that request's 500, never the process's end
                        let fut = AssertUnwindSafe(g.clone().handle(req));
                        let resp = match futures_util::FutureExt::catch_unwind(fut).await {
                            Ok(r) => r,
                            Err(_) => {
                                g.metrics.count_request("other", 500);
                                error(
                                    500,
                                    "internal error while serving the request",
                                    "internal_error",
                                )
                            }
                        };
                        Ok::<_, Infallible>(resp)
                    }
                })
            },
            sig,
        )
        .await
        .map_err(|e| e.to_string());
        // in-flight requests have finished (or the drain timed out); their audit hand-offs
        // run as tasks behind the answers: let them, then empty the audit queue
        let deadline = Instant::now() + Duration::from_secs(5);
        while gw.pending_audits.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let drained = tokio::task::spawn_blocking(move || gw.shutdown())
            .await
            .map_err(|e| e.to_string())?;
        served.and(drained)
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(t) = tracer_at_exit {
        t.shutdown(); // export what the last requests recorded
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(head: &str) -> Option<String> {
        raw_head_check(head.as_bytes()).map(|r| {
            let text = String::from_utf8(r).unwrap();
            let body = text.split("\r\n\r\n").nth(1).unwrap();
            serde_json::from_str::<serde_json::Value>(body).unwrap()["error"]["message"]
                .as_str()
                .unwrap()
                .to_string()
        })
    }

    #[test]
    fn raw_heads_hyper_would_normalise_are_refused() {
        let h = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n";
        assert_eq!(
            code(&format!("{h}content-length: 2\r\nContent-Length: 2")).unwrap(),
            "malformed HTTP request: duplicate Content-Length header"
        );
        assert!(code(&format!(
            "{h}content-length: 2\r\ntransfer-encoding: chunked"
        ))
        .unwrap()
        .contains("together"));
        assert!(code(&format!("{h}x-evil: a\x01b"))
            .unwrap()
            .contains("header value"));
        assert!(code(&format!("{h}bad name: a"))
            .unwrap()
            .contains("header name"));
        assert_eq!(
            code(&format!("{h}content-length: 2\r\nauthorization: Bearer k")),
            None
        );
        assert_eq!(code(&format!("{h}transfer-encoding: gzip, chunked")), None);
        // the guard's, on hyper's view
    }

    #[test]
    fn audit_index_parsing() {
        assert_eq!(index_digits("0010"), Some("10"));
        assert_eq!(index_digits("000"), Some("0"));
        let huge = "9".repeat(5000); // however many digits: well-formed, out of range later
        assert_eq!(index_digits(&huge), Some(huge.as_str()));
        assert_eq!(index_value(&huge), None);
        assert_eq!(index_value("9223372036854775807"), Some(i64::MAX as u64));
        assert_eq!(index_value("9223372036854775808"), None);
        for bad in [
            "", "x", "-1", "+1", " 1", "1_000", "1__0", "_1", "1.0", "0x10", "\u{663}",
        ] {
            assert_eq!(index_digits(bad), None, "{bad}");
        }
        assert_eq!(
            query_param(Some("a=1&old=%33"), "old").as_deref(),
            Some("3")
        );
        assert_eq!(query_param(Some("old=+1"), "old").as_deref(), Some(" 1"));
        assert_eq!(percent_decode("+1%2B", false), "+1+"); // a path keeps its plus
    }
}
