//! The mock upstream: an OpenAI- and Anthropic-shaped LLM API whose timing and failures are
//! set per server ([`MockConfig`]) and per request (`x-mock-*` headers).
//!
//! Routes: `POST /v1/chat/completions` (JSON, or SSE when the body says `"stream": true`),
//! `POST /v1/messages` (Anthropic-style JSON or SSE events), `GET /v1/models`, `GET /health`,
//! `GET /mock/stats` (`?reset=1` resets after reading), `POST /mock/stats/reset`.
//!
//! Timing of an API request: wait `latency + U(0, jitter)`, then send headers; a JSON answer
//! follows after the generation time `ttft + (tokens-1)*itl`; an SSE answer sends its first
//! event (with the first token right behind it) after `ttft` and each later token after `itl`. A *stall* freezes the whole server (every
//! request in flight or arriving waits until it ends), like a GC pause: it is triggered by every
//! `stall_every`-th API request, or by a request carrying `x-mock-stall-ms`.
//!
//! Delays use a precise timer (`timer.rs`; tokio's own has 1 ms ticks and rounds up): an
//! injected delay is a lower bound, exceeded by tens of microseconds on an idle machine.
//!
//! Randomness (jitter, error and drop draws, token choice) comes from a RNG seeded with
//! `seed` and the request's arrival number, so a run is deterministic given the seed and the
//! order of arrival.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Server-wide defaults; every field can be overridden per request by a header.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    pub host: String,
    /// 0 = pick a free port.
    pub port: u16,
    pub latency_ms: f64,
    pub jitter_ms: f64,
    pub ttft_ms: f64,
    pub itl_ms: f64,
    /// Completion tokens per answer (capped by the request's `max_tokens`).
    pub tokens: u32,
    /// Status of injected errors (500 when only a rate is given).
    pub error_status: Option<u16>,
    /// Share of API requests answered with `error_status` (1.0 when only a status is given).
    pub error_rate: Option<f64>,
    /// Share of API requests whose connection is closed without an answer.
    pub drop_rate: f64,
    /// Every N-th API request freezes the server for `stall_ms` (0 = never).
    pub stall_every: u64,
    pub stall_ms: f64,
    pub seed: u64,
    /// Worker threads: 1 = current-thread runtime (one core), N > 1 = multi-thread runtime.
    pub threads: usize,
    pub model: String,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            latency_ms: 0.0,
            jitter_ms: 0.0,
            ttft_ms: 0.0,
            itl_ms: 0.0,
            tokens: 16,
            error_status: None,
            error_rate: None,
            drop_rate: 0.0,
            stall_every: 0,
            stall_ms: 0.0,
            seed: 0,
            threads: 1,
            model: "mock-1".into(),
        }
    }
}

impl MockConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("latency_ms", self.latency_ms),
            ("jitter_ms", self.jitter_ms),
            ("ttft_ms", self.ttft_ms),
            ("itl_ms", self.itl_ms),
            ("stall_ms", self.stall_ms),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        for (name, v) in [
            ("error_rate", self.error_rate.unwrap_or(0.0)),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        if let Some(s) = self.error_status {
            if !(100..=999).contains(&s) {
                return Err(format!(
                    "error_status must be an HTTP status (100..999), got {s}"
                ));
            }
        }
        if self.threads == 0 {
            return Err("threads must be >= 1".into());
        }
        if self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("host must be an IP address, got {:?}", self.host));
        }
        Ok(())
    }
}

/// Per-request behaviour after applying headers over the server defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Behaviour {
    pub latency: Duration,
    pub jitter: Duration,
    pub ttft: Duration,
    pub itl: Duration,
    pub tokens: u32,
    pub error_status: Option<u16>,
    pub error_rate: f64,
    pub drop_rate: f64,
    pub stall: Option<Duration>,
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1000.0)
}

fn header_f64(h: &HeaderMap, name: &str) -> Result<Option<f64>, String> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| format!("{name}: not ASCII"))?;
            let x: f64 = s
                .trim()
                .parse()
                .map_err(|_| format!("{name}: not a number: {s:?}"))?;
            if !x.is_finite() || x < 0.0 {
                return Err(format!("{name}: must be a finite number >= 0, got {s:?}"));
            }
            Ok(Some(x))
        }
    }
}

