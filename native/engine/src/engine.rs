//! The engine: one gateway's state, and the chat request path around the core pipeline.
//!
//! ```text
//! admit (limits.max_in_flight, else 503 overloaded) -> decide (core pipeline: guard, auth,
//! parse, WAF, route, rate limit, adapter) -> [PreCall plugins] -> forward (one attempt, or
//! core::router::drive over a model group) -> respond (response adapter) | relay (SSE)
//! -> Reply to the shell; the audit job: a Handoff the shell runs once the answer is
//! handed over (ack background), or awaited here until durable (ack durable)
//! ```
//!
//! Shells own the wire: rs-core's binding completes replies through its eventfd queue, the
//! rs-server binary writes them with hyper. Neither decides anything.
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use gatewaylab_core::errors::{error_body, UpstreamFailure};
use gatewaylab_core::job::{doc_figures, Answer, AuditJob, Figures};
use gatewaylab_core::ledger::{Ledger, LedgerThread};
use gatewaylab_core::pipeline::{
    AuditMaterial, Context, Decision, Forwarding, Pipeline, Request, CHAT_PATH,
};
use gatewaylab_core::router::Router;
use gatewaylab_core::wal::{FsyncPolicy, WalError};
use gatewaylab_net::client::Upstream;
use gatewaylab_trace::{Instrument, Tracer, WithSubscriber};
use tokio::sync::mpsc;

use crate::metrics::{Counter, Metrics, Stage};
use crate::spec::{Ack, Config, Options, Spec};
use crate::unit::Unit;

/// Retry-After on a shed request, seconds (gateway/app.py RETRY_AFTER_S).
pub const RETRY_AFTER_S: u64 = 1;

/// Why an engine could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// the ledger would not open (locked, corrupt, unwritable)
    Ledger {
        dir: String,
        error: WalError,
    },
    Other(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Ledger { dir, error } => write!(f, "ledger {dir}: {error}"),
            BuildError::Other(m) => f.write_str(m),
        }
    }
}

impl From<String> for BuildError {
    fn from(m: String) -> Self {
        BuildError::Other(m)
    }
}

/// The verdict of a plugin hook on a request to forward.
pub enum Verdict {
    Pass,
    /// answer this instead; `call_failed`: the hook could not be asked (counted in
    /// `plugin_errors`), rather than having said no
    Refuse {
        status: u16,
        code: &'static str,
        message: String,
        call_failed: bool,
    },
}

/// Python `pre_call` plugins, however the shell reaches them (rs-server: a sidecar process).
pub trait PreCall: Send + Sync {
    fn check<'a>(
        &'a self,
        key_id: &'a str,
        model: &'a str,
        body: &'a [u8],
    ) -> BoxFuture<'a, Verdict>;
    /// /health's `plugins` details (the sidecar's pid and whether it is alive)
    fn describe(&self) -> serde_json::Value;
}

