//! The load generator: HTTP/1.1 keep-alive, closed or open loop, HDR histograms.
//!
//! - Closed loop (`concurrency = C`): C workers, one connection each, each sends its next
//!   request when the previous one is answered. Latency runs from the actual send time, so a
//!   server stall delays the *next* requests instead of showing in them (coordinated
//!   omission); that is what closed-loop tools report, and why the open loop exists.
//! - Open loop (`rate = R`): request `i` is due at `t0 + i/R` (or Poisson arrivals), whatever
//!   happened before. A pool of connections takes due requests in order; a request sent late
//!   (all connections busy) is measured from its *intended* send time, so stalls show in the
//!   percentiles (coordinated omission corrected, as in wrk2).
//!
//! A run is bounded by construction: issuing stops at `warmup + duration` (or after `requests`
//! measured requests, capped at `max_duration_s`), and every request has a timeout.
//! Requests whose (intended) send time falls in the warm-up are sent but not recorded.
//!
//! Result JSON (`LoadResult`): `{"mode", "concurrency", "rate", "duration_s", "requests",
//! "errors": {kind: n}, "rps", "latency_us": {"p50","p90","p95","p99","p999","max"},
//! ["ttfb_us": {...} in streaming mode], "series": [...], "meta": {...}}`, where
//! `meta.latency_ok_us` holds the same percentiles over 2xx answers only;
//! `requests` counts measured requests that finished (answered or failed), `rps` counts 2xx
//! answers per second of the measured window, and error kinds are `connect`, `timeout`,
//! `reset` (connection closed or reset before a full answer), `protocol`, `io`,
//! `status_4xx`, `status_5xx`, `status_other`.
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Input of one run (JSON from Python / the CLI).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// `http://host:port/path?query`.
    pub url: String,
    /// Closed loop with this many workers (one connection each).
    pub concurrency: Option<usize>,
    /// Open loop at this many requests per second.
    pub rate: Option<f64>,
    /// Open loop: connection pool size (default max(16, 5% of the rate), at most 1024).
    pub connections: Option<usize>,
    /// Measured window length in seconds.
    pub duration_s: Option<f64>,
    /// Stop after this many measured requests.
    pub requests: Option<u64>,
    pub warmup_s: f64,
    /// Default: POST when a body is given, else GET.
    pub method: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Record time to first body byte (`ttfb_us`) beside total time.
    pub stream: bool,
    pub timeout_s: f64,
    /// 1 = current-thread runtime (one core); N > 1 = multi-thread runtime.
    pub threads: usize,
    pub seed: u64,
    /// Open loop arrivals: "uniform" (every 1/R s) or "poisson".
    pub arrival: String,
    /// Hard cap on the measured window when only `requests` bounds it.
    pub max_duration_s: f64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            concurrency: None,
            rate: None,
            connections: None,
            duration_s: None,
            requests: None,
            warmup_s: 0.0,
            method: None,
            headers: Vec::new(),
            body: None,
            stream: false,
            timeout_s: 10.0,
            threads: 1,
            seed: 0,
            arrival: "uniform".into(),
            max_duration_s: 600.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Closed {
        concurrency: usize,
    },
    Open {
        rate: f64,
        connections: usize,
        poisson: bool,
    },
}

/// A validated config, ready to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub cfg: LoadConfig,
    pub mode: Mode,
    pub addr: SocketAddr,
    pub uri: Uri,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub window: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
}