impl Behaviour {
    /// Server defaults overridden by `x-mock-*` headers.
    pub fn resolve(cfg: &MockConfig, h: &HeaderMap) -> Result<Self, String> {
        let latency = header_f64(h, "x-mock-latency-ms")?.unwrap_or(cfg.latency_ms);
        let jitter = header_f64(h, "x-mock-jitter-ms")?.unwrap_or(cfg.jitter_ms);
        let ttft = header_f64(h, "x-mock-ttft-ms")?.unwrap_or(cfg.ttft_ms);
        let itl = header_f64(h, "x-mock-itl-ms")?.unwrap_or(cfg.itl_ms);
        let tokens = match header_f64(h, "x-mock-tokens")? {
            Some(t) if t.fract() == 0.0 && t <= 1_000_000.0 => t as u32,
            Some(t) => {
                return Err(format!(
                    "x-mock-tokens: must be an integer <= 1000000, got {t}"
                ))
            }
            None => cfg.tokens,
        };
        let h_status = header_f64(h, "x-mock-error-status")?;
        let h_rate = header_f64(h, "x-mock-error-rate")?;
        let error_status = match h_status {
            Some(s) if s.fract() == 0.0 && (100.0..=999.0).contains(&s) => Some(s as u16),
            Some(s) => return Err(format!("x-mock-error-status: not an HTTP status: {s}")),
            None => cfg.error_status,
        };
        // A status given alone means "always"; a rate given alone means status 500.
        let error_rate = match (h_rate, h_status) {
            (Some(r), _) => r,
            (None, Some(_)) => 1.0,
            (None, None) => {
                cfg.error_rate
                    .unwrap_or(if cfg.error_status.is_some() { 1.0 } else { 0.0 })
            }
        };
        let drop_rate = header_f64(h, "x-mock-drop-rate")?.unwrap_or(cfg.drop_rate);
        for (name, v) in [
            ("x-mock-error-rate", error_rate),
            ("x-mock-drop-rate", drop_rate),
        ] {
            if v > 1.0 {
                return Err(format!("{name}: must be in [0, 1], got {v}"));
            }
        }
        let stall = header_f64(h, "x-mock-stall-ms")?
            .filter(|&x| x > 0.0)
            .map(ms);
        Ok(Self {
            latency: ms(latency),
            jitter: ms(jitter),
            ttft: ms(ttft),
            itl: ms(itl),
            tokens,
            error_status: if error_rate > 0.0 {
                Some(error_status.unwrap_or(500))
            } else {
                error_status
            },
            error_rate,
            drop_rate,
            stall,
        })
    }
}

/// Requests seen, by route and outcome (status code, or "drop").
#[derive(Default)]
pub struct Stats {
    inner: Mutex<StatsInner>,
}

struct StatsInner {
    since: SystemTime,
    started: Instant,
    counts: BTreeMap<(&'static str, String), u64>,
}

impl Default for StatsInner {
    fn default() -> Self {
        Self {
            since: SystemTime::now(),
            started: Instant::now(),
            counts: BTreeMap::new(),
        }
    }
}

impl Stats {
    pub fn count(&self, route: &'static str, outcome: impl Into<String>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.counts.entry((route, outcome.into())).or_insert(0) += 1;
    }

    /// `{"since_unix_s", "elapsed_s", "total", "by_route": {route: {outcome: n}}}`.
    pub fn snapshot(&self, reset: bool) -> Value {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_route: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
        let mut total = 0;
        for ((route, outcome), n) in g.counts.iter() {
            by_route
                .entry(route)
                .or_default()
                .insert(outcome.clone(), *n);
            total += n;
        }
        let since = g
            .since
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let v = json!({
            "since_unix_s": since,
            "elapsed_s": g.started.elapsed().as_secs_f64(),
            "total": total,
            "by_route": by_route,
        });
        if reset {
            *g = StatsInner::default();
        }
        v
    }
}

/// State shared by every connection of one server.
pub struct MockState {
    pub cfg: MockConfig,
    pub stats: Stats,
    seq: AtomicU64,
    api_seq: AtomicU64,
    base: Instant,
    /// The server is frozen until `base + stall_until_ns`.
    stall_until_ns: AtomicU64,
}

impl MockState {
    pub fn new(cfg: MockConfig) -> Self {
        Self {
            cfg,
            stats: Stats::default(),
            seq: AtomicU64::new(0),
            api_seq: AtomicU64::new(0),
            base: Instant::now(),
            stall_until_ns: AtomicU64::new(0),
        }
    }

