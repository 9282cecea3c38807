//! Rung 2 (`rs-core`) and the pipeline twin's binding.
//!
//! `Pipeline(config_json)`: `gatewaylab_core::pipeline::Pipeline` for the parity tests
//! (`decide(...)` returns the verdict as plain tuples).
//!
//! `RsCore(config_json, ledger_dir, fsync, group_delay_ms, timeout_s, pool, id_prefix, workers,
//! ledger_delay_ms, ack)`:
//! the whole hot path in Rust. `submit([(token, headers, body), ...])` returns at once; on a Tokio
//! runtime, with the GIL released throughout, the request is decided, forwarded, adapted
//! back and handed to the ledger thread. Completions do not cross into asyncio one future
//! at a time (pyo3-async-runtimes creates an asyncio future, copies the task's context and
//! schedules a `call_soon_threadsafe` per call, ~36 µs of GIL per request here): they are
//! queued, and an eventfd the event loop watches is written only when the queue goes from
//! empty to non-empty. One `drain()` per wake-up hands every completion over at once
//! (gateway/rs_core.py sets the futures). Streams are a channel per stream; `next_chunk`
//! completes through the same queue.
use crate::convert::{bytes_arg, type_name};
use crate::entry;
use crate::errors::{guard, index_error, invalid_input};
use gatewaylab_core::adapter::Kind;
use gatewaylab_core::entropy::PySum;
use gatewaylab_core::job::{Answer, AuditJob};
use gatewaylab_core::ledger::{Ledger, LedgerThread};
use gatewaylab_core::mmr::MmrError;
use gatewaylab_core::pipeline::{
    AuditMaterial, Context, Decision, Forwarding, Pipeline, PipelineConfig, Rejection, Request,
    UpstreamFailure, CHAT_PATH,
};
use gatewaylab_core::router::{drive, Outcome, Router};
use gatewaylab_core::wal::FsyncPolicy;
use gatewaylab_trace::{self as trace, Attempt, Instrument, Span, WithSubscriber};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

fn sum_mode(py: Python<'_>) -> PySum {
    if py.version_info() >= (3, 12) {
        PySum::Neumaier
    } else {
        PySum::Plain
    }
}

fn parse_config(config_json: &str) -> PyResult<Pipeline> {
    parse_config_router(config_json).map(|(p, _)| p)
}

/// The pipeline and, when the config routes groups, the router (gatewaylab_core::router).
fn parse_config_router(config_json: &str) -> PyResult<(Pipeline, Option<Router>)> {
    let cfg: PipelineConfig = serde_json::from_str(config_json)
        .map_err(|e| invalid_input(format!("pipeline config: {e}")))?;
    let router = match &cfg.router {
        None => None,
        Some(v) => Some(Router::from_json(&v.to_string()).map_err(invalid_input)?),
    };
    Ok((Pipeline::new(&cfg).map_err(invalid_input)?, router))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// CLOCK_MONOTONIC in ns: the clock Python's `time.monotonic_ns()` reads.
fn mono_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn header_pairs<'py>(headers: &Bound<'py, PyAny>) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for item in headers.try_iter().map_err(|_| {
        invalid_input(format!(
            "headers must be a list of (bytes, bytes), not {}",
            type_name(headers)
        ))
    })? {
        let item = item?;
        let t = item
            .cast::<PyTuple>()
            .map_err(|_| invalid_input("headers must be (bytes, bytes) pairs"))?;
        if t.len() != 2 {
            return Err(invalid_input("headers must be (bytes, bytes) pairs"));
        }
        out.push((
            bytes_arg(&t.get_item(0)?, "header name")?.into_owned(),
            bytes_arg(&t.get_item(1)?, "header value")?.into_owned(),
        ));
    }
    Ok(out)
}

fn material_tuple<'py>(py: Python<'py>, a: &Option<AuditMaterial>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match a {
        None => py.None().into_bound(py),
        Some(a) => (
            a.time_ns,
            a.request_id.as_str(),
            a.key_id.as_str(),
            a.model.as_str(),
            PyBytes::new(py, &a.request_body),
            a.prompt_tokens,
            a.waf.as_str(),
        )
            .into_pyobject(py)?
            .into_any(),
    })
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::OpenAi => "openai",
        Kind::Anthropic => "anthropic",
    }
}

/// The pipeline twin, for parity tests.
#[pyclass(name = "Pipeline", module = "gateway._native", frozen)]
pub struct PyPipeline {
    inner: Pipeline,
}

#[pymethods]
impl PyPipeline {
    #[new]
    fn new(config_json: &str) -> PyResult<Self> {
        let _c = entry!("pipeline.new");
        guard(|| {
            Ok(Self {
                inner: parse_config(config_json)?,
            })
        })
    }