fn secs(name: &str, v: f64, min: f64) -> Result<Duration, String> {
    if !v.is_finite() || v < min || v > 1e6 {
        return Err(format!(
            "{name} must be a number in [{min}, 1e6] seconds, got {v}"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

impl Plan {
    pub fn new(cfg: LoadConfig) -> Result<Self, String> {
        let mode = match (cfg.concurrency, cfg.rate) {
            (Some(c), None) if (1..=100_000).contains(&c) => Mode::Closed { concurrency: c },
            (Some(c), None) => return Err(format!("concurrency must be in 1..=100000, got {c}")),
            (None, Some(r)) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => {
                let connections = cfg
                    .connections
                    .unwrap_or(((r * 0.05).ceil() as usize).clamp(16, 1024));
                if !(1..=100_000).contains(&connections) {
                    return Err(format!(
                        "connections must be in 1..=100000, got {connections}"
                    ));
                }
                let poisson = match cfg.arrival.as_str() {
                    "uniform" => false,
                    "poisson" => true,
                    a => {
                        return Err(format!(
                            "arrival must be \"uniform\" or \"poisson\", got {a:?}"
                        ))
                    }
                };
                Mode::Open {
                    rate: r,
                    connections,
                    poisson,
                }
            }
            (None, Some(r)) => {
                return Err(format!(
                    "rate must be a number in (0, 1e7] requests/s, got {r}"
                ))
            }
            (Some(_), Some(_)) => {
                return Err(
                    "give either concurrency (closed loop) or rate (open loop), not both".into(),
                )
            }
            (None, None) => return Err("give concurrency (closed loop) or rate (open loop)".into()),
        };
        let max = secs("max_duration_s", cfg.max_duration_s, 0.001)?;
        let window = match (cfg.duration_s, cfg.requests) {
            (Some(d), _) => secs("duration_s", d, 0.001)?.min(max),
            (None, Some(_)) => max,
            (None, None) => {
                return Err("give duration_s and/or requests: a run must be bounded".into())
            }
        };
        if cfg.requests == Some(0) {
            return Err("requests must be >= 1".into());
        }
        let warmup = secs("warmup_s", cfg.warmup_s, 0.0)?;
        let timeout = secs("timeout_s", cfg.timeout_s, 0.001)?;
        if cfg.threads == 0 || cfg.threads > 256 {
            return Err(format!("threads must be in 1..=256, got {}", cfg.threads));
        }
        let uri: Uri = cfg
            .url
            .parse()
            .map_err(|e| format!("url {:?}: {e}", cfg.url))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "url must start with http:// (no TLS), got {:?}",
                cfg.url
            ));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("url has no host: {:?}", cfg.url))?;
        let port = uri.port_u16().unwrap_or(80);
        let host_plain = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (host_plain, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let path: Uri = if path.is_empty() {
            Uri::from_static("/")
        } else {
            path.parse().map_err(|e| format!("path: {e}"))?
        };
        let body = Bytes::from(cfg.body.clone().unwrap_or_default());
        let method = match &cfg.method {
            Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("bad method {m:?}"))?,
            None if cfg.body.is_some() => Method::POST,
            None => Method::GET,
        };
        let mut headers = HeaderMap::new();
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.to_string());
        headers.insert(
            HOST,
            HeaderValue::from_str(&authority).map_err(|e| format!("host header: {e}"))?,
        );
        if cfg.body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| format!("bad header name {k:?}"))?;
            let value = HeaderValue::from_str(v.trim())
                .map_err(|_| format!("bad value for header {k:?}: {v:?}"))?;
            if name == HOST || name == CONTENT_TYPE {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
        Ok(Self {
            mode,
            addr,
            uri: path,
            method,
            headers,
            body,
            window,
            warmup,
            timeout,
            cfg,
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }

    fn workers(&self) -> usize {
        match self.mode {
            Mode::Closed { concurrency } => concurrency,
            Mode::Open { connections, .. } => connections,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recording

const HIST_MAX_US: u64 = 3_600_000_000;

fn hist(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, sigfig).expect("static bounds are valid")
}

/// What happened to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Answer {
        status: u16,
        ttfb: Option<Instant>,
        bytes: u64,
    },
    Failed(&'static str),
}

/// Error kind of an answer status (None for 2xx).
pub fn status_kind(status: u16) -> Option<&'static str> {
    match status {
        200..=299 => None,
        400..=499 => Some("status_4xx"),
        500..=599 => Some("status_5xx"),
        _ => Some("status_other"),
    }
}

pub struct Bucket {
    requests: u64,
    ok: u64,
    errors: u64,
    hist: Histogram<u64>,
}

/// The per-second series of a whole run, shared by the workers: each worker hands over a
/// second's bucket once it has moved past that second, so memory grows by one bucket per
/// second of run, not one per worker per second (a 30-minute soak with hundreds of
/// connections held gigabytes of per-worker histograms before).
pub type SeriesSink = Arc<std::sync::Mutex<Vec<Bucket>>>;

/// One worker's measurements (merged at the end; no sharing on the hot path except the
/// per-second hand-over to the `SeriesSink`, once per worker per second).
pub struct Recorder {
    latency: Histogram<u64>,
    /// 2xx answers only (the latency of what was admitted when a gateway sheds load)
    ok_latency: Histogram<u64>,
    ttfb: Histogram<u64>,
    errors: BTreeMap<&'static str, u64>,
    /// Buckets for seconds `series_base..`; with a sink, only seconds not yet handed over.
    series: Vec<Bucket>,
    series_base: usize,
    sink: Option<SeriesSink>,
    requests: u64,
    ok: u64,
    bytes: u64,
    sent: u64,
    late_sends: u64,
    max_send_lag: Duration,
    last_done: Option<Instant>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency: hist(3),
            ok_latency: hist(3),
            ttfb: hist(3),
            errors: BTreeMap::new(),
            series: Vec::new(),
            series_base: 0,
            sink: None,
            requests: 0,
            ok: 0,
            bytes: 0,
            sent: 0,
            late_sends: 0,
            max_send_lag: Duration::ZERO,
            last_done: None,
        }
    }
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

fn empty_bucket() -> Bucket {
    Bucket {
        requests: 0,
        ok: 0,
        errors: 0,
        hist: hist(2),
    }
}

/// Add `b` into `series[i]`, growing the series as needed.
fn add_bucket(series: &mut Vec<Bucket>, i: usize, b: &Bucket) {
    while series.len() <= i {
        series.push(empty_bucket());
    }
    let s = &mut series[i];
    s.requests += b.requests;
    s.ok += b.ok;
    s.errors += b.errors;
    let _ = s.hist.add(&b.hist);
}

impl Recorder {
    /// A recorder that hands each finished second over to `sink`.
    pub fn with_sink(sink: SeriesSink) -> Self {
        Self {
            sink: Some(sink),
            ..Self::default()
        }
    }

    /// Hand every bucket before second `upto` over to the sink (all of them with `None`).
    fn hand_over(&mut self, upto: Option<usize>) {
        let Some(sink) = &self.sink else { return };
        let n = match upto {
            Some(u) => u.saturating_sub(self.series_base).min(self.series.len()),
            None => self.series.len(),
        };
        if n == 0 {
            return;
        }
        {
            let mut all = sink.lock().unwrap_or_else(|e| e.into_inner());
            for (i, b) in self.series.drain(..n).enumerate() {
                add_bucket(&mut all, self.series_base + i, &b);
            }
        }
        self.series_base += n;
    }

    /// Hand the remaining buckets over to the sink (at the end of a worker's run).
    pub fn flush_series(&mut self) {
        self.hand_over(None);
    }

    /// Record a measured request that was due at `start` (intended or actual send time).
    pub fn record(&mut self, window_start: Instant, start: Instant, done: Instant, o: &Outcome) {
        self.requests += 1;
        self.last_done = Some(self.last_done.map_or(done, |l| l.max(done)));
        let sec = start.saturating_duration_since(window_start).as_secs() as usize;
        // A worker's due times only move forward (the schedule hands them out in order, and
        // closed loop uses the clock), so `sec` never falls before what was handed over; the
        // clamp only guards the invariant.
        let sec = sec.max(self.series_base);
        if self.sink.is_some() && sec > self.series_base {
            self.hand_over(Some(sec));
            self.series_base = sec;
        }
        while self.series.len() <= sec - self.series_base {
            self.series.push(empty_bucket());
        }
        self.record_in(sec - self.series_base, done, start, o);
    }

    fn record_in(&mut self, i: usize, done: Instant, start: Instant, o: &Outcome) {
        let b = &mut self.series[i];
        b.requests += 1;
        match o {
            Outcome::Answer {
                status,
                ttfb,
                bytes,
            } => {
                let lat = us(done.saturating_duration_since(start));
                self.latency.saturating_record(lat);
                b.hist.saturating_record(lat);
                if let Some(t) = ttfb {
                    self.ttfb
                        .saturating_record(us(t.saturating_duration_since(start)));
                }
                self.bytes += bytes;
                match status_kind(*status) {
                    None => {
                        self.ok += 1;
                        b.ok += 1;
                        self.ok_latency.saturating_record(lat);
                    }
                    Some(k) => {
                        *self.errors.entry(k).or_insert(0) += 1;
                        b.errors += 1;
                    }
                }
            }
            Outcome::Failed(k) => {
                *self.errors.entry(k).or_insert(0) += 1;
                b.errors += 1;
            }
        }
    }

    pub fn merge(&mut self, o: Recorder) {
        self.merge_counts(&o);
        for (i, b) in o.series.iter().enumerate() {
            add_bucket(&mut self.series, o.series_base + i, b);
        }
    }

    /// Everything of `o` but its series.
    fn merge_counts(&mut self, o: &Recorder) {
        let _ = self.latency.add(&o.latency);
        let _ = self.ok_latency.add(&o.ok_latency);
        let _ = self.ttfb.add(&o.ttfb);
        for (k, n) in &o.errors {
            *self.errors.entry(k).or_insert(0) += n;
        }
        self.requests += o.requests;
        self.ok += o.ok;
        self.bytes += o.bytes;
        self.sent += o.sent;
        self.late_sends += o.late_sends;
        self.max_send_lag = self.max_send_lag.max(o.max_send_lag);
        self.last_done = match (self.last_done, o.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    /// The published open-loop figures give p95 against the arrival rate (docs/claims.md `open-loop-p95`).
    #[serde(default)]
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p95: h.value_at_quantile(0.95),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Seconds since the start of the measured window.
    pub t: u64,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadResult {
    pub mode: String,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub rps: f64,
    pub latency_us: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_us: Option<Percentiles>,
    pub series: Vec<SeriesPoint>,
    pub meta: Value,
}

// ---------------------------------------------------------------------------------------------
// Scheduling

/// Who may send next, and when (shared by all workers).
pub struct Schedule {
    t0: Instant,
    window_start: Instant,
    window_end: Instant,
    budget: Option<u64>,
    measured_issued: AtomicU64,
    budget_hit: std::sync::atomic::AtomicBool,
    open: Option<Mutex<Arrivals>>,
}

/// Open-loop arrival process: offsets from t0 in seconds.
pub struct Arrivals {
    i: u64,
    next_s: f64,
    rate: f64,
    poisson: bool,
    rng: SmallRng,
}

impl Arrivals {
    pub fn new(rate: f64, poisson: bool, seed: u64) -> Self {
        let mut a = Self {
            i: 0,
            next_s: 0.0,
            rate,
            poisson,
            rng: SmallRng::seed_from_u64(seed),
        };
        if poisson {
            a.next_s = a.gap();
        }
        a
    }
    fn gap(&mut self) -> f64 {
        let u: f64 = self.rng.random();
        -(1.0 - u).ln() / self.rate
    }
    /// The next intended send offset (seconds since t0).
    pub fn next_offset(&mut self) -> f64 {
        let t = self.next_s;
        self.i += 1;
        // Uniform: i/R, not a running sum, so rounding never drifts.
        self.next_s = if self.poisson {
            t + self.gap()
        } else {
            self.i as f64 / self.rate
        };
        t
    }
}

impl Schedule {
    pub fn new(plan: &Plan, t0: Instant) -> Self {
        let window_start = t0 + plan.warmup;
        let open = match plan.mode {
            Mode::Open { rate, poisson, .. } => {
                Some(Mutex::new(Arrivals::new(rate, poisson, plan.cfg.seed)))
            }
            Mode::Closed { .. } => None,
        };
        Self {
            t0,
            window_start,
            window_end: window_start + plan.window,
            budget: plan.cfg.requests,
            measured_issued: AtomicU64::new(0),
            budget_hit: std::sync::atomic::AtomicBool::new(false),
            open,
        }
    }

    /// Admit a request starting at `at`: None = stop; Some(measured?).
    fn admit(&self, at: Instant) -> Option<bool> {
        if at >= self.window_end || self.budget_hit.load(Relaxed) {
            return None;
        }
        let measured = at >= self.window_start;
        if measured {
            if let Some(b) = self.budget {
                let n = self.measured_issued.fetch_add(1, Relaxed);
                if n >= b {
                    self.budget_hit.store(true, Relaxed);
                    return None;
                }
                if n + 1 == b {
                    self.budget_hit.store(true, Relaxed);
                }
            }
        }
        Some(measured)
    }

    /// Open loop: the next due request (intended time, measured?), or None when done.
    fn next_open(&self) -> Option<(Instant, bool)> {
        let arrivals = self.open.as_ref()?;
        let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
        if self.budget_hit.load(Relaxed) {
            return None;
        }
        let at = self.t0 + Duration::from_secs_f64(a.next_offset());
        drop(a);
        self.admit(at).map(|m| (at, m))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

type Conn = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Conn, &'static str> {
    gatewaylab_net::client::connect_http1(addr)
        .await
        .map_err(|_| "connect")
}

/// Error kind of a transport failure.
pub fn classify(e: &hyper::Error) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || e.is_body_write_aborted() {
        return "reset";
    }
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return "protocol";
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match io.kind() {
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => "reset",
                TimedOut => "timeout",
                _ => "io",
            };
        }
        src = s.source();
    }
    "io"
}

async fn exchange(plan: &Plan, conn: &mut Option<Conn>) -> Outcome {
    if let Some(c) = conn.as_mut() {
        if c.ready().await.is_err() {
            *conn = None; // closed while idle (e.g. `connection: close`): reconnect quietly
        }
    }
    let c = match conn {
        Some(c) => c,
        None => match connect(plan.addr).await {
            Ok(c) => conn.insert(c),
            Err(k) => return Outcome::Failed(k),
        },
    };
    let resp = match c.send_request(plan.request()).await {
        Ok(r) => r,
        Err(e) => {
            *conn = None;
            return Outcome::Failed(classify(&e));
        }
    };
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut ttfb, mut bytes) = (None, 0u64);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    if ttfb.is_none() && !d.is_empty() {
                        ttfb = Some(Instant::now());
                    }
                    bytes += d.len() as u64;
                }
            }
            Err(e) => {
                *conn = None;
                return Outcome::Failed(classify(&e));
            }
        }
    }
    Outcome::Answer {
        status,
        ttfb: if plan.cfg.stream { ttfb } else { None },
        bytes,
    }
}