    fn trigger_stall(&self, d: Duration) {
        let until = self.base.elapsed() + d;
        self.stall_until_ns
            .fetch_max(until.as_nanos() as u64, Relaxed);
    }

    /// Wait while the server is frozen.
    async fn wait_stall(&self) {
        loop {
            let until = self.base + Duration::from_nanos(self.stall_until_ns.load(Relaxed));
            if until <= Instant::now() {
                return;
            }
            crate::timer::sleep_until(until).await;
        }
    }
}

/// splitmix64: decorrelates (seed, request number) into a RNG seed.
pub fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed
        ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Response bodies

/// Either a whole body, or a paced sequence of chunks (SSE).
pub enum MockBody {
    Full(Option<Bytes>),
    Paced(Paced),
}

/// A pause before the next chunk, and that chunk.
type Pending = (Pin<Box<dyn Future<Output = ()> + Send>>, Bytes);

pub struct Paced {
    chunks: std::collections::VecDeque<(Duration, Bytes)>,
    sleep: Option<Pending>,
}

impl MockBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(b.into()))
    }
    /// Chunks, each sent after its delay (counted from the previous chunk).
    /// Chunks that follow without delay are merged, so an unpaced stream is one write.
    pub fn paced(chunks: Vec<(Duration, Bytes)>) -> Self {
        let mut merged: std::collections::VecDeque<(Duration, Vec<u8>)> =
            std::collections::VecDeque::new();
        for (d, b) in chunks {
            match merged.back_mut() {
                Some((_, prev)) if d.is_zero() => prev.extend_from_slice(&b),
                _ => merged.push_back((d, b.to_vec())),
            }
        }
        let chunks = merged
            .into_iter()
            .map(|(d, b)| (d, Bytes::from(b)))
            .collect();
        MockBody::Paced(Paced {
            chunks,
            sleep: None,
        })
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Paced(p) => loop {
                if let Some((sleep, _)) = p.sleep.as_mut() {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let (_, b) = p.sleep.take().expect("checked above");
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                match p.chunks.pop_front() {
                    None => return Poll::Ready(None),
                    Some((d, b)) if d.is_zero() => return Poll::Ready(Some(Ok(Frame::data(b)))),
                    Some((d, b)) => p.sleep = Some((Box::pin(crate::timer::sleep(d)), b)),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(b) => b.is_none(),
            MockBody::Paced(p) => p.chunks.is_empty() && p.sleep.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Paced(_) => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generated content

const VOCAB: &[&str] = &[
    "the",
    "gateway",
    "forwards",
    "a",
    "request",
    "to",
    "an",
    "upstream",
    "model",
    "and",
    "audits",
    "every",
    "response",
    "with",
    "Merkle",
    "proof",
    "latency",
    "is",
    "measured",
    "from",
    "intended",
    "send",
    "time",
    "so",
    "coordinated",
    "omission",
    "does",
    "not",
    "hide",
    "stalls",
    "tokens",
    "stream",
    "back",
    "as",
    "server",
    "sent",
    "events",
    "while",
    "Rust",
    "releases",
    "GIL",
    "for",
    "work",
    "that",
    "takes",
    "longer",
    "than",
    "microsecond",
    "Python",
    "keeps",
    "hot",
    "path",
    "simple",
    "readable",
    "mock",
    "answers",
    "quickly",
    "under",
    "load",
    "generator",
    "counts",
    "errors",
    "by",
    "kind",
];

/// One generated token with its logprob and alternatives (most likely first).
#[derive(Clone, Debug)]
pub struct Token {
    pub text: String,
    pub logprob: f64,
    pub top: Vec<(String, f64)>,
}

/// `n` tokens drawn from the vocabulary, each with `top_k` alternatives (the chosen token
/// first) when `top_k > 0`; without alternatives the logprob is left at 0.
pub fn gen_tokens(rng: &mut SmallRng, n: u32, top_k: usize) -> Vec<Token> {
    let k = top_k.min(20);
    (0..n)
        .map(|i| {
            let space = if i == 0 { "" } else { " " };
            let first = rng.random_range(0..VOCAB.len());
            if k == 0 {
                return Token {
                    text: format!("{space}{}", VOCAB[first]),
                    logprob: 0.0,
                    top: Vec::new(),
                };
            }
            // A random categorical distribution over k candidates; the chosen token is the top one.
            let mut w: Vec<f64> = (0..k).map(|_| rng.random::<f64>().powi(3) + 1e-3).collect();
            w.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
            let sum: f64 = w.iter().sum::<f64>() + rng.random::<f64>() * 0.2;
            let top: Vec<(String, f64)> = w
                .iter()
                .enumerate()
                .map(|(j, wj)| {
                    (
                        format!("{space}{}", VOCAB[(first + j * 7) % VOCAB.len()]),
                        (wj / sum).ln(),
                    )
                })
                .collect();
            Token {
                text: top[0].0.clone(),
                logprob: top[0].1,
                top,
            }
        })
        .collect()
}

fn logprob_entry(text: &str, lp: f64) -> Value {
    json!({"token": text, "logprob": lp, "bytes": text.as_bytes()})
}

fn openai_logprobs(toks: &[Token], top_n: usize) -> Value {
    let content: Vec<Value> = toks
        .iter()
        .map(|t| {
            let mut e = logprob_entry(&t.text, t.logprob);
            e["top_logprobs"] = Value::Array(
                t.top
                    .iter()
                    .take(top_n)
                    .map(|(s, l)| logprob_entry(s, *l))
                    .collect(),
            );
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// Fields of a chat / messages request the mock looks at.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ApiRequest {
    model: Option<String>,
    stream: Option<bool>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    logprobs: Option<bool>,
    top_logprobs: Option<u64>,
    messages: Option<Vec<Value>>,
    system: Option<Value>,
}

/// A plausible prompt token count: ~4 characters per token, plus a few per message.
fn prompt_tokens(req: &ApiRequest) -> u64 {
    fn chars(v: &Value) -> usize {
        match v {
            Value::String(s) => s.chars().count(),
            Value::Array(a) => a.iter().map(chars).sum(),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| *k == "content" || *k == "text")
                .map(|(_, v)| chars(v))
                .sum(),
            _ => 0,
        }
    }
    let msgs = req.messages.as_deref().unwrap_or(&[]);
    let c: usize =
        msgs.iter().map(chars).sum::<usize>() + req.system.as_ref().map(chars).unwrap_or(0);
    (c as u64).div_ceil(4) + 3 * msgs.len() as u64 + 1
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse_event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

// ---------------------------------------------------------------------------------------------
// Request handling

#[derive(Clone, Copy, PartialEq, Debug)]
enum Route {
    Chat,
    Messages,
    Models,
    Health,
    Stats,
    StatsReset,
    NotFound,
    BadMethod,
}

fn route(m: &Method, path: &str) -> (Route, &'static str) {
    match (path, m) {
        ("/v1/chat/completions", &Method::POST) => (Route::Chat, "POST /v1/chat/completions"),
        ("/v1/messages", &Method::POST) => (Route::Messages, "POST /v1/messages"),
        ("/v1/models", &Method::GET) => (Route::Models, "GET /v1/models"),
        ("/health", &Method::GET) => (Route::Health, "GET /health"),
        ("/mock/stats", &Method::GET) => (Route::Stats, ""),
        ("/mock/stats/reset", &Method::POST) => (Route::StatsReset, ""),
        (
            "/v1/chat/completions"
            | "/v1/messages"
            | "/v1/models"
            | "/health"
            | "/mock/stats"
            | "/mock/stats/reset",
            _,
        ) => (Route::BadMethod, "other"),
        _ => (Route::NotFound, "other"),
    }
}

fn json_response(status: u16, v: &Value) -> Response<MockBody> {
    let mut r = Response::new(MockBody::full(v.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_body(route: Route, status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    if route == Route::Messages {
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        json!({"error": {"message": message, "type": kind, "code": status}})
    }
}

/// Returned as the service error to make hyper close the connection without an answer.
#[derive(Debug)]
pub struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose (x-mock-drop-rate)")
    }
}
impl std::error::Error for Dropped {}

pub async fn handle(
    state: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Dropped> {
    let (r, name) = route(req.method(), req.uri().path());
    let reset_query = req
        .uri()
        .query()
        .map(|q| q.split('&').any(|kv| kv == "reset=1" || kv == "reset=true"))
        .unwrap_or(false);
    let (parts, body) = req.into_parts();
    // Always drain the body so the connection stays usable.
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    match r {
        Route::Stats => return Ok(json_response(200, &state.stats.snapshot(reset_query))),
        Route::StatsReset => return Ok(json_response(200, &state.stats.snapshot(true))),
        Route::Health => {
            state.stats.count(name, "200");
            return Ok(json_response(200, &json!({"status": "ok"})));
        }
        Route::NotFound | Route::BadMethod => {
            let status = if r == Route::NotFound { 404 } else { 405 };
            state.stats.count(name, status.to_string());
            let msg = format!("no route for {} {}", parts.method, parts.uri.path());
            return Ok(json_response(status, &error_body(r, status, &msg)));
        }
        _ => {}
    }

    let seq = state.seq.fetch_add(1, Relaxed);
    let mut rng = SmallRng::seed_from_u64(mix(state.cfg.seed, seq));
    let b = match Behaviour::resolve(&state.cfg, &parts.headers) {
        Ok(b) => b,
        Err(msg) => {
            state.stats.count(name, "400");
            return Ok(json_response(400, &error_body(r, 400, &msg)));
        }
    };
    // Fixed order of draws keeps runs reproducible.
    let jitter = b.jitter.mul_f64(rng.random::<f64>());
    let drop_draw: f64 = rng.random();
    let err_draw: f64 = rng.random();

    let n = state.api_seq.fetch_add(1, Relaxed) + 1;
    if state.cfg.stall_every > 0
        && n.is_multiple_of(state.cfg.stall_every)
        && state.cfg.stall_ms > 0.0
    {
        state.trigger_stall(ms(state.cfg.stall_ms));
    }
    if let Some(d) = b.stall {
        state.trigger_stall(d);
    }
    if drop_draw < b.drop_rate {
        state.stats.count(name, "drop");
        return Err(Dropped);
    }
    let delay = b.latency + jitter;
    if let (Some(status), true) = (b.error_status, err_draw < b.error_rate) {
        state.stats.count(name, status.to_string());
        sleep_and_unstall(&state, delay).await;
        return Ok(json_response(
            status,
            &error_body(r, status, "injected error (x-mock-error-status)"),
        ));
    }
    if r == Route::Models {
        state.stats.count(name, "200");
        sleep_and_unstall(&state, delay).await;
        let m = &state.cfg.model;
        return Ok(json_response(
            200,
            &json!({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "gatewaylab-mock"}]}),
        ));
    }

    let api: ApiRequest = match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Object(_)) => serde_json::from_value(v).unwrap_or_default(),
        Ok(_) => {
            state.stats.count(name, "400");
            return Ok(json_response(
                400,
                &error_body(r, 400, "request body must be a JSON object"),
            ));
        }
        Err(e) => {
            state.stats.count(name, "400");
            return Ok(json_response(
                400,
                &error_body(r, 400, &format!("invalid JSON body: {e}")),
            ));
        }
    };
    state.stats.count(name, "200");
    let cap = api
        .max_completion_tokens
        .or(api.max_tokens)
        .unwrap_or(u64::MAX);
    let n_tokens = (b.tokens as u64).min(cap).max(1) as u32;
    let want_lp = api.logprobs.unwrap_or(false) && r == Route::Chat;
    let top_n = if want_lp {
        api.top_logprobs.unwrap_or(0).min(20) as usize
    } else {
        0
    };
    let toks = gen_tokens(&mut rng, n_tokens, if want_lp { top_n.max(1) } else { 0 });
    let model = api.model.clone().unwrap_or_else(|| state.cfg.model.clone());
    let p_tok = prompt_tokens(&api);
    let stream = api.stream.unwrap_or(false);

    sleep_and_unstall(&state, delay).await;
    let gen_time = b.ttft + b.itl * n_tokens.saturating_sub(1);
    let resp = match (r, stream) {
        (Route::Chat, false) => {
            sleep_and_unstall(&state, gen_time).await;
            json_response(200, &chat_json(seq, &model, &toks, want_lp, top_n, p_tok))
        }
        (Route::Messages, false) => {
            sleep_and_unstall(&state, gen_time).await;
            json_response(200, &messages_json(seq, &model, &toks, p_tok))
        }
        (Route::Chat, true) => sse_response(chat_sse(
            seq, &model, &toks, want_lp, top_n, p_tok, b.ttft, b.itl,
        )),
        (_, true) => sse_response(messages_sse(seq, &model, &toks, p_tok, b.ttft, b.itl)),
        _ => unreachable!("routes handled above"),
    };
    Ok(resp)
}

async fn sleep_and_unstall(state: &MockState, d: Duration) {
    state.wait_stall().await;
    if !d.is_zero() {
        crate::timer::sleep(d).await;
        state.wait_stall().await;
    }
}

fn sse_response(chunks: Vec<(Duration, Bytes)>) -> Response<MockBody> {
    let mut r = Response::new(MockBody::paced(chunks));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

fn text_of(toks: &[Token]) -> String {
    toks.iter().map(|t| t.text.as_str()).collect()
}

fn usage(p: u64, c: usize) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c as u64})
}

pub fn chat_json(
    seq: u64,
    model: &str,
    toks: &[Token],
    lp: bool,
    top_n: usize,
    p_tok: u64,
) -> Value {
    json!({
        "id": format!("chatcmpl-mock-{seq}"),
        "object": "chat.completion",
        "created": now_unix(),
        "model": model,
        "system_fingerprint": "fp_gatewaylab_mock",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text_of(toks), "refusal": null},
            "logprobs": if lp { openai_logprobs(toks, top_n) } else { Value::Null },
            "finish_reason": "stop",
        }],
        "usage": usage(p_tok, toks.len()),
    })
}