    /// {stage: times it ran} (gateway/pipeline.py `Pipeline.stage_runs`'s twin).
    fn stage_runs(&self) -> HashMap<&'static str, u64> {
        self.inner.stage_runs().into_iter().collect()
    }

    /// decide(method, path, headers, body, time_ns, mono_ns, request_id) ->
    /// ("reject", status, code, message, headers, audit) |
    /// ("forward", url, headers, body, stream, kind, public_model, adapt, key_id, audit);
    /// audit = None | (time_ns, request_id, key_id, model, request_body, prompt_tokens, waf)
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        path: &str,
        headers: &Bound<'py, PyAny>,
        body: &Bound<'py, PyAny>,
        time_ns: i64,
        mono_ns: i64,
        request_id: &str,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let mut call = entry!("pipeline.decide");
        guard(|| {
            let hs = header_pairs(headers)?;
            let body = bytes_arg(body, "body")?;
            let refs: Vec<(&[u8], &[u8])> = hs
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .collect();
            let d = call.detach(py, || {
                let req = Request {
                    method,
                    path,
                    headers: &refs,
                    body: &body,
                };
                self.inner.decide(
                    &req,
                    &Context {
                        time_ns,
                        mono_ns: mono_ns as i128,
                        request_id,
                    },
                )
            });
            match d {
                Decision::Reject(r) => {
                    let h: Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> = r
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                PyBytes::new(py, k.as_bytes()),
                                PyBytes::new(py, v.as_bytes()),
                            )
                        })
                        .collect();
                    let audit = material_tuple(py, &r.audit)?;
                    ("reject", r.status, r.code, r.message, h, audit).into_pyobject(py)
                }
                Decision::Forward(f) => {
                    let audit = material_tuple(py, &f.audit)?;
                    (
                        "forward",
                        f.url,
                        f.headers,
                        PyBytes::new(py, &f.body),
                        f.stream,
                        kind_name(f.kind),
                        f.public_model,
                        f.adapt,
                        f.key_id,
                        audit,
                    )
                        .into_pyobject(py)
                }
            }
        })
    }
}

// --- rung 2 -------------------------------------------------------------------------------

enum Done {
    Response {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    Stream {
        sid: u64,
        request_id: String,
    },
    Chunk(Option<Vec<u8>>),
}

/// A submitted request waiting for the dispatcher task.
struct Submitted {
    token: u64,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    t0: Instant,
}

struct Shared {
    /// Submissions wait here; the dispatcher is woken only when the inbox turns non-empty
    /// (a wake-up of a parked Tokio worker is a syscall; under load one serves many).
    inbox: Mutex<Vec<Submitted>>,
    inbox_ready: tokio::sync::Notify,
    pipeline: Pipeline,
    /// The router (docs/router.md), when the config has groups; its clock is `epoch`.
    router: Option<Mutex<Router>>,
    epoch: Instant,
    ledger: LedgerThread,
    client: reqwest::Client,
    timeout: Duration,
    prefix: String,
    ids: AtomicU64,
    done: Mutex<Vec<(u64, Done)>>,
    efd: RawFd,
    streams: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>>>>,
    next_sid: AtomicU64,
    upstream_errors: AtomicU64,
    waf_blocks: AtomicU64,
    streams_abandoned: AtomicU64,
    completed: AtomicU64,
    wakeups: AtomicU64,
    /// ledger.ack durable: a whole answer completes only once its record is durable
    durable: bool,
    /// None with tracing off: nothing initialised, request tasks run as before
    tracer: Option<trace::Tracer>,
}

impl Shared {
    fn complete(&self, token: u64, d: Done) {
        let was_empty = {
            let mut q = self.done.lock().unwrap_or_else(|e| e.into_inner());
            let e = q.is_empty();
            q.push((token, d));
            e
        };
        self.completed.fetch_add(1, Relaxed);
        if was_empty {
            // the queue went non-empty: one wake-up for the loop, however many follow
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a u64 we own to our eventfd.
            unsafe { libc::write(self.efd, &one as *const u64 as *const libc::c_void, 8) };
            self.wakeups.fetch_add(1, Relaxed);
        }
    }

    fn audit(&self, material: Option<AuditMaterial>, status: u16, answer: Answer, t0: Instant) {
        if let Some(material) = material {
            let latency_us = t0.elapsed().as_micros() as i64;
            self.ledger.submit(AuditJob {
                material,
                status,
                answer,
                latency_us,
            });
        }
    }

    /// Answer first, then hand the audit job over: waking the ledger thread may switch to it
    /// on a one-core gateway, and the client should not wait for that (the job is queued
    /// before this task ends, so a drain still finds it). Under ledger.ack durable an
    /// audited answer completes from the ledger thread instead, once the group commit that
    /// covers its record is done; a record that cannot be written turns it into 503
    /// `audit_unavailable` (never an answer without its record).
    fn respond_now(
        self: &Arc<Self>,
        token: u64,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        audit: Option<AuditMaterial>,
        t0: Instant,
    ) {
        let Some(material) = audit else {
            return self.complete(
                token,
                Done::Response {
                    status,
                    headers,
                    body,
                },
            );
        };
        let job = AuditJob {
            material,
            status,
            answer: Answer::Body(body.clone()),
            latency_us: t0.elapsed().as_micros() as i64,
        };
        if !self.durable {
            self.complete(
                token,
                Done::Response {
                    status,
                    headers,
                    body,
                },
            );
            self.ledger.submit(job);
            return;
        }
        let sh = Arc::clone(self);
        self.ledger.submit_acked(
            job,
            Box::new(move |written| {
                let done = match written {
                    Ok(()) => Done::Response {
                        status,
                        headers,
                        body,
                    },
                    Err(why) => Done::Response {
                        status: 503,
                        headers: Vec::new(),
                        body: gatewaylab_core::pipeline::error_body(503, &why, "audit_unavailable"),
                    },
                };
                sh.complete(token, done);
            }),
        );
    }