async fn timed_exchange(plan: &Plan, conn: &mut Option<Conn>) -> Outcome {
    match tokio::time::timeout(plan.timeout, exchange(plan, conn)).await {
        Ok(o) => o,
        Err(_) => {
            *conn = None; // the connection is mid-request: unusable
            Outcome::Failed("timeout")
        }
    }
}

/// Sleep until `due` with microsecond precision: tokio's timer has 1 ms ticks (and rounds
/// up), so it sleeps to ~1.5 ms before and yields in a loop for the rest.
async fn wait_until(due: Instant) {
    const SPIN: Duration = Duration::from_micros(1500);
    if due > Instant::now() + SPIN {
        tokio::time::sleep_until((due - SPIN).into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

async fn worker(
    plan: Arc<Plan>,
    sched: Arc<Schedule>,
    mut conn: Option<Conn>,
    sink: SeriesSink,
) -> Recorder {
    let mut rec = Recorder::with_sink(sink);
    let lag_tolerance = Duration::from_millis(1);
    loop {
        let (start, measured) = match plan.mode {
            Mode::Closed { .. } => {
                let now = Instant::now();
                match sched.admit(now) {
                    Some(m) => (now, m),
                    None => break,
                }
            }
            Mode::Open { .. } => {
                let Some((due, m)) = sched.next_open() else {
                    break;
                };
                let now = Instant::now();
                if due > now {
                    wait_until(due).await;
                } else {
                    let lag = now - due;
                    if lag > lag_tolerance && m {
                        rec.late_sends += 1;
                    }
                    rec.max_send_lag = rec.max_send_lag.max(lag);
                }
                (due, m)
            }
        };
        rec.sent += 1;
        let o = timed_exchange(&plan, &mut conn).await;
        if measured {
            rec.record(sched.window_start, start, Instant::now(), &o);
        }
    }
    rec.flush_series();
    rec
}

/// Run one load test (async; see [`run_blocking`]).
pub async fn run(plan: Plan) -> LoadResult {
    let plan = Arc::new(plan);
    // Connect before t0 so connection setup is not measured (failures retry, counted, later).
    let mut pre = tokio::task::JoinSet::new();
    for _ in 0..plan.workers() {
        let (addr, to) = (plan.addr, plan.timeout);
        pre.spawn(async move {
            tokio::time::timeout(to, connect(addr))
                .await
                .ok()
                .and_then(Result::ok)
        });
    }
    let mut conns = Vec::with_capacity(plan.workers());
    while let Some(r) = pre.join_next().await {
        conns.push(r.ok().flatten());
    }
    let cpu_start = process_cpu_s();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let t0 = Instant::now();
    let sched = Arc::new(Schedule::new(&plan, t0));
    let sink: SeriesSink = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut set = tokio::task::JoinSet::new();
    for c in conns {
        set.spawn(worker(plan.clone(), sched.clone(), c, sink.clone()));
    }
    let mut rec = Recorder::default();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            rec.merge(r);
        }
    }
    rec.series = std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
    let finished = Instant::now();
    let cpu_s = process_cpu_s() - cpu_start;
    let mut r = finish(&plan, &sched, rec, started_unix, finished);
    let wall = finished
        .saturating_duration_since(t0)
        .as_secs_f64()
        .max(1e-9);
    r.meta["cpu_s"] = json!(cpu_s);
    r.meta["cpu_util"] = json!(cpu_s / wall);
    r
}

fn finish(
    plan: &Plan,
    sched: &Schedule,
    rec: Recorder,
    started_unix: f64,
    finished: Instant,
) -> LoadResult {
    let planned = plan.window.as_secs_f64();
    // A count-bounded run ends when its last measured request finished.
    let duration_s = if sched.budget_hit.load(Relaxed) {
        rec.last_done
            .map(|d| {
                d.saturating_duration_since(sched.window_start)
                    .as_secs_f64()
            })
            .unwrap_or(planned)
            .min(planned)
    } else {
        planned
    };
    let duration_s = duration_s.max(1e-9);
    let series = rec
        .series
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let width = (duration_s - i as f64).clamp(1e-9, 1.0);
            let p = percentiles(&b.hist);
            SeriesPoint {
                t: i as u64,
                requests: b.requests,
                ok: b.ok,
                errors: b.errors,
                rps: b.ok as f64 / width,
                p50_us: p.p50,
                p99_us: p.p99,
                max_us: p.max,
            }
        })
        .collect();
    let (mode, concurrency, rate, connections) = match plan.mode {
        Mode::Closed { concurrency } => ("closed", Some(concurrency), None, concurrency),
        Mode::Open {
            rate, connections, ..
        } => ("open", None, Some(rate), connections),
    };
    let meta = json!({
        "url": plan.cfg.url,
        "method": plan.method.as_str(),
        "connections": connections,
        "warmup_s": plan.warmup.as_secs_f64(),
        "planned_duration_s": planned,
        "max_requests": plan.cfg.requests,
        "timeout_s": plan.timeout.as_secs_f64(),
        "threads": plan.cfg.threads,
        "seed": plan.cfg.seed,
        "arrival": if matches!(plan.mode, Mode::Open { poisson: true, .. }) { "poisson" } else if mode == "open" { "uniform" } else { "closed" },
        "stream": plan.cfg.stream,
        "ok": rec.ok,
        "sent": rec.sent,
        "bytes_received": rec.bytes,
        "late_sends": rec.late_sends,
        "max_send_lag_us": rec.max_send_lag.as_micros() as u64,
        "co_corrected": mode == "open",
        "latency_ok_us": serde_json::to_value(percentiles(&rec.ok_latency)).unwrap_or(Value::Null),
        "started_unix_s": started_unix,
        "wall_s": finished.saturating_duration_since(sched.t0).as_secs_f64(),
        "generator": concat!("gatewaylab-tools ", env!("CARGO_PKG_VERSION")),
    });
    LoadResult {
        mode: mode.into(),
        concurrency,
        rate,
        duration_s,
        requests: rec.requests,
        errors: rec
            .errors
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        rps: rec.ok as f64 / duration_s,
        latency_us: percentiles(&rec.latency),
        ttfb_us: if plan.cfg.stream {
            Some(percentiles(&rec.ttfb))
        } else {
            None
        },
        series,
        meta,
    }
}