#[allow(clippy::too_many_arguments)]
pub fn chat_sse(
    seq: u64,
    model: &str,
    toks: &[Token],
    lp: bool,
    top_n: usize,
    p_tok: u64,
    ttft: Duration,
    itl: Duration,
) -> Vec<(Duration, Bytes)> {
    let id = format!("chatcmpl-mock-{seq}");
    let created = now_unix();
    let chunk = |delta: Value, logprobs: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_gatewaylab_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        })
    };
    let mut out = Vec::with_capacity(toks.len() + 4);
    // The first event waits for the first token, so time to first byte = time to first token.
    out.push((
        ttft,
        sse(&chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            Value::Null,
        )),
    ));
    for (i, t) in toks.iter().enumerate() {
        let lpv = if lp {
            openai_logprobs(std::slice::from_ref(t), top_n)
        } else {
            Value::Null
        };
        let d = if i == 0 { Duration::ZERO } else { itl };
        out.push((d, sse(&chunk(json!({"content": t.text}), lpv, Value::Null))));
    }
    let mut last = chunk(json!({}), Value::Null, json!("stop"));
    last["usage"] = usage(p_tok, toks.len());
    out.push((Duration::ZERO, sse(&last)));
    out.push((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
    out
}

pub fn messages_json(seq: u64, model: &str, toks: &[Token], p_tok: u64) -> Value {
    json!({
        "id": format!("msg_mock_{seq}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text_of(toks)}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": p_tok, "output_tokens": toks.len()},
    })
}

pub fn messages_sse(
    seq: u64,
    model: &str,
    toks: &[Token],
    p_tok: u64,
    ttft: Duration,
    itl: Duration,
) -> Vec<(Duration, Bytes)> {
    let mut out = Vec::with_capacity(toks.len() + 5);
    let start = json!({"type": "message_start", "message": {
        "id": format!("msg_mock_{seq}"), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": p_tok, "output_tokens": 1}}});
    out.push((ttft, sse_event("message_start", &start)));
    let cbs = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
    out.push((Duration::ZERO, sse_event("content_block_start", &cbs)));
    for (i, t) in toks.iter().enumerate() {
        let d = if i == 0 { Duration::ZERO } else { itl };
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t.text}});
        out.push((d, sse_event("content_block_delta", &delta)));
    }
    out.push((
        Duration::ZERO,
        sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ),
    ));
    let md = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"output_tokens": toks.len()}});
    out.push((Duration::ZERO, sse_event("message_delta", &md)));
    out.push((
        Duration::ZERO,
        sse_event("message_stop", &json!({"type": "message_stop"})),
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// Server

/// Serve on `listener` until `shutdown` resolves (the shared server loop, with no idle
/// cutoff: a client's pooled keep-alive connection stays usable between runs).
pub async fn serve(
    listener: TcpListener,
    state: Arc<MockState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = gatewaylab_net::server::Limits {
        drain_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    gatewaylab_net::server::serve(
        listener,
        limits,
        move |_| {
            let st = state.clone();
            hyper::service::service_fn(move |req| handle(st.clone(), req))
        },
        shutdown,
    )
    .await
}

pub use gatewaylab_net::server::{build_runtime, termination_signal};

/// Bind, call `on_ready(addr)`, serve until SIGTERM/SIGINT. Blocks the calling thread.
pub fn run_blocking(cfg: MockConfig, on_ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    cfg.validate()
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
    let rt = build_runtime(cfg.threads)?;
    rt.block_on(async move {
        let listener = TcpListener::bind((cfg.host.as_str(), cfg.port)).await?;
        let addr = listener.local_addr()?;
        // Install the handlers before announcing the address, so a prompt SIGTERM is caught.
        let sig = termination_signal();
        let state = Arc::new(MockState::new(cfg));
        on_ready(addr);
        serve(listener, state, sig).await
    })?;
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// A mock served on a background thread (tests, embedding); stops on drop.
pub struct MockHandle {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl MockHandle {
    pub fn start(cfg: MockConfig) -> std::io::Result<Self> {
        cfg.validate()
            .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
        let (tx_addr, rx_addr) = std::sync::mpsc::channel();
        let (tx_stop, rx_stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = build_runtime(cfg.threads)?;
            rt.block_on(async move {
                let listener = match TcpListener::bind((cfg.host.as_str(), cfg.port)).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx_addr.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                let _ = tx_addr.send(listener.local_addr().map_err(|e| e.to_string()));
                serve(listener, Arc::new(MockState::new(cfg)), async {
                    let _ = rx_stop.await;
                })
                .await
            })
        });
        let addr = rx_addr
            .recv()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .map_err(std::io::Error::other)?;
        Ok(Self {
            addr,
            stop: Some(tx_stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn headers_override_server_defaults() {
        let cfg = MockConfig {
            latency_ms: 5.0,
            tokens: 8,
            ..Default::default()
        };
        let b = Behaviour::resolve(&cfg, &HeaderMap::new()).unwrap();
        assert_eq!(
            (b.latency, b.tokens, b.error_rate, b.error_status),
            (Duration::from_millis(5), 8, 0.0, None)
        );
        let b = Behaviour::resolve(
            &cfg,
            &headers(&[
                ("x-mock-latency-ms", "1.5"),
                ("x-mock-tokens", "3"),
                ("x-mock-error-status", "429"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (b.latency, b.tokens, b.error_rate, b.error_status),
            (Duration::from_micros(1500), 3, 1.0, Some(429))
        );
        let b = Behaviour::resolve(&cfg, &headers(&[("x-mock-error-rate", "0.5")])).unwrap();
        assert_eq!((b.error_rate, b.error_status), (0.5, Some(500)));
        let b = Behaviour::resolve(&cfg, &headers(&[("x-mock-stall-ms", "7")])).unwrap();
        assert_eq!(b.stall, Some(Duration::from_millis(7)));
    }

    #[test]
    fn bad_headers_are_rejected() {
        let cfg = MockConfig::default();
        for (k, v) in [
            ("x-mock-latency-ms", "-1"),
            ("x-mock-latency-ms", "nan"),
            ("x-mock-drop-rate", "1.5"),
            ("x-mock-error-status", "42"),
            ("x-mock-tokens", "2.5"),
            ("x-mock-itl-ms", "soon"),
        ] {
            assert!(
                Behaviour::resolve(&cfg, &headers(&[(k, v)])).is_err(),
                "{k}: {v}"
            );
        }
    }

    #[test]
    fn config_validation() {
        assert!(MockConfig::default().validate().is_ok());
        assert!(MockConfig {
            drop_rate: 2.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(MockConfig {
            latency_ms: -1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(MockConfig {
            threads: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(MockConfig {
            host: "localhost".into(),
            ..Default::default()
        }
        .validate()
        .is_err());
        let parsed: Result<MockConfig, _> = serde_json::from_str(r#"{"latency": 3}"#);
        assert!(parsed.is_err(), "unknown fields are refused");
    }

    #[test]
    fn tokens_are_deterministic_and_logprobs_form_a_distribution() {
        let a = gen_tokens(&mut SmallRng::seed_from_u64(mix(7, 3)), 20, 5);
        let b = gen_tokens(&mut SmallRng::seed_from_u64(mix(7, 3)), 20, 5);
        let c = gen_tokens(&mut SmallRng::seed_from_u64(mix(7, 4)), 20, 5);
        let texts = |t: &[Token]| t.iter().map(|x| x.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&a), texts(&b));
        assert_ne!(texts(&a), texts(&c));
        for t in &a {
            assert_eq!(t.top.len(), 5);
            assert_eq!(t.top[0].0, t.text);
            let p: f64 = t.top.iter().map(|(_, l)| l.exp()).sum();
            assert!(p <= 1.0 + 1e-12 && p > 0.5, "{p}");
            assert!(t.top.windows(2).all(|w| w[0].1 >= w[1].1));
        }
        assert!(!a[0].text.starts_with(' ') && a[1].text.starts_with(' '));
    }

    #[test]
    fn chat_stream_is_openai_chunks_ending_with_done() {
        let toks = gen_tokens(&mut SmallRng::seed_from_u64(1), 3, 0);
        let chunks = chat_sse(
            9,
            "m",
            &toks,
            false,
            0,
            5,
            Duration::from_millis(10),
            Duration::from_millis(2),
        );
        assert_eq!(chunks.first().unwrap().0, Duration::from_millis(10));
        assert_eq!(&chunks.last().unwrap().1[..], b"data: [DONE]\n\n");
        let mut content = String::new();
        for (_, b) in &chunks[..chunks.len() - 1] {
            let s = std::str::from_utf8(b).unwrap();
            let v: Value =
                serde_json::from_str(s.strip_prefix("data: ").unwrap().trim_end()).unwrap();
            assert_eq!(v["object"], "chat.completion.chunk");
            content += v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
        }
        assert_eq!(content, text_of(&toks));
    }

    #[test]
    fn messages_stream_has_anthropic_event_order() {
        let toks = gen_tokens(&mut SmallRng::seed_from_u64(1), 2, 0);
        let names: Vec<String> = messages_sse(1, "m", &toks, 4, Duration::ZERO, Duration::ZERO)
            .iter()
            .map(|(_, b)| {
                std::str::from_utf8(b)
                    .unwrap()
                    .lines()
                    .next()
                    .unwrap()
                    .trim_start_matches("event: ")
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }

    #[test]
    fn stats_count_and_reset() {
        let s = Stats::default();
        s.count("GET /health", "200");
        s.count("GET /health", "200");
        s.count("POST /v1/messages", "drop");
        let v = s.snapshot(true);
        assert_eq!(v["total"], 3);
        assert_eq!(v["by_route"]["GET /health"]["200"], 2);
        assert_eq!(v["by_route"]["POST /v1/messages"]["drop"], 1);
        assert_eq!(s.snapshot(false)["total"], 0);
    }

    #[test]
    fn prompt_tokens_grow_with_the_prompt() {
        let short: ApiRequest =
            serde_json::from_value(json!({"messages": [{"role": "user", "content": "hi"}]}))
                .unwrap();
        let long: ApiRequest = serde_json::from_value(
            json!({"messages": [{"role": "user", "content": "hi ".repeat(100)}]}),
        )
        .unwrap();
        assert!(prompt_tokens(&long) > prompt_tokens(&short) + 50);
    }
}