    fn fail(
        self: &Arc<Self>,
        token: u64,
        f: UpstreamFailure,
        audit: Option<AuditMaterial>,
        t0: Instant,
    ) {
        self.upstream_errors.fetch_add(1, Relaxed);
        self.respond_now(token, f.status, Vec::new(), f.body(), audit, t0);
    }
}

fn failure(e: reqwest::Error, secs: f64) -> UpstreamFailure {
    if e.is_timeout() {
        return UpstreamFailure::timeout(secs);
    }
    UpstreamFailure::unavailable(&crate::forwarder::error_chain(&e))
}

fn request(sh: &Shared, f: &Forwarding, traceparent: Option<&str>) -> reqwest::RequestBuilder {
    let mut rb = sh.client.post(&f.url).body(f.body.clone());
    for (k, v) in &f.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    if let Some(tp) = traceparent {
        rb = rb.header("traceparent", tp);
    }
    rb
}

/// The trace id of a traced, sampled request, into its audit material.
fn stamp_trace(traced: bool, audit: &mut Option<AuditMaterial>) {
    if traced {
        if let (Some(a), Some(id)) = (audit.as_mut(), trace::current_trace_id()) {
            a.trace_id = id;
        }
    }
}

/// Answers a request whose task panicked: while armed, dropping it (as unwinding does)
/// completes the token with a 500, so the shell's future never waits forever and the
/// process goes on (Tokio contains the panic to the task).
struct PanicAnswer {
    sh: Arc<Shared>,
    token: u64,
    armed: bool,
}

impl PanicAnswer {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for PanicAnswer {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            let body = gatewaylab_core::pipeline::error_body(
                500,
                "internal error in the gateway (a Rust panic, contained)",
                "internal_error",
            );
            self.sh.complete(
                self.token,
                Done::Response {
                    status: 500,
                    headers: Vec::new(),
                    body,
                },
            );
        }
    }
}