/// User + system CPU seconds of this process so far (the generator's own cost).
pub fn process_cpu_s() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// Build the runtime the plan asks for and run it to the end. Blocks the calling thread.
pub fn run_blocking(plan: Plan) -> std::io::Result<LoadResult> {
    let rt = crate::mock::build_runtime(plan.cfg.threads)?;
    let r = rt.block_on(run(plan));
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: Value) -> LoadConfig {
        serde_json::from_value(v).expect("valid config json")
    }

    #[test]
    fn uniform_arrivals_are_exact_multiples() {
        let mut a = Arrivals::new(400.0, false, 0);
        let offs: Vec<f64> = (0..1000).map(|_| a.next_offset()).collect();
        for (i, o) in offs.iter().enumerate() {
            assert_eq!(*o, i as f64 / 400.0);
        }
    }

    #[test]
    fn poisson_arrivals_are_seeded_with_the_right_mean() {
        let run = |seed| {
            let mut a = Arrivals::new(1000.0, true, seed);
            (0..20_000).map(|_| a.next_offset()).collect::<Vec<_>>()
        };
        let (x, y, z) = (run(1), run(1), run(2));
        assert_eq!(x, y);
        assert_ne!(x, z);
        let mean_gap = x[x.len() - 1] / (x.len() - 1) as f64;
        assert!((mean_gap - 0.001).abs() < 0.00005, "mean gap {mean_gap}");
        assert!(x.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn schedule_admits_exactly_the_budget_and_skips_warmup() {
        let plan = Plan::new(cfg(
            json!({"url": "http://127.0.0.1:9/", "concurrency": 2, "requests": 5, "warmup_s": 1.0}),
        ))
        .unwrap();
        let t0 = Instant::now();
        let s = Schedule::new(&plan, t0);
        assert_eq!(s.admit(t0), Some(false)); // warm-up: sent, not measured, not counted
        let after = t0 + Duration::from_secs(2);
        let admitted: Vec<_> = (0..10).map(|_| s.admit(after)).collect();
        assert_eq!(admitted.iter().filter(|a| **a == Some(true)).count(), 5);
        assert!(admitted[5..].iter().all(|a| a.is_none()));
    }

    #[test]
    fn schedule_stops_at_window_end() {
        let plan = Plan::new(cfg(
            json!({"url": "http://127.0.0.1:9/", "rate": 100.0, "duration_s": 1.0}),
        ))
        .unwrap();
        let s = Schedule::new(&plan, Instant::now());
        let mut n = 0;
        while s.next_open().is_some() {
            n += 1;
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn recorder_counts_errors_and_percentiles() {
        let mut r = Recorder::default();
        let t = Instant::now();
        for i in 1..=100u64 {
            let o = Outcome::Answer {
                status: 200,
                ttfb: None,
                bytes: 10,
            };
            r.record(t, t, t + Duration::from_micros(i * 100), &o);
        }
        r.record(
            t,
            t + Duration::from_millis(1500),
            t + Duration::from_secs(2),
            &Outcome::Failed("reset"),
        );
        let mut other = Recorder::default();
        other.record(
            t,
            t,
            t + Duration::from_micros(50),
            &Outcome::Answer {
                status: 503,
                ttfb: None,
                bytes: 1,
            },
        );
        r.merge(other);
        assert_eq!(r.requests, 102);
        assert_eq!(r.ok, 100);
        assert_eq!(r.errors.get("reset"), Some(&1));
        assert_eq!(r.errors.get("status_5xx"), Some(&1));
        let p = percentiles(&r.latency);
        assert!((4_900..=5_100).contains(&p.p50), "{p:?}");
        assert!(p.max >= 10_000 && p.max <= 10_010);
        assert_eq!(r.series.len(), 2);
        assert_eq!(r.series[0].requests, 101);
        assert_eq!(r.series[1].errors, 1);
    }

    /// With a sink, a worker keeps only the second it is in: earlier seconds are handed over
    /// as soon as it moves on, and the sink's series equals the one a sink-less recorder keeps.
    #[test]
    fn recorder_hands_finished_seconds_to_the_sink() {
        let t = Instant::now();
        let sink: SeriesSink = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut a, mut b) = (
            Recorder::with_sink(sink.clone()),
            Recorder::with_sink(sink.clone()),
        );
        let mut plain = Recorder::default();
        let ok = Outcome::Answer {
            status: 200,
            ttfb: None,
            bytes: 1,
        };
        for sec in 0..50u64 {
            for k in 0..3u64 {
                let start = t + Duration::from_millis(sec * 1000 + k * 100);
                let (rec, other) = if k % 2 == 0 {
                    (&mut a, &mut plain)
                } else {
                    (&mut b, &mut plain)
                };
                rec.record(t, start, start + Duration::from_micros(100 + sec), &ok);
                other.record(t, start, start + Duration::from_micros(100 + sec), &ok);
            }
            assert!(
                a.series.len() <= 1 && b.series.len() <= 1,
                "a worker holds only its current second"
            );
        }
        b.record(
            t,
            t + Duration::from_secs(52),
            t + Duration::from_secs(53),
            &Outcome::Failed("reset"),
        );
        plain.record(
            t,
            t + Duration::from_secs(52),
            t + Duration::from_secs(53),
            &Outcome::Failed("reset"),
        );
        a.flush_series();
        b.flush_series();
        let series = std::mem::take(&mut *sink.lock().unwrap());
        assert_eq!(series.len(), plain.series.len());
        for (x, y) in series.iter().zip(&plain.series) {
            assert_eq!((x.requests, x.ok, x.errors), (y.requests, y.ok, y.errors));
            assert_eq!(percentiles(&x.hist), percentiles(&y.hist));
        }
        assert_eq!(series[51].requests, 0);
        assert_eq!(series[52].errors, 1);
    }

    #[test]
    fn status_kinds() {
        assert_eq!(status_kind(204), None);
        assert_eq!(status_kind(404), Some("status_4xx"));
        assert_eq!(status_kind(502), Some("status_5xx"));
        assert_eq!(status_kind(302), Some("status_other"));
    }

    #[test]
    fn plan_rejects_unbounded_and_ambiguous_configs() {
        let bad = [
            json!({"url": "http://127.0.0.1:9/", "concurrency": 1}),
            json!({"url": "http://127.0.0.1:9/", "concurrency": 1, "rate": 3.0, "duration_s": 1.0}),
            json!({"url": "http://127.0.0.1:9/", "duration_s": 1.0}),
            json!({"url": "ftp://127.0.0.1:9/", "concurrency": 1, "duration_s": 1.0}),
            json!({"url": "http://127.0.0.1:9/", "concurrency": 0, "duration_s": 1.0}),
            json!({"url": "http://127.0.0.1:9/", "rate": f64::MAX, "duration_s": 1.0}),
            json!({"url": "http://127.0.0.1:9/", "concurrency": 1, "duration_s": -1.0}),
            json!({"url": "http://127.0.0.1:9/", "concurrency": 1, "duration_s": 1.0, "headers": [["bad header", "v"]]}),
        ];
        for b in bad {
            assert!(Plan::new(cfg(b.clone())).is_err(), "accepted {b}");
        }
        let p = Plan::new(cfg(json!({"url": "http://localhost:8080/v1/x?y=1", "concurrency": 1, "requests": 3, "body": "{}"}))).unwrap();
        assert_eq!(p.method, Method::POST);
        assert_eq!(p.uri, "/v1/x?y=1");
        assert_eq!(p.headers[HOST], "localhost:8080");
        assert_eq!(p.window, Duration::from_secs(600)); // count-bounded runs are capped
    }

    #[test]
    fn closed_loop_against_the_mock_counts_exactly() {
        use crate::mock::{MockConfig, MockHandle};
        let m = MockHandle::start(MockConfig {
            drop_rate: 0.1,
            seed: 11,
            ..Default::default()
        })
        .unwrap();
        let plan = Plan::new(cfg(
            json!({"url": format!("{}/v1/chat/completions", m.url()), "concurrency": 3,
                                         "requests": 200, "duration_s": 30.0, "body": "{}"}),
        ))
        .unwrap();
        let r = run_blocking(plan).unwrap();
        assert_eq!(r.requests, 200);
        let drops = r.errors.get("reset").copied().unwrap_or(0);
        assert!(drops > 0 && drops < 60, "{:?}", r.errors);
        assert_eq!(r.meta["ok"].as_u64(), Some(200 - drops));
    }

    #[test]
    fn open_loop_measures_from_intended_send_time() {
        use crate::mock::{MockConfig, MockHandle};
        // Every request takes >= 20 ms; with one connection at 200/s the generator falls behind,
        // and the queueing shows in the latency instead of being omitted.
        let m = MockHandle::start(MockConfig {
            latency_ms: 20.0,
            ..Default::default()
        })
        .unwrap();
        let plan = Plan::new(cfg(
            json!({"url": format!("{}/v1/models", m.url()), "rate": 200.0,
                                         "connections": 1, "duration_s": 0.5}),
        ))
        .unwrap();
        let r = run_blocking(plan).unwrap();
        assert_eq!(r.requests, 100);
        assert!(r.meta["late_sends"].as_u64().unwrap() > 50);
        // The last request was due at ~0.5 s and sent after ~100 x 20 ms = 2 s.
        assert!(r.latency_us.max >= 1_000_000, "{:?}", r.latency_us);
    }
}