/// One admitted chat request's place among `limits.max_in_flight`; dropping it frees it.
pub struct Permit(Arc<AtomicU64>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// What the engine answers a chat request with; the shell writes it out.
pub enum Reply {
    /// A whole answer. The shell adds `content-type: application/json`; `handoff` is the
    /// audit job (ack background), to run once the answer is handed over.
    Whole {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
        handoff: Option<Handoff>,
    },
    /// An SSE stream whose first upstream chunk is in: the chunks as the relay adapts them
    /// (the channel closing is the end). The shell adds the SSE headers and x-request-id.
    /// Dropping `chunks` is the client going away: the relay stops and audits 499.
    Stream {
        request_id: String,
        chunks: mpsc::Receiver<Bytes>,
    },
}

/// An answer's audit job, not yet handed to the ledger thread. `submit` hands it over; so
/// does dropping it, so no answer loses its record whatever the shell does with it.
pub struct Handoff {
    engine: Arc<Engine>,
    /// boxed here already: the ledger thread's channel carries it boxed
    job: Option<Box<AuditJob>>,
}

impl Handoff {
    pub fn submit(mut self) {
        self.hand_over();
    }

    fn hand_over(&mut self) {
        if let Some(job) = self.job.take() {
            self.engine.submit_job(job);
            self.engine.pending.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.hand_over();
    }
}

pub struct Engine {
    pub(crate) config: Config,
    pub(crate) options: Options,
    pub metrics: Metrics,
    pub(crate) pipeline: Pipeline,
    /// the router (docs/router.md), when the config has groups; its clock is `started`
    pub(crate) router: Option<Mutex<Router>>,
    pub(crate) upstream: Upstream,
    pub(crate) ledger: LedgerThread,
    in_flight: Arc<AtomicU64>,
    ids: AtomicU64,
    id_prefix: String,
    pub(crate) started: Instant,
    /// None with tracing off: nothing initialised, requests run as without tracing
    tracer: Option<Tracer>,
    /// a worker of a unit (--workers N, rs-server): its place and its peers' control sockets
    pub(crate) unit: Option<Unit>,
    pre_call: OnceLock<Box<dyn PreCall>>,
    /// handoffs made and not yet run (a shell waits for them before the drain)
    pending: AtomicU64,
}

pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Engine {
    /// Open the ledger, start its thread and (tracing on) the exporter. Call it outside any
    /// Tokio runtime: the OTLP exporter's blocking client must not start inside one.
    pub fn new(spec: Spec, unit: Option<Unit>) -> Result<Self, BuildError> {
        let Spec { config, engine } = spec;
        let pipeline = Pipeline::new(&config.pipeline)?;
        let router = match &config.pipeline.router {
            None => None,
            Some(v) => Some(Mutex::new(Router::from_json(&v.to_string())?)),
        };
        let timeout = Duration::try_from_secs_f64(config.limits.upstream_timeout_s)
            .map_err(|e| format!("limits.upstream_timeout_s: {e}"))?;
        let upstream = Upstream::new(
            config.limits.upstream_pool,
            timeout,
            Duration::from_secs(5).min(timeout),
        );
        let policy =
            FsyncPolicy::parse(&config.ledger.fsync).map_err(|e| format!("ledger.fsync: {e}"))?;
        let led = Ledger::open(
            std::path::Path::new(&config.ledger.dir),
            policy,
            config.ledger.group_delay_ms,
        )
        .map_err(|error| BuildError::Ledger {
            dir: config.ledger.dir.clone(),
            error,
        })?;
        let torn = led.recovery().truncated_bytes;
        if torn > 0 {
            eprintln!("gateway: ledger recovery truncated a torn tail of {torn} bytes");
        }
        let delay = Duration::try_from_secs_f64(engine.ledger_delay_ms.max(0.0) / 1000.0)
            .unwrap_or_default();
        let ledger = LedgerThread::spawn(led, engine.float_sum.into(), delay)
            .map_err(|e| format!("ledger thread: {e}"))?;
        let tracer = Tracer::new(
            config.tracing.mode(),
            &config.tracing.endpoint,
            "gatewaylab",
            200,
        )?;
        let id_prefix = format!(
            "req-{:x}-{:x}-",
            std::process::id(),
            (unix_ns() as u64) & 0xffff_ffff
        );
        Ok(Self {
            config,
            options: engine,
            metrics: Metrics::default(),
            pipeline,
            router,
            upstream,
            ledger,
            in_flight: Arc::new(AtomicU64::new(0)),
            ids: AtomicU64::new(0),
            id_prefix,
            started: Instant::now(),
            tracer,
            unit,
            pre_call: OnceLock::new(),
            pending: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub fn unit(&self) -> Option<&Unit> {
        self.unit.as_ref()
    }

    /// Plug in the plugin hooks (once; rs-server, after its sidecar has started).
    pub fn set_pre_call(&self, hooks: Box<dyn PreCall>) {
        let _ = self.pre_call.set(hooks);
    }

    pub(crate) fn pre_call(&self) -> Option<&dyn PreCall> {
        self.pre_call.get().map(|b| b.as_ref())
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Audit handoffs made and not yet run.
    pub fn pending_handoffs(&self) -> u64 {
        self.pending.load(Relaxed)
    }

    /// Admission control: a chat request is served only while fewer than
    /// `limits.max_in_flight` are (a stream counts until its relay ends).
    pub fn admit(&self) -> Option<Permit> {
        let before = self.in_flight.fetch_add(1, Relaxed);
        if before >= self.config.limits.max_in_flight {
            self.in_flight.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Permit(Arc::clone(&self.in_flight)))
    }

    /// The answer beyond the limit: 503 `overloaded` with Retry-After, before anything is
    /// read, decided, forwarded or audited.
    pub fn shed(&self) -> Reply {
        self.metrics.incr(Counter::RequestsShed);
        let n = self.config.limits.max_in_flight;
        let body = error_body(
            503,
            &format!(
                "the gateway is overloaded ({n} requests in flight); retry after {RETRY_AFTER_S} s"
            ),
            "overloaded",
        );
        Reply::Whole {
            status: 503,
            headers: vec![("retry-after", RETRY_AFTER_S.to_string())],
            body: body.into(),
            handoff: None,
        }
    }

    /// Serve one admitted chat request (`headers`: raw name/value pairs, names lower-case;
    /// `t0`: when the shell started on it). A sampled request runs inside its span.
    pub async fn chat(
        self: &Arc<Self>,
        permit: Permit,
        headers: &[(&[u8], &[u8])],
        body: Bytes,
        t0: Instant,
    ) -> Reply {
        let rid = format!("{}{}", self.id_prefix, self.ids.fetch_add(1, Relaxed));
        let traced = self.tracer.as_ref().and_then(|t| {
            t.request_span(headers, &rid, self.options.rung.label())
                .map(|span| (span, t.dispatch.clone()))
        });
        match traced {
            None => self.answer(permit, headers, body, t0, rid, false).await,
            Some((span, dispatch)) => {
                self.answer(permit, headers, body, t0, rid, true)
                    .instrument(span)
                    .with_subscriber(dispatch)
                    .await
            }
        }
    }

    /// `traced`: this runs inside the request's span (the current span).
    async fn answer(
        self: &Arc<Self>,
        permit: Permit,
        headers: &[(&[u8], &[u8])],
        body: Bytes,
        t0: Instant,
        rid: String,
        traced: bool,
    ) -> Reply {
        let decision = self.pipeline.decide(
            &Request {
                method: "POST",
                path: CHAT_PATH,
                headers,
                body: &body,
            },
            &Context {
                time_ns: unix_ns(),
                mono_ns: self.started.elapsed().as_nanos() as i128,
                request_id: &rid,
            },
        );
        let t1 = Instant::now();
        self.metrics
            .observe(Stage::Decide, t1.duration_since(t0).as_nanos() as u64);
        let trace_id = traced.then(gatewaylab_trace::current_trace_id).flatten();
        let stamp = |audit: &mut Option<AuditMaterial>| {
            if let (Some(a), Some(id)) = (audit.as_mut(), trace_id.as_ref()) {
                a.trace_id = id.clone();
            }
        };
        let mut fwd = match decision {
            Decision::Reject(mut r) => {
                stamp(&mut r.audit);
                if r.code == "waf_blocked" {
                    self.metrics.incr(Counter::WafBlocks);
                }
                let out = r.body().into();
                return self
                    .finish(r.status, r.headers, out, r.audit, None, t0)
                    .await;
            }
            Decision::Forward(f) => f,
        };
        stamp(&mut fwd.audit);
        if let Some(hooks) = self.pre_call() {
            let tp = Instant::now();
            let verdict = hooks.check(&fwd.key_id, &fwd.public_model, &body).await;
            self.metrics
                .observe(Stage::Plugins, tp.elapsed().as_nanos() as u64);
            if let Verdict::Refuse {
                status,
                code,
                message,
                call_failed,
            } = verdict
            {
                if call_failed {
                    self.metrics.incr(Counter::PluginErrors);
                }
                let out = error_body(status, &message, code).into();
                return self
                    .finish(status, Vec::new(), out, fwd.audit, None, t0)
                    .await;
            }
        }
        let got = self.forward(&mut fwd, &body, traced).await;
        let t2 = Instant::now();
        self.metrics
            .observe(Stage::Forward, t2.duration_since(t1).as_nanos() as u64);
        self.respond(fwd, got, permit, rid, t0, t2).await
    }

    /// The upstream's answer -> the client's: adapted back, relayed, or the failure.
    async fn respond(
        self: &Arc<Self>,
        fwd: Forwarding,
        got: Result<crate::forward::Got, UpstreamFailure>,
        permit: Permit,
        rid: String,
        t0: Instant,
        t2: Instant,
    ) -> Reply {
        use crate::forward::Got;
        // a 2xx answer's record figures, read from the document the response adapter parsed:
        // the ledger does not parse the body again
        let mut figures = None;
        let answer = match got {
            Err(f) => Err(f),
            Ok(Got::Stream(up, first)) => return self.relay(fwd, up, first, permit, rid, t0),
            Ok(Got::Whole(status, _)) if fwd.stream => Err(UpstreamFailure::status(status)),
            Ok(Got::Whole(status, b)) => {
                // an answer passing unchanged is sent as the upstream's own buffer
                let (prompt_tokens, mode) = (
                    fwd.audit.as_ref().map(|m| m.prompt_tokens),
                    self.options.float_sum.into(),
                );
                let read = |doc: &gatewaylab_core::stages::adapter::Json<'_>| {
                    figures = prompt_tokens.map(|p| doc_figures(doc, p, mode));
                };
                let r = self
                    .pipeline
                    .respond(&fwd, status, &b, read)
                    .map(|(s, out, code)| {
                        let out = match out {
                            Cow::Borrowed(_) => b.clone(),
                            Cow::Owned(v) => Bytes::from(v),
                        };
                        (s, out, code)
                    });
                self.metrics
                    .observe(Stage::Respond, t2.elapsed().as_nanos() as u64);
                r
            }
        };
        match answer {
            Ok((status, out, _)) => {
                let headers = if status == 200 {
                    vec![("x-request-id", rid)]
                } else {
                    Vec::new()
                };
                self.finish(status, headers, out, fwd.audit, figures, t0)
                    .await
            }
            Err(f) => {
                self.metrics.incr(Counter::UpstreamErrors);
                let out = f.body().into();
                self.finish(f.status, Vec::new(), out, fwd.audit, None, t0)
                    .await
            }
        }
    }

    /// A whole answer and its audit job: handed back as a Handoff (ack background), or
    /// awaited here until the group commit covering its record is done (ack durable); a
    /// record that cannot be written turns the answer into 503 `audit_unavailable` (never an
    /// answer without its record).
    async fn finish(
        self: &Arc<Self>,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
        audit: Option<AuditMaterial>,
        figures: Option<Figures>,
        t0: Instant,
    ) -> Reply {
        let Some(material) = audit else {
            self.metrics
                .observe(Stage::Total, t0.elapsed().as_nanos() as u64);
            return Reply::Whole {
                status,
                headers,
                body,
                handoff: None,
            };
        };
        let job = Box::new(AuditJob {
            material,
            status,
            answer: Answer::Body(body.to_vec()),
            latency_us: t0.elapsed().as_micros() as i64,
            figures,
        });
        let reply = if self.config.ledger.ack == Ack::Durable {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let ts = Instant::now();
            self.ledger.submit_acked(
                job,
                Box::new(move |r| {
                    let _ = tx.send(r); // the client may be gone: the record is written all the same
                }),
            );
            self.metrics
                .observe(Stage::Spawn, ts.elapsed().as_nanos() as u64);
            let why = match rx.await {
                Ok(Ok(())) => None,
                Ok(Err(why)) => Some(why),
                Err(_) => Some("the audit ledger stopped before the record was written".into()),
            };
            match why {
                None => Reply::Whole {
                    status,
                    headers,
                    body,
                    handoff: None,
                },
                Some(why) => Reply::Whole {
                    status: 503,
                    headers: Vec::new(),
                    body: error_body(503, &why, "audit_unavailable").into(),
                    handoff: None,
                },
            }
        } else {
            self.pending.fetch_add(1, Relaxed);
            Reply::Whole {
                status,
                headers,
                body,
                handoff: Some(Handoff {
                    engine: Arc::clone(self),
                    job: Some(job),
                }),
            }
        };
        self.metrics
            .observe(Stage::Total, t0.elapsed().as_nanos() as u64);
        reply
    }

    /// Hand a job to the ledger thread.
    pub(crate) fn submit_job(&self, job: impl Into<Box<AuditJob>>) {
        let ts = Instant::now();
        if !self.ledger.submit(job) {
            // only after shutdown began: the drain has already been asked for
            self.metrics.incr(Counter::BackgroundDropped);
        }
        self.metrics
            .observe(Stage::Spawn, ts.elapsed().as_nanos() as u64);
    }

    /// (count, root, durable count) of this engine's ledger.
    pub fn root(&self) -> (u64, String, u64) {
        let led = self.ledger.ledger();
        (led.count(), led.root_hex(), led.durable_count())
    }

    /// Append every queued audit job and close the WAL (in-flight requests are done).
    pub fn drain(&self) -> Result<(), String> {
        self.ledger.drain()
    }

    /// Export what the finished requests recorded and stop the exporter (tracing on).
    pub fn shutdown_tracing(&self) {
        if let Some(t) = &self.tracer {
            t.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(dir: &std::path::Path, ack: &str, max_in_flight: u64) -> Arc<Engine> {
        let sha = gatewaylab_core::hash::sha256_hex(b"sk");
        let spec = serde_json::json!({
            "config": {
                "pipeline": {
                    "keys": [{"id": "k", "sha256": sha, "rpm": null, "tpm": null}],
                    "waf_rules": [{"id": "r", "kind": "literal", "pattern": "evil", "case_insensitive": false}],
                    "passthrough": true, "max_body_bytes": 1000, "max_header_bytes": 1000,
                    "models": [{"name": "m", "kind": "openai", "url": "http://127.0.0.1:9/v1/chat/completions",
                                "model": "m", "api_key": null}],
                    "stages": ["auth", "parse", "waf", "ratelimit", "adapter"], "audit": true,
                    "router": null, "deployments": [],
                },
                "ledger": {"dir": dir.to_str().unwrap(), "fsync": "none", "group_delay_ms": 1.0, "ack": ack},
                "limits": {"upstream_timeout_s": 1.0, "upstream_pool": 4, "max_in_flight": max_in_flight},
                "plugins": {"pre_call": [], "timeout_ms": 200.0, "max_in_flight": 64},
                "tracing": {"mode": "off", "ratio": 0.0, "endpoint": "http://127.0.0.1:4318/v1/traces"},
            },
            "engine": {"rung": "rs-server", "threads": 1, "float_sum": "plain", "ledger_delay_ms": 0.0},
        });
        Arc::new(Engine::new(Spec::from_json(&spec.to_string()).unwrap(), None).unwrap())
    }

    fn status(r: &Reply) -> u16 {
        match r {
            Reply::Whole { status, .. } => *status,
            Reply::Stream { .. } => 200,
        }
    }

    #[test]
    fn admission_sheds_beyond_the_limit_and_frees_places() {
        let dir = std::env::temp_dir().join(format!("gl-engine-admit-{}", std::process::id()));
        let e = engine(&dir, "background", 1);
        let held = e.admit().expect("the first place");
        assert!(e.admit().is_none());
        match e.shed() {
            Reply::Whole {
                status, headers, ..
            } => assert_eq!(
                (status, headers),
                (503, vec![("retry-after", "1".to_string())])
            ),
            Reply::Stream { .. } => panic!("a shed answer is whole"),
        }
        assert_eq!(e.metrics.get(Counter::RequestsShed), 1);
        drop(held);
        assert!(e.admit().is_some() && e.in_flight() == 0);
        e.drain().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refusals_are_answered_and_audited_as_decided_on_either_ack() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for ack in ["background", "durable"] {
            let dir = std::env::temp_dir().join(format!("gl-engine-{ack}-{}", std::process::id()));
            let e = engine(&dir, ack, 8);
            let auth: &[(&[u8], &[u8])] = &[(b"authorization", b"Bearer sk")];
            let blocked = br#"{"model":"m","messages":[{"role":"user","content":"evil"}]}"#;
            let chat = |h: &'static [(&'static [u8], &'static [u8])], b: &'static [u8]| {
                let e = Arc::clone(&e);
                rt.block_on(async move {
                    let p = e.admit().unwrap();
                    e.chat(p, h, Bytes::from_static(b), Instant::now()).await
                })
            };
            assert_eq!(status(&chat(&[], blocked)), 401); // no key: not audited
            let r = chat(auth, blocked); // a WAF block: audited
            assert_eq!(status(&r), 403);
            assert_eq!(e.metrics.get(Counter::WafBlocks), 1);
            match (ack, r) {
                ("background", Reply::Whole { handoff, .. }) => {
                    assert!(handoff.is_some() && e.pending_handoffs() == 1);
                    drop(handoff); // dropping a handoff hands the job over
                    assert_eq!(e.pending_handoffs(), 0);
                }
                (_, Reply::Whole { handoff, .. }) => assert!(handoff.is_none()), // written already
                _ => panic!("a refusal is whole"),
            }
            e.drain().unwrap();
            assert_eq!(e.root().0, 1);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