/// Spawns every submitted request onto the runtime (from inside it: no wake-up syscalls).
async fn dispatcher(sh: Arc<Shared>) {
    loop {
        sh.inbox_ready.notified().await;
        let batch = std::mem::take(&mut *sh.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        for s in batch {
            tokio::spawn(handle(Arc::clone(&sh), s.token, s.headers, s.body, s.t0));
        }
    }
}

async fn handle(
    sh: Arc<Shared>,
    token: u64,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    t0: Instant,
) {
    let mut guard = PanicAnswer {
        sh: Arc::clone(&sh),
        token,
        armed: true,
    };
    let rid = format!("{}{}", sh.prefix, sh.ids.fetch_add(1, Relaxed));
    // a sampled request runs in its span under the gateway's tracer; any other as without tracing
    let traced = sh.tracer.as_ref().and_then(|t| {
        let refs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        t.request_span(&refs, &rid, "rs-core")
            .map(|span| (span, t.dispatch.clone()))
    });
    match traced {
        None => answer(sh, token, headers, body, t0, rid, false).await,
        Some((span, dispatch)) => {
            answer(sh, token, headers, body, t0, rid, true)
                .instrument(span)
                .with_subscriber(dispatch)
                .await
        }
    }
    guard.disarm();
}

/// `traced`: the task runs inside its request span (the current span).
async fn answer(
    sh: Arc<Shared>,
    token: u64,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    t0: Instant,
    rid: String,
    traced: bool,
) {
    let decision = {
        let refs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        let req = Request {
            method: "POST",
            path: CHAT_PATH,
            headers: &refs,
            body: &body,
        };
        sh.pipeline.decide(
            &req,
            &Context {
                time_ns: now_ns(),
                mono_ns: mono_ns(),
                request_id: &rid,
            },
        )
    };
    let mut f = match decision {
        Decision::Reject(Rejection {
            status,
            code,
            message,
            headers,
            mut audit,
        }) => {
            if code == "waf_blocked" {
                sh.waf_blocks.fetch_add(1, Relaxed);
            }
            stamp_trace(traced, &mut audit);
            let body = gatewaylab_core::pipeline::error_body(status, &message, code);
            return sh.respond_now(token, status, headers, body, audit, t0);
        }
        Decision::Forward(f) => f,
    };
    stamp_trace(traced, &mut f.audit);
    let secs = sh.timeout.as_secs_f64();
    if sh.router.is_some() && sh.pipeline.is_routed(&f) {
        return routed(sh, token, f, body, rid, t0, traced).await;
    }
    let attempt = traced.then(|| Attempt::begin(1, &f.url));
    if f.stream {
        return stream(sh, token, f, rid, t0, attempt).await;
    }
    let tp = attempt.as_ref().and_then(|a| a.traceparent.as_deref());
    let exchange = async {
        let r = request(&sh, &f, tp).send().await?;
        let status = r.status().as_u16();
        Ok::<_, reqwest::Error>((status, r.bytes().await?))
    };
    let exchange =
        exchange.instrument(attempt.as_ref().map_or_else(Span::none, |a| a.span.clone()));
    let result = tokio::time::timeout(sh.timeout, exchange).await;
    if let (Some(a), Ok(Ok((status, _)))) = (&attempt, &result) {
        trace::attempt_status(&a.span, *status);
    }
    drop(attempt);
    match result {
        Err(_) => sh.fail(token, UpstreamFailure::timeout(secs), f.audit, t0),
        Ok(Err(e)) => sh.fail(token, failure(e, secs), f.audit, t0),
        Ok(Ok((status, rbody))) => match sh.pipeline.respond(&f, status, &rbody) {
            Err(fail) => sh.fail(token, fail, f.audit, t0),
            Ok((status, out, _)) => {
                let headers = if status == 200 {
                    vec![("x-request-id", rid)]
                } else {
                    Vec::new()
                };
                sh.respond_now(token, status, headers, out, f.audit, t0)
            }
        },
    }
}

/// A failure in the middle of a stream: one SSE event carrying the OpenAI error body.
fn error_event(fail: &UpstreamFailure) -> Vec<u8> {
    let mut ev = b"data: ".to_vec();
    ev.extend_from_slice(&fail.body());
    ev.extend_from_slice(b"\n\n");
    ev
}

/// Open an upstream stream: the response once its status is 2xx and its first chunk is in.
/// The error says whether the router may retry it (429, 5xx, timeout, connection error).
/// `attempt`: a traced request's attempt span, which covers the upstream's head and first chunk.
async fn open_stream(
    sh: &Shared,
    rb: reqwest::RequestBuilder,
    attempt: Option<&Attempt>,
) -> Result<(reqwest::Response, Vec<u8>), (UpstreamFailure, bool)> {
    let secs = sh.timeout.as_secs_f64();
    let send = rb
        .send()
        .instrument(attempt.map_or_else(Span::none, |a| a.span.clone()));
    let mut resp = match tokio::time::timeout(sh.timeout, send).await {
        Err(_) => return Err((UpstreamFailure::timeout(secs), true)),
        Ok(Err(e)) => return Err((failure(e, secs), true)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    if let Some(a) = &attempt {
        trace::attempt_status(&a.span, status);
    }
    if !(200..300).contains(&status) {
        return Err((UpstreamFailure::status(status), retryable(status)));
    }
    let first = match tokio::time::timeout(sh.timeout, resp.chunk()).await {
        Err(_) => return Err((UpstreamFailure::timeout(secs), true)),
        Ok(Err(e)) => return Err((failure(e, secs), true)),
        Ok(Ok(c)) => c.map(|b| b.to_vec()).unwrap_or_default(),
    };
    Ok((resp, first))
}

async fn stream(
    sh: Arc<Shared>,
    token: u64,
    f: Forwarding,
    rid: String,
    t0: Instant,
    attempt: Option<Attempt>,
) {
    let tp = attempt.as_ref().and_then(|a| a.traceparent.as_deref());
    let opened = open_stream(&sh, request(&sh, &f, tp), attempt.as_ref()).await;
    drop(attempt);
    match opened {
        Err((fail, _)) => sh.fail(token, fail, f.audit, t0),
        Ok((resp, first)) => relay(sh, token, f, resp, first, rid, t0).await,
    }
}

/// A failure the router retries: 429, 5xx, timeouts, connection errors.
fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

fn target_request(
    sh: &Shared,
    t: gatewaylab_core::pipeline::Target,
    traceparent: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut rb = sh.client.post(&t.url).body(t.body);
    for (k, v) in &t.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    if let Some(tp) = traceparent {
        rb = rb.header("traceparent", tp);
    }
    rb
}

/// A request to a model group: each attempt goes where the router says (docs/router.md).
/// `traced`: each attempt gets its own attempt span (numbered from 1) and `traceparent`.
async fn routed(
    sh: Arc<Shared>,
    token: u64,
    f: Forwarding,
    body: Vec<u8>,
    rid: String,
    t0: Instant,
    traced: bool,
) {
    let router = sh.router.as_ref().expect("routed requests have a router");
    let secs = sh.timeout.as_secs_f64();
    let clock = || sh.epoch.elapsed().as_nanos() as u64;
    let sleep = |ns| tokio::time::sleep(Duration::from_nanos(ns));
    let tokens = (body.len() as u64).div_ceil(4);
    let (sh2, f2, body2) = (&sh, &f, &body);
    let attempts = std::sync::atomic::AtomicU32::new(0);
    // the next attempt's request: numbered from 1, with its own span and traceparent when traced
    let begin = |t: gatewaylab_core::pipeline::Target| {
        let attempt = traced.then(|| Attempt::begin(attempts.fetch_add(1, Relaxed) + 1, &t.url));
        let tp = attempt.as_ref().and_then(|a| a.traceparent.clone());
        (target_request(sh2, t, tp.as_deref()), attempt)
    };
    let begin = &begin;
    if f.stream {
        let send = |group: String, index: usize| async move {
            let t = match sh2.pipeline.target(&group, index, f2, body2) {
                Err(fail) => return (Outcome::Fail, Err(fail)),
                Ok(t) => t,
            };
            let (rb, attempt) = begin(t);
            match open_stream(sh2, rb, attempt.as_ref()).await {
                Ok(opened) => (Outcome::Ok, Ok(opened)),
                Err((fail, retry)) => (if retry { Outcome::Fail } else { Outcome::Ok }, Err(fail)),
            }
        };
        return match drive(router, &f.public_model, tokens, clock, send, sleep).await {
            Ok(Some(Ok((resp, first)))) => {
                relay(Arc::clone(&sh), token, f, resp, first, rid, t0).await
            }
            Ok(Some(Err(fail))) => sh.fail(token, fail, f.audit, t0),
            Ok(None) => sh.fail(
                token,
                UpstreamFailure::no_deployment(&f.public_model),
                f.audit,
                t0,
            ),
            Err(e) => sh.fail(token, UpstreamFailure::unavailable(&e), f.audit, t0),
        };
    }
    let send = |group: String, index: usize| async move {
        let t = match sh2.pipeline.target(&group, index, f2, body2) {
            Err(fail) => return (Outcome::Fail, Err(fail)),
            Ok(t) => t,
        };
        let (rb, attempt) = begin(t);
        let exchange = async {
            let r = rb.send().await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.bytes().await?))
        };
        let exchange =
            exchange.instrument(attempt.as_ref().map_or_else(Span::none, |a| a.span.clone()));
        let result = tokio::time::timeout(sh2.timeout, exchange).await;
        if let (Some(a), Ok(Ok((status, _)))) = (&attempt, &result) {
            trace::attempt_status(&a.span, *status);
        }
        match result {
            Err(_) => (Outcome::Fail, Err(UpstreamFailure::timeout(secs))),
            Ok(Err(e)) => (Outcome::Fail, Err(failure(e, secs))),
            Ok(Ok((status, b))) => (
                if retryable(status) {
                    Outcome::Fail
                } else {
                    Outcome::Ok
                },
                Ok((status, b)),
            ),
        }
    };
    match drive(router, &f.public_model, tokens, clock, send, sleep).await {
        Err(e) => sh.fail(token, UpstreamFailure::unavailable(&e), f.audit, t0),
        Ok(None) => sh.fail(
            token,
            UpstreamFailure::no_deployment(&f.public_model),
            f.audit,
            t0,
        ),
        Ok(Some(Err(fail))) => sh.fail(token, fail, f.audit, t0),
        Ok(Some(Ok((status, rbody)))) => match sh.pipeline.respond(&f, status, &rbody) {
            Err(fail) => sh.fail(token, fail, f.audit, t0),
            Ok((status, out, _)) => {
                let headers = if status == 200 {
                    vec![("x-request-id", rid)]
                } else {
                    Vec::new()
                };
                sh.respond_now(token, status, headers, out, f.audit, t0)
            }
        },
    }
}

async fn relay(
    sh: Arc<Shared>,
    token: u64,
    f: Forwarding,
    mut resp: reqwest::Response,
    first: Vec<u8>,
    rid: String,
    t0: Instant,
) {
    let secs = sh.timeout.as_secs_f64();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    let sid = sh.next_sid.fetch_add(1, Relaxed);
    sh.streams
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(sid, Arc::new(tokio::sync::Mutex::new(rx)));
    sh.complete(
        token,
        Done::Stream {
            sid,
            request_id: rid,
        },
    );
    let mut relay = sh.pipeline.relay(&f);
    let mut chunk = first;
    let mut final_status: u16 = 499; // until we know better: the client went away
    loop {
        match relay.feed(&chunk) {
            Err(fail) => {
                sh.upstream_errors.fetch_add(1, Relaxed);
                final_status = fail.status;
                let _ = tx.send(error_event(&fail)).await;
                break;
            }
            Ok(out) => {
                if !out.is_empty() && tx.send(out).await.is_err() {
                    break; // the client hung up
                }
            }
        }
        // the client hanging up ends the relay at once (and closes the upstream stream), as
        // the Python rungs cancel theirs: it need not wait for the upstream's next chunk
        let next = tokio::select! {
            r = tokio::time::timeout(sh.timeout, resp.chunk()) => r,
            _ = tx.closed() => break,
        };
        let fail = match next {
            Ok(Ok(Some(c))) => {
                chunk = c.to_vec();
                continue;
            }
            Ok(Ok(None)) => {
                if tx.send(relay.done().to_vec()).await.is_ok() {
                    final_status = 200;
                }
                break;
            }
            Ok(Err(e)) => failure(e, secs),
            Err(_) => UpstreamFailure::timeout(secs),
        };
        if tx.is_closed() {
            break; // the client is gone as well: nothing to tell it
        }
        sh.upstream_errors.fetch_add(1, Relaxed);
        final_status = fail.status;
        let _ = tx.send(error_event(&fail)).await;
        break;
    }
    if final_status == 499 {
        sh.streams_abandoned.fetch_add(1, Relaxed);
    }
    drop(tx);
    sh.audit(
        f.audit,
        final_status,
        Answer::Chunks(std::mem::take(&mut relay.collected)),
        t0,
    );
}

#[pyclass(name = "RsCore", module = "gateway._native", frozen)]
pub struct PyRsCore {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    started: Instant,
}

impl PyRsCore {
    /// A proof from the ledger as JSON text, built detached; out of range -> AuditIndexError.
    fn prove(
        &self,
        py: Python<'_>,
        call: &mut crate::gil::Call,
        what: &str,
        n: i64,
        f: impl Fn(&Ledger, u64) -> Result<serde_json::Value, MmrError> + Send + Sync,
    ) -> PyResult<String> {
        guard(|| {
            let r = call.detach(py, || {
                let led = self.shared.ledger.ledger();
                if n < 0 {
                    return Err(format!(
                        "{what} {n} out of range for an MMR of {} leaves",
                        led.count()
                    ));
                }
                f(&led, n as u64)
                    .map(|v| v.to_string())
                    .map_err(|e| e.to_string())
            });
            r.map_err(index_error)
        })
    }

    fn handle(&self) -> PyResult<tokio::runtime::Handle> {
        // the error object is made after the lock is released (docs/interpreters.md)
        let h = (self.runtime.lock().unwrap_or_else(|e| e.into_inner()))
            .as_ref()
            .map(|r| r.handle().clone());
        h.ok_or_else(|| invalid_input("RsCore is shut down"))
    }
}

#[pymethods]
impl PyRsCore {
    #[new]
    #[pyo3(signature = (config_json, ledger_dir, fsync = "group", group_delay_ms = 2.0, timeout_s = 30.0, pool = 256, id_prefix = "req-", workers = 1, ledger_delay_ms = 0.0, ack = "background", tracing = "off", tracing_endpoint = "http://127.0.0.1:4318/v1/traces"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        config_json: &str,
        ledger_dir: &str,
        fsync: &str,
        group_delay_ms: f64,
        timeout_s: f64,
        pool: usize,
        id_prefix: &str,
        workers: usize,
        ledger_delay_ms: f64,
        ack: &str,
        tracing: &str,
        tracing_endpoint: &str,
    ) -> PyResult<Self> {
        let _c = entry!("rs_core.new");
        guard(|| {
            let (pipeline, router) = parse_config_router(config_json)?;
            let durable = match ack {
                "background" => false,
                "durable" => true,
                other => {
                    return Err(invalid_input(format!(
                        "RsCore: ack must be 'background' or 'durable', got {other:?}"
                    )))
                }
            };
            let policy = FsyncPolicy::parse(fsync).map_err(|e| invalid_input(e.to_string()))?;
            let ledger = Ledger::open(std::path::Path::new(ledger_dir), policy, group_delay_ms)
                .map_err(crate::wal::wal_err)?;
            let delay = Duration::try_from_secs_f64(ledger_delay_ms / 1000.0).map_err(|_| {
                invalid_input(format!(
                    "RsCore: ledger_delay_ms must be >= 0, got {ledger_delay_ms}"
                ))
            })?;
            let ledger = LedgerThread::spawn(ledger, sum_mode(py), delay)
                .map_err(|e| invalid_input(format!("ledger thread: {e}")))?;
            let timeout = Duration::try_from_secs_f64(timeout_s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    invalid_input(format!(
                        "RsCore: timeout_s must be a positive number of seconds, got {timeout_s}"
                    ))
                })?;
            // before the runtime: the OTLP exporter's blocking client must not start inside it
            let mode = trace::Mode::parse(tracing).map_err(invalid_input)?;
            let tracer = trace::Tracer::new(mode, tracing_endpoint, "gatewaylab", 200)
                .map_err(invalid_input)?;
            let client =
                crate::forwarder::upstream_client(Duration::from_secs(5).min(timeout), pool)
                    .map_err(|e| invalid_input(format!("RsCore: {e}")))?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers.max(1))
                .thread_name("gatewaylab-rs-core")
                .enable_all()
                .build()
                .map_err(|e| invalid_input(format!("RsCore: runtime: {e}")))?;
            // SAFETY: plain syscall; the fd is closed in Drop.
            let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if efd < 0 {
                return Err(invalid_input(format!(
                    "RsCore: eventfd: {}",
                    std::io::Error::last_os_error()
                )));
            }
            let shared = Arc::new(Shared {
                inbox: Mutex::new(Vec::new()),
                inbox_ready: tokio::sync::Notify::new(),
                pipeline,
                router: router.map(Mutex::new),
                epoch: Instant::now(),
                ledger,
                client,
                timeout,
                prefix: id_prefix.to_string(),
                ids: AtomicU64::new(0),
                done: Mutex::new(Vec::new()),
                efd,
                streams: Mutex::new(HashMap::new()),
                next_sid: AtomicU64::new(0),
                upstream_errors: AtomicU64::new(0),
                waf_blocks: AtomicU64::new(0),
                streams_abandoned: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                wakeups: AtomicU64::new(0),
                durable,
                tracer,
            });
            runtime.spawn(dispatcher(Arc::clone(&shared)));
            Ok(Self {
                shared,
                runtime: Mutex::new(Some(runtime)),
                started: Instant::now(),
            })
        })
    }

    /// The eventfd that becomes readable when completions are waiting (for loop.add_reader).
    fn fileno(&self) -> RawFd {
        self.shared.efd
    }

    /// submit(requests): start chat requests, each a (token, headers, body) tuple; each
    /// completion arrives through drain() as (token, (status, headers, body, None)) or, for a
    /// stream, (token, (200, headers, None, stream_id)). The shell hands over every request
    /// its event loop read in one iteration at once: one wake-up of the runtime for all.
    fn submit(&self, py: Python<'_>, requests: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut call = entry!("rs_core.submit");
        guard(|| {
            let t0 = Instant::now();
            let mut batch = Vec::new();
            for item in requests
                .try_iter()
                .map_err(|_| invalid_input("submit takes a list of (token, headers, body)"))?
            {
                let item = item?;
                let t = item
                    .cast::<PyTuple>()
                    .map_err(|_| invalid_input("submit takes a list of (token, headers, body)"))?;
                if t.len() != 3 {
                    return Err(invalid_input(
                        "submit takes a list of (token, headers, body)",
                    ));
                }
                let token: u64 = t.get_item(0)?.extract()?;
                let hs = header_pairs(&t.get_item(1)?)?;
                let body = bytes_arg(&t.get_item(2)?, "body")?.into_owned();
                batch.push(Submitted {
                    token,
                    headers: hs,
                    body,
                    t0,
                });
            }
            if self
                .runtime
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
            {
                return Err(invalid_input("RsCore is shut down"));
            }
            if batch.is_empty() {
                return Ok(());
            }
            let was_empty = {
                let mut inbox = self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
                let e = inbox.is_empty();
                inbox.append(&mut batch);
                e
            };
            if was_empty {
                // Waking the dispatcher wakes a Tokio worker, which on a one-core gateway may
                // run at once: never with the GIL held.
                let shared = Arc::clone(&self.shared);
                call.detach(py, move || shared.inbox_ready.notify_one());
            }
            Ok(())
        })
    }

    /// next_chunk(token, stream_id): the stream's next bytes complete as (token, bytes),
    /// or (token, None) at its end.
    fn next_chunk(&self, py: Python<'_>, token: u64, stream_id: u64) -> PyResult<()> {
        let mut call = entry!("rs_core.next_chunk");
        guard(|| {
            let rx = self
                .shared
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&stream_id)
                .cloned();
            let sh = Arc::clone(&self.shared);
            let Some(rx) = rx else {
                sh.complete(token, Done::Chunk(None));
                return Ok(());
            };
            let rt = self.handle()?;
            let task = async move {
                let c = rx.lock().await.recv().await;
                if c.is_none() {
                    sh.streams
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&stream_id);
                }
                sh.complete(token, Done::Chunk(c));
            };
            call.detach(py, move || drop(rt.spawn(task)));
            Ok(())
        })
    }

    /// close_stream(stream_id): the client is gone; the relay stops and audits 499.
    fn close_stream(&self, stream_id: u64) {
        let _c = entry!("rs_core.close_stream");
        self.shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&stream_id);
    }

    /// Every completion waiting, as a list of (token, value); resets the eventfd first, so a
    /// completion queued during the call either comes now or writes the eventfd again.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let _c = entry!("rs_core.drain");
        guard(|| {
            let mut buf: u64 = 0;
            // SAFETY: reading 8 bytes into a u64 we own from our non-blocking eventfd.
            unsafe {
                libc::read(
                    self.shared.efd,
                    &mut buf as *mut u64 as *mut libc::c_void,
                    8,
                )
            };
            let items =
                std::mem::take(&mut *self.shared.done.lock().unwrap_or_else(|e| e.into_inner()));
            let out = PyList::empty(py);
            for (token, d) in items {
                let v: Bound<'py, PyAny> = match d {
                    Done::Response {
                        status,
                        headers,
                        body,
                    } => {
                        let h: Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> = headers
                            .iter()
                            .map(|(k, v)| {
                                (
                                    PyBytes::new(py, k.as_bytes()),
                                    PyBytes::new(py, v.as_bytes()),
                                )
                            })
                            .collect();
                        (status, h, PyBytes::new(py, &body), py.None())
                            .into_pyobject(py)?
                            .into_any()
                    }
                    Done::Stream { sid, request_id } => {
                        let h = vec![(
                            PyBytes::new(py, b"x-request-id"),
                            PyBytes::new(py, request_id.as_bytes()),
                        )];
                        (200u16, h, py.None(), sid).into_pyobject(py)?.into_any()
                    }
                    Done::Chunk(Some(b)) => PyBytes::new(py, &b).into_any(),
                    Done::Chunk(None) => py.None().into_bound(py),
                };
                out.append((token, v))?;
            }
            Ok(out)
        })
    }

    /// (count, root, durable_count)
    fn root(&self, py: Python<'_>) -> PyResult<(u64, String, u64)> {
        let mut call = entry!("rs_core.root");
        guard(|| {
            Ok(call.detach(py, || {
                let led = self.shared.ledger.ledger();
                (led.count(), led.root_hex(), led.durable_count())
            }))
        })
    }

    /// inclusion_proof(index) -> proof JSON text (AuditIndexError when out of range)
    fn inclusion_proof(&self, py: Python<'_>, index: i64) -> PyResult<String> {
        let mut call = entry!("rs_core.inclusion_proof");
        self.prove(py, &mut call, "leaf index", index, |led, i| {
            led.inclusion_proof(i).map(|p| p.to_json())
        })
    }

    /// consistency_proof(old_count) -> proof JSON text (AuditIndexError when out of range)
    fn consistency_proof(&self, py: Python<'_>, old_count: i64) -> PyResult<String> {
        let mut call = entry!("rs_core.consistency_proof");
        self.prove(py, &mut call, "old count", old_count, |led, m| {
            led.consistency_proof(m).map(|p| p.to_json())
        })
    }

    /// {stage: times it ran} of the core pipeline (gateway_stage_runs_total; "audit": stats()).
    fn stage_runs(&self) -> HashMap<&'static str, u64> {
        self.shared.pipeline.stage_runs().into_iter().collect()
    }

    /// Counters for /health and /metrics.
    fn stats(&self) -> HashMap<&'static str, u64> {
        let s = &self.shared;
        let l = s.ledger.stats();
        HashMap::from([
            ("upstream_errors", s.upstream_errors.load(Relaxed)),
            ("waf_blocks", s.waf_blocks.load(Relaxed)),
            ("streams_abandoned", s.streams_abandoned.load(Relaxed)),
            ("completed", s.completed.load(Relaxed)),
            ("wakeups", s.wakeups.load(Relaxed)),
            ("audit_submitted", l.submitted.load(Relaxed)),
            ("audit_records", l.appended.load(Relaxed)),
            ("audit_failures", l.failed.load(Relaxed)),
            ("audit_queue_depth", s.ledger.depth()),
            ("uptime_ms", self.started.elapsed().as_millis() as u64),
        ])
    }

    /// Stop the runtime (in-flight requests are abandoned: call after the server has
    /// finished them), then append every queued audit job and close the WAL.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        let mut call = entry!("rs_core.shutdown");
        guard(|| {
            let rt = self
                .runtime
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let r = call.detach(py, move || {
                if let Some(rt) = rt {
                    rt.shutdown_timeout(Duration::from_secs(5));
                }
                if let Some(t) = &self.shared.tracer {
                    t.shutdown(); // export what the finished requests recorded
                }
                self.shared.ledger.drain()
            });
            r.map_err(|e| crate::errors::wal_error(format!("audit ledger drain failed: {e}")))
        })
    }
}

impl Drop for PyRsCore {
    fn drop(&mut self) {
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
        let _ = self.shared.ledger.drain();
        // SAFETY: our fd, closed once.
        unsafe { libc::close(self.shared.efd) };
    }
}

/// error_type(status, code): the OpenAI `type` of an error answer, from the core's table
/// (the twin of gateway.errors.error_type; tests/pipeline/test_decide_parity.py compares them).
#[pyfunction]
#[pyo3(name = "error_type")]
fn py_error_type(status: u16, code: &str) -> &'static str {
    gatewaylab_core::pipeline::error_type(status, code)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_error_type, m)?)?;
    m.add_class::<PyPipeline>()?;
    m.add_class::<PyRsCore>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(dir: &std::path::Path) -> PyRsCore {
        crate::test_python();
        let cfg = serde_json::json!({
            "keys": [{"id": "k", "sha256": gatewaylab_core::hash::sha256_hex(b"sk"), "rpm": null, "tpm": null}],
            "waf_rules": [], "passthrough": true, "max_body_bytes": 1000, "max_header_bytes": 1000,
            "models": [{"name": "mock", "kind": "openai", "url": "http://127.0.0.1:9/v1/chat/completions", "model": "mock", "api_key": null}],
            "stages": ["auth", "parse", "waf", "ratelimit", "adapter"], "audit": true,
        });
        Python::attach(|py| {
            PyRsCore::new(
                py,
                &cfg.to_string(),
                dir.to_str().unwrap(),
                "none",
                1.0,
                1.0,
                4,
                "req-",
                1,
                0.0,
                "background",
                "off",
                trace::DEFAULT_ENDPOINT,
            )
            .unwrap()
        })
    }

    fn taken(c: &PyRsCore) -> Vec<(u64, Done)> {
        std::mem::take(&mut *c.shared.done.lock().unwrap())
    }

    #[test]
    fn a_panicking_request_task_is_answered_500_and_the_core_goes_on() {
        let dir = std::env::temp_dir().join(format!("gl-rscore-panic-{}", std::process::id()));
        let c = core(&dir);
        let sh = Arc::clone(&c.shared);
        let rt = c.handle().unwrap();
        let joined = rt.block_on(rt.spawn(async move {
            let _guard = PanicAnswer {
                sh,
                token: 7,
                armed: true,
            };
            panic!("boom");
        }));
        assert!(joined.unwrap_err().is_panic());
        match taken(&c).as_slice() {
            [(
                7,
                Done::Response {
                    status: 500, body, ..
                },
            )] => {
                assert!(String::from_utf8_lossy(body).contains("\"code\":\"internal_error\""))
            }
            other => panic!(
                "expected one 500 for token 7, got {} completions",
                other.len()
            ),
        }
        // the same core still answers: a request without a key is a 401 with no upstream involved
        let sh = Arc::clone(&c.shared);
        rt.block_on(handle(
            sh,
            8,
            vec![],
            br#"{"model":"mock"}"#.to_vec(),
            Instant::now(),
        ));
        assert!(matches!(
            taken(&c).as_slice(),
            [(8, Done::Response { status: 401, .. })]
        ));
        // a task that finishes normally completes once, with no 500 from its disarmed guard
        let sh = Arc::clone(&c.shared);
        rt.block_on(handle(
            sh,
            9,
            vec![(b"authorization".to_vec(), b"Bearer sk".to_vec())],
            b"{".to_vec(),
            Instant::now(),
        ));
        assert!(matches!(
            taken(&c).as_slice(),
            [(9, Done::Response { status: 400, .. })]
        ));
        Python::attach(|py| c.shutdown(py)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
