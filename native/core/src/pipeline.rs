//! The pipeline twin (Rust): what to do with one chat request, decided without I/O or clocks.
//!
//! The Python twin is `gateway/pipeline.py`; both give the same verdict, status, error code,
//! upstream bytes and audit material for the same request and configuration (messages may
//! differ only where they quote a JSON parser's own words). Stage order, each switchable
//! (the guard always runs):
//!
//! ```text
//! guard (head + body size) -> auth -> parse/validate -> WAF -> route -> rate limit -> adapter
//! ```
//!
//! Audited: every request that passed auth and whose body parsed. Guard, auth and
//! malformed-body rejections are not (no identity or model to account for).
//!
//! Laid out as the Python twin is: the guard is `stages/guard.rs` (gateway/stages/guard.py),
//! the error answers `errors.rs` (gateway/errors.py), `decide` and `respond` here and the
//! stream relay in `pipeline/relay.rs` (gateway/pipeline.py's StreamRelay).
//!
//! Each stage counts the times it ran (`Pipeline::stage_runs`, [`RUN_STAGES`]; relaxed atomic
//! adds), as the Python twin does: `ratelimit` counts only checks against a key that has
//! limits, `forward`/`respond` count upstream answers handed back (`respond` for a whole answer,
//! `relay` for a stream). The rungs export them as `gateway_stage_runs_total{stage}`.
pub mod relay;

use crate::errors::{error_body, py_repr, UpstreamFailure};
use crate::stages::adapter::{self, Adapter, Json, Kind};
use crate::stages::auth::ApiKeyAuth;
use crate::stages::guard::{check_headers, GuardError};
use crate::stages::ratelimit::{RateLimiter, Tokens};
use crate::stages::waf::{Rule, RuleKind, Waf};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

pub use relay::StreamRelay;

pub const CHAT_PATH: &str = "/v1/chat/completions";
pub const STAGES: [&str; 5] = ["auth", "parse", "waf", "ratelimit", "adapter"];
pub const ANONYMOUS: &str = "anonymous";
/// What `Pipeline::stage_runs` counts, in order (gateway/pipeline.py RUN_STAGES; the rungs add
/// "audit", the records their ledger wrote).
pub const RUN_STAGES: [&str; 9] = [
    "guard",
    "auth",
    "parse",
    "waf",
    "route",
    "ratelimit",
    "adapter",
    "forward",
    "respond",
];
const GUARD: usize = 0;
const AUTH: usize = 1;
const PARSE: usize = 2;
const WAF: usize = 3;
const ROUTE: usize = 4;
const RATELIMIT: usize = 5;
const ADAPTER: usize = 6;
const FORWARD: usize = 7;
const RESPOND: usize = 8;
const ROLES: [&str; 6] = [
    "system",
    "user",
    "assistant",
    "tool",
    "developer",
    "function",
];

// --- configuration snapshot ------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct KeyConfig {
    pub id: String,
    pub sha256: String,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RuleConfig {
    pub id: String,
    pub kind: String,
    pub pattern: String,
    #[serde(default)]
    pub case_insensitive: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub kind: String,
    /// The full upstream URL (base_url + /chat/completions or /messages).
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
}

/// The validated configuration the pipeline needs (the Python side's `Config`, as JSON:
/// `gateway/rs_core.py: pipeline_config`). Field validation with messages naming the field
/// happens where the YAML is read.
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineConfig {
    pub keys: Vec<KeyConfig>,
    pub waf_rules: Vec<RuleConfig>,
    pub models: Vec<ModelConfig>,
    pub passthrough: bool,
    pub max_body_bytes: u64,
    pub max_header_bytes: u64,
    pub stages: Vec<String>,
    pub audit: bool,
    /// The router twins' config (gateway/router.py `router_config`: {"router", "groups"}),
    /// absent when no model has a group and there is no `router:` section.
    #[serde(default)]
    pub router: Option<serde_json::Value>,
    /// Every deployment of every group, in model_list order (with `router` only).
    #[serde(default)]
    pub deployments: Vec<DeploymentConfig>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentConfig {
    pub group: String,
    pub kind: String,
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
}

/// Where one routed attempt goes: a deployment's URL, headers and request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

// --- the request and the decision --------------------------------------------------------

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Raw (name, value) pairs, names lower-case.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    pub body: &'a [u8],
}

/// What a pure function cannot read for itself: the clocks and the request's id.
pub struct Context<'a> {
    pub time_ns: i64,
    pub mono_ns: i128,
    pub request_id: &'a str,
}

/// The request-derived half of an audit record (`job::AuditJob` adds the answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditMaterial {
    pub time_ns: i64,
    pub request_id: String,
    pub key_id: String,
    pub model: String,
    pub request_body: Vec<u8>,
    pub prompt_tokens: i64,
    pub waf: String,
    /// a sampled request's trace id (32 lowercase hex), set by the tracing layer; empty: none
    pub trace_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers (connection: close after a framing error, retry-after).
    pub headers: Vec<(&'static str, String)>,
    pub audit: Option<AuditMaterial>,
}

/// The guard's refusals: never audited.
impl From<GuardError> for Rejection {
    fn from(g: GuardError) -> Self {
        Rejection {
            status: g.status,
            code: g.code,
            message: g.message,
            headers: g.headers,
            audit: None,
        }
    }
}

impl Rejection {
    pub fn body(&self) -> Vec<u8> {
        error_body(self.status, &self.message, self.code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stream: bool,
    pub kind: Kind,
    pub public_model: String,
    /// The adapter stage is on: answers are adapted back.
    pub adapt: bool,
    /// Who asked (ANONYMOUS with the auth stage off), audited or not.
    pub key_id: String,
    pub audit: Option<AuditMaterial>,
}

/// What `Pipeline::respond` answers: (status, body, error code if the gateway wrote the body).
pub type Answered<'b> = (u16, Cow<'b, [u8]>, Option<&'static str>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Reject(Rejection),
    Forward(Forwarding),
}

pub(crate) fn reject(status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        code,
        message: message.into(),
        headers: Vec::new(),
        audit: None,
    }
}

// --- validation -------------------------------------------------------------------------

struct BadRequest(&'static str, String);

fn bad(code: &'static str, msg: impl Into<String>) -> BadRequest {
    BadRequest(code, msg.into())
}

fn str_of<'j>(v: Option<&'j Json<'_>>) -> Option<&'j str> {
    match v {
        Some(Json::Str(s)) => Some(s),
        _ => None,
    }
}

fn is_null(v: Option<&Json<'_>>) -> bool {
    matches!(v, None | Some(Json::Null))
}

/// Validate an OpenAI chat request and return its prompt text for the WAF (the Python
/// twin's `prompt_text`, check for check).
fn prompt_text(req: &Json<'_>) -> Result<String, BadRequest> {
    if !matches!(req, Json::Obj(_)) {
        return Err(bad("invalid_request", "request body must be a JSON object"));
    }
    match str_of(req.get("model")) {
        Some(m) if !m.is_empty() => {}
        _ => {
            return Err(bad(
                "invalid_model",
                "'model' is required and must be a non-empty string",
            ))
        }
    }
    let msgs = match req.get("messages") {
        Some(Json::Arr(a)) if !a.is_empty() => a,
        _ => {
            return Err(bad(
                "invalid_messages",
                "'messages' is required and must be a non-empty array",
            ))
        }
    };
    let mut parts: Vec<&str> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if !matches!(m, Json::Obj(_)) {
            return Err(bad(
                "invalid_messages",
                format!("messages[{i}] must be an object"),
            ));
        }
        let role = match str_of(m.get("role")) {
            Some(r) if ROLES.contains(&r) => r,
            _ => {
                let mut sorted = ROLES;
                sorted.sort_unstable();
                return Err(bad(
                    "invalid_messages",
                    format!("messages[{i}].role must be one of {}", sorted.join(", ")),
                ));
            }
        };
        match m.get("content") {
            Some(Json::Str(s)) => parts.push(s),
            Some(Json::Arr(ps)) => {
                for (j, p) in ps.iter().enumerate() {
                    if !matches!(p, Json::Obj(_)) || str_of(p.get("type")).is_none() {
                        return Err(bad(
                            "invalid_messages",
                            format!("messages[{i}].content[{j}] must be a content part object"),
                        ));
                    }
                    match p.get("text") {
                        None | Some(Json::Null) => {}
                        Some(Json::Str(t)) => parts.push(t),
                        Some(_) => {
                            return Err(bad(
                                "invalid_messages",
                                format!("messages[{i}].content[{j}].text must be a string"),
                            ))
                        }
                    }
                }
            }
            c if is_null(c) && role == "assistant" => {}
            _ => {
                return Err(bad(
                    "invalid_messages",
                    format!("messages[{i}].content must be a string or an array of parts"),
                ))
            }
        }
    }
    let stream = req.get("stream");
    if !is_null(stream) && !matches!(stream, Some(Json::Bool(_))) {
        return Err(bad("invalid_stream", "'stream' must be a boolean"));
    }
    match req.get("max_tokens") {
        None | Some(Json::Null) => {}
        Some(Json::I64(n)) if *n >= 1 => {}
        Some(Json::U64(_)) => {}
        _ => {
            return Err(bad(
                "invalid_max_tokens",
                "'max_tokens' must be a positive integer",
            ))
        }
    }
    Ok(if parts.len() == 1 {
        parts[0].to_string()
    } else {
        parts.join("\n")
    })
}

pub fn upstream_headers(kind: Kind, api_key: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![("Content-Type".to_string(), "application/json".to_string())];
    let key = api_key.filter(|k| !k.is_empty());
    match kind {
        Kind::Anthropic => {
            h.push(("anthropic-version".into(), "2023-06-01".into()));
            if let Some(k) = key {
                h.push(("x-api-key".into(), k.into()));
            }
        }
        Kind::OpenAi => {
            if let Some(k) = key {
                h.push(("Authorization".into(), format!("Bearer {k}")));
            }
        }
    }
    h
}

// --- the pipeline -------------------------------------------------------------------------

struct Route {
    kind: Kind,
    url: String,
    model: String,
    headers: Vec<(String, String)>,
}

pub struct Pipeline {
    auth_on: bool,
    parse_on: bool,
    waf_on: bool,
    ratelimit_on: bool,
    adapt_on: bool,
    audit: bool,
    max_body: u64,
    max_header: u64,
    auth: ApiKeyAuth,
    waf: Waf,
    ratelimit: Mutex<RateLimiter>,
    /// model name -> route; keyed by the configured names (fixed at start): foldhash, not SipHash
    routes: HashMap<String, Route, foldhash::fast::RandomState>,
    /// Model names in configuration order (passthrough goes to the first).
    order: Vec<String>,
    passthrough: bool,
    openai: Adapter,
    anthropic: Adapter,
    /// group -> its deployments (the router picks the index), when the router is on
    targets: HashMap<String, Vec<Route>, foldhash::fast::RandomState>,
    /// times each stage ran (RUN_STAGES)
    runs: [AtomicU64; RUN_STAGES.len()],
    /// test-only: extra WAF scans of every prompt (`GATEWAYLAB_INJECT=waf-twice`: one,
    /// `waf-extra:N`: N), a stage doing extra work for the work gates' injection tests
    /// (gateway/inject.py); 0 unless injected
    waf_extra: u32,
}

/// The extra WAF scans the test-only `GATEWAYLAB_INJECT` asks for (gateway/inject.py).
fn injected_waf_extra() -> u32 {
    let v = std::env::var("GATEWAYLAB_INJECT").unwrap_or_default();
    v.split(',')
        .map(str::trim)
        .map(|p| match p {
            "waf-twice" => 1,
            _ => p
                .strip_prefix("waf-extra:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        })
        .sum()
}

/// The span of the stage running now (`tracing`, exported by native/trace when a gateway
/// traces): entering the next stage ends the previous one first, so they are siblings under
/// the request span, as the Python twin's marks make them (gateway/tracing.py).
struct Stage(Option<tracing::span::EnteredSpan>);

impl Stage {
    #[inline]
    fn enter(&mut self, name: &'static str) {
        self.0 = None;
        self.0 = Some(tracing::info_span!("stage", otel.name = name).entered());
    }
}

impl Pipeline {
    pub fn new(cfg: &PipelineConfig) -> Result<Self, String> {
        for s in &cfg.stages {
            if !STAGES.contains(&s.as_str()) {
                return Err(format!(
                    "stages: unknown stage {}; known: all, none, {}",
                    py_repr(s),
                    STAGES.join(", ")
                ));
            }
        }
        let on = |s: &str| cfg.stages.iter().any(|x| x == s);
        let auth = ApiKeyAuth::new(cfg.keys.iter().map(|k| (k.id.clone(), k.sha256.clone())))
            .map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for r in &cfg.waf_rules {
            let kind = match r.kind.as_str() {
                "regex" => RuleKind::Regex,
                "literal" => RuleKind::Literal,
                other => {
                    return Err(format!(
                        "waf rule {}: kind must be regex or literal, got {}",
                        py_repr(&r.id),
                        py_repr(other)
                    ))
                }
            };
            rules.push(Rule {
                id: r.id.clone(),
                kind,
                pattern: r.pattern.clone(),
                case_insensitive: r.case_insensitive,
            });
        }
        let waf = Waf::new(rules).map_err(|e| e.to_string())?;
        let limits = cfg.keys.iter().filter_map(|k| match (k.rpm, k.tpm) {
            (Some(r), Some(t)) => Some((k.id.clone(), r as i128, t as i128)),
            _ => None,
        });
        let ratelimit = RateLimiter::new(limits).map_err(|e| e.to_string())?;
        if cfg.models.is_empty() {
            return Err("model_list: needs at least one model".into());
        }
        let mut routes = HashMap::default();
        let mut order = Vec::new();
        for m in &cfg.models {
            let kind = Kind::parse(&m.kind).ok_or_else(|| {
                format!(
                    "model {}: kind must be openai or anthropic",
                    py_repr(&m.name)
                )
            })?;
            let headers = upstream_headers(kind, m.api_key.as_deref());
            routes.insert(
                m.name.clone(),
                Route {
                    kind,
                    url: m.url.clone(),
                    model: m.model.clone(),
                    headers,
                },
            );
            order.push(m.name.clone());
        }
        let mut targets: HashMap<String, Vec<Route>, _> = HashMap::default();
        for d in &cfg.deployments {
            let kind = Kind::parse(&d.kind).ok_or_else(|| {
                format!(
                    "deployment of {}: kind must be openai or anthropic",
                    py_repr(&d.group)
                )
            })?;
            let headers = upstream_headers(kind, d.api_key.as_deref());
            targets.entry(d.group.clone()).or_default().push(Route {
                kind,
                url: d.url.clone(),
                model: d.model.clone(),
                headers,
            });
        }
        Ok(Self {
            auth_on: on("auth"),
            parse_on: ["parse", "waf", "ratelimit", "adapter"]
                .iter()
                .any(|s| on(s)),
            waf_on: on("waf"),
            ratelimit_on: on("ratelimit"),
            adapt_on: on("adapter"),
            audit: cfg.audit,
            max_body: cfg.max_body_bytes,
            max_header: cfg.max_header_bytes,
            auth,
            waf,
            ratelimit: Mutex::new(ratelimit),
            routes,
            order,
            passthrough: cfg.passthrough,
            openai: Adapter::new(Kind::OpenAi),
            anthropic: Adapter::new(Kind::Anthropic),
            targets,
            runs: std::array::from_fn(|_| AtomicU64::new(0)),
            waf_extra: injected_waf_extra(),
        })
    }

    /// (stage, times it ran) for every stage of [`RUN_STAGES`], since the pipeline was built.
    pub fn stage_runs(&self) -> [(&'static str, u64); RUN_STAGES.len()] {
        std::array::from_fn(|i| (RUN_STAGES[i], self.runs[i].load(Relaxed)))
    }

    #[inline]
    fn ran(&self, stage: usize) {
        self.runs[stage].fetch_add(1, Relaxed);
    }

    /// The request's model is a group the router routes.
    pub fn is_routed(&self, fwd: &Forwarding) -> bool {
        !self.targets.is_empty() && self.targets.contains_key(&fwd.public_model)
    }

    /// Deployment `index` of `group` for this request: its URL and headers, and the client's
    /// body adapted to its upstream model (as `decide` adapts it for the model's first).
    pub fn target(
        &self,
        group: &str,
        index: usize,
        fwd: &Forwarding,
        request_body: &[u8],
    ) -> Result<Target, UpstreamFailure> {
        let r = self
            .targets
            .get(group)
            .and_then(|g| g.get(index))
            .ok_or_else(|| {
                UpstreamFailure::unavailable(&format!(
                    "no deployment {index} of {}",
                    py_repr(group)
                ))
            })?;
        let first = self.routes.get(&fwd.public_model);
        let body = if fwd.adapt && first.is_none_or(|f| f.kind != r.kind || f.model != r.model) {
            self.adapter(r.kind)
                .to_upstream(request_body, &r.model)
                .map_err(|e| UpstreamFailure::malformed("request", &e.0))?
                .into_owned()
        } else {
            // decide() already adapted the body for this upstream model (or the adapter is off)
            fwd.body.clone()
        };
        Ok(Target {
            url: r.url.clone(),
            headers: r.headers.clone(),
            body,
        })
    }

    pub fn audit_enabled(&self) -> bool {
        self.audit
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.max_body
    }

    pub fn adapter(&self, kind: Kind) -> &Adapter {
        match kind {
            Kind::OpenAi => &self.openai,
            Kind::Anthropic => &self.anthropic,
        }
    }

    fn route(&self, model: &str) -> Option<(&Route, String)> {
        if let Some(r) = self.routes.get(model) {
            return Some((r, r.model.clone()));
        }
        if self.passthrough {
            return self
                .order
                .first()
                .and_then(|n| self.routes.get(n))
                .map(|r| (r, model.to_string()));
        }
        None
    }

    pub fn decide(&self, req: &Request<'_>, ctx: &Context<'_>) -> Decision {
        match self.decide_inner(req, ctx) {
            Ok(f) => Decision::Forward(f),
            Err(r) => Decision::Reject(r),
        }
    }

    // a Decision carries either one: boxing the rejection would only add an allocation
    #[allow(clippy::result_large_err)]
    fn decide_inner(&self, req: &Request<'_>, ctx: &Context<'_>) -> Result<Forwarding, Rejection> {
        if req.path != CHAT_PATH {
            return Err(reject(
                404,
                "not_found",
                format!("no route for {} {}", req.method, req.path),
            ));
        }
        if req.method != "POST" {
            return Err(reject(
                405,
                "method_not_allowed",
                format!("method {} not allowed on {}", req.method, req.path),
            ));
        }
        // tracing spans of the stages (native/trace): with no subscriber they cost a branch
        let mut stage = Stage(None);
        stage.enter("guard");
        self.ran(GUARD);
        let authorization = check_headers(req.headers, self.max_header, self.max_body)?;
        let body = req.body;
        if body.len() as u64 > self.max_body {
            return Err(reject(
                413,
                "body_too_large",
                format!("request body exceeds {} bytes", self.max_body),
            ));
        }
        let key_id: String = if self.auth_on {
            stage.enter("auth");
            self.ran(AUTH);
            match self.auth.check(authorization) {
                Some(k) => k.to_string(),
                None => {
                    let msg = if authorization.is_some_and(|a| !a.is_empty()) {
                        "missing or invalid API key"
                    } else {
                        "missing API key (Authorization: Bearer ...)"
                    };
                    return Err(reject(401, "invalid_api_key", msg));
                }
            }
        } else {
            ANONYMOUS.to_string()
        };
        let material = |model: &str, prompt_tokens: i64| {
            self.audit.then(|| AuditMaterial {
                time_ns: ctx.time_ns,
                request_id: ctx.request_id.to_string(),
                key_id: key_id.clone(),
                model: model.to_string(),
                request_body: body.to_vec(),
                prompt_tokens,
                waf: "allow".to_string(),
                trace_id: String::new(),
            })
        };
        if !self.parse_on {
            let first = &self.routes[&self.order[0]];
            return Ok(Forwarding {
                url: first.url.clone(),
                headers: first.headers.clone(),
                body: body.to_vec(),
                stream: false,
                kind: first.kind,
                public_model: String::new(),
                adapt: false,
                key_id: key_id.clone(),
                audit: material("", 0),
            });
        }
        stage.enter("parse");
        self.ran(PARSE);
        let parsed = adapter::parse(body)
            .map_err(|e| reject(400, "invalid_json", format!("invalid JSON body: {e}")))?;
        let text = prompt_text(&parsed).map_err(|BadRequest(code, msg)| reject(400, code, msg))?;
        let model = str_of(parsed.get("model")).unwrap_or_default().to_string();
        let prompt_tokens = (text.chars().count() as i64 + 3) / 4;
        let mut audit = material(&model, prompt_tokens);
        if self.waf_on {
            stage.enter("waf");
            self.ran(WAF);
            for _ in 0..self.waf_extra {
                std::hint::black_box(self.waf.scan(std::hint::black_box(&text)));
            }
            if let Some(rule) = self.waf.scan(&text) {
                if let Some(a) = audit.as_mut() {
                    a.waf = format!("block:{rule}");
                }
                return Err(Rejection {
                    audit,
                    ..reject(
                        403,
                        "waf_blocked",
                        format!("request blocked by WAF rule {rule}"),
                    )
                });
            }
        }
        stage.enter("route");
        self.ran(ROUTE);
        let Some((route, upstream_model)) = self.route(&model) else {
            return Err(Rejection {
                audit,
                ..reject(
                    404,
                    "model_not_found",
                    format!("the model {} does not exist", py_repr(&model)),
                )
            });
        };
        if self.ratelimit_on {
            stage.enter("ratelimit");
            let max_tokens = match parsed.get("max_tokens") {
                Some(Json::I64(n)) => Tokens::N(*n as u64),
                Some(Json::U64(n)) => Tokens::N(*n),
                _ => Tokens::N(0),
            };
            let cost = match max_tokens {
                Tokens::N(n) => n
                    .checked_add(prompt_tokens as u64)
                    .map_or(Tokens::Huge, Tokens::N),
                Tokens::Huge => Tokens::Huge,
            };
            let wait = {
                let mut limiter = self.ratelimit.lock().unwrap_or_else(|e| e.into_inner());
                if limiter.is_limited(&key_id) {
                    self.ran(RATELIMIT); // a bucket is consulted (a key without limits is let through)
                }
                limiter.check(&key_id, cost, ctx.mono_ns)
            };
            if wait > 0.0 {
                if wait.is_infinite() {
                    let n = match cost {
                        Tokens::N(n) => n.to_string(),
                        Tokens::Huge => "more than 2**64".to_string(),
                    };
                    return Err(Rejection {
                        audit,
                        ..reject(
                            429,
                            "tokens_exceed_limit",
                            format!(
                                "request needs {n} tokens, more than this key's per-minute limit"
                            ),
                        )
                    });
                }
                let retry = (wait.ceil() as i64).max(1);
                return Err(Rejection {
                    status: 429,
                    code: "rate_limit_exceeded",
                    message: format!("rate limit exceeded; retry after {wait:.3}s"),
                    headers: vec![("retry-after", retry.to_string())],
                    audit,
                });
            }
        }
        let stream = matches!(parsed.get("stream"), Some(Json::Bool(true)));
        let up_body = if self.adapt_on {
            stage.enter("adapter");
            self.ran(ADAPTER);
            let kind_name = match route.kind {
                Kind::OpenAi => "openai",
                Kind::Anthropic => "anthropic",
            };
            // the document the parse stage read: the body is parsed once
            self.adapter(route.kind)
                .to_upstream_doc(parsed, body, &upstream_model)
                .map_err(|e| Rejection {
                    audit: audit.clone(),
                    ..reject(
                        400,
                        "invalid_request",
                        format!("request cannot be sent to a {kind_name} upstream: {e}"),
                    )
                })?
                .into_owned()
        } else {
            body.to_vec()
        };
        Ok(Forwarding {
            url: route.url.clone(),
            headers: route.headers.clone(),
            body: up_body,
            stream,
            kind: route.kind,
            public_model: model,
            adapt: self.adapt_on,
            key_id,
            audit,
        })
    }

    /// An upstream answer -> (status, body, error code if the gateway wrote the body), or the
    /// failure to answer with (a 5xx/1xx/3xx, or a 2xx the adapter cannot read). The body is
    /// the upstream's own (`Cow::Borrowed`) wherever the answer passes unchanged.
    ///
    /// `read` sees the document the response adapter parsed from a 2xx OpenAI answer (see
    /// `Adapter::from_upstream_read`); it is not called where nothing was parsed.
    pub fn respond<'b>(
        &self,
        fwd: &'b Forwarding,
        status: u16,
        body: &'b [u8],
        read: impl FnOnce(&Json<'b>),
    ) -> Result<Answered<'b>, UpstreamFailure> {
        self.ran(FORWARD);
        self.ran(RESPOND);
        if !(200..500).contains(&status) || (300..400).contains(&status) {
            return Err(UpstreamFailure::status(status));
        }
        if status >= 400 {
            if is_openai_error(body) {
                return Ok((status, Cow::Borrowed(body), None));
            }
            return Ok((
                status,
                Cow::Owned(error_body(
                    status,
                    &format!("upstream answered HTTP {status}"),
                    "upstream_status",
                )),
                Some("upstream_status"),
            ));
        }
        if !fwd.adapt {
            return Ok((200, Cow::Borrowed(body), None));
        }
        self.adapter(fwd.kind)
            .from_upstream_read(body, &fwd.public_model, read)
            .map(|b| (200, b, None))
            .map_err(|e| UpstreamFailure::malformed("response", &e.0))
    }

    pub fn relay(&self, fwd: &Forwarding) -> StreamRelay {
        self.ran(FORWARD);
        StreamRelay::new(
            fwd.adapt.then(|| Adapter::new(fwd.kind)),
            fwd.public_model.clone(),
        )
    }
}

fn is_openai_error(body: &[u8]) -> bool {
    match adapter::parse(body) {
        Ok(v @ Json::Obj(_)) => matches!(v.get("error"), Some(Json::Obj(_))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(stages: &[&str]) -> PipelineConfig {
        PipelineConfig {
            keys: vec![KeyConfig {
                id: "k".into(),
                sha256: crate::hash::sha256_hex(b"sk"),
                rpm: None,
                tpm: None,
            }],
            waf_rules: vec![RuleConfig {
                id: "r".into(),
                kind: "literal".into(),
                pattern: "evil".into(),
                case_insensitive: false,
            }],
            models: vec![ModelConfig {
                name: "mock".into(),
                kind: "openai".into(),
                url: "http://u/v1/chat/completions".into(),
                model: "mock".into(),
                api_key: None,
            }],
            passthrough: true,
            max_body_bytes: 1000,
            max_header_bytes: 1000,
            stages: stages.iter().map(|s| s.to_string()).collect(),
            router: None,
            deployments: Vec::new(),
            audit: true,
        }
    }

    fn run(p: &Pipeline, headers: &[(&[u8], &[u8])], body: &[u8]) -> Decision {
        let req = Request {
            method: "POST",
            path: CHAT_PATH,
            headers,
            body,
        };
        p.decide(
            &req,
            &Context {
                time_ns: 1,
                mono_ns: 1,
                request_id: "r1",
            },
        )
    }

    #[test]
    fn forward_reject_and_audit() {
        let p = Pipeline::new(&cfg(&STAGES)).unwrap();
        let h: &[(&[u8], &[u8])] = &[(b"authorization", b"Bearer sk")];
        let ok = br#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#;
        match run(&p, h, ok) {
            Decision::Forward(f) => {
                assert_eq!(
                    f.body,
                    br#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#.to_vec()
                );
                assert_eq!(f.audit.unwrap().prompt_tokens, 1);
            }
            d => panic!("{d:?}"),
        }
        match run(&p, &[], ok) {
            Decision::Reject(r) => assert_eq!(
                (r.status, r.code, r.audit.is_none()),
                (401, "invalid_api_key", true)
            ),
            d => panic!("{d:?}"),
        }
        let blocked = br#"{"model":"x","messages":[{"role":"user","content":"evil"}]}"#;
        match run(&p, h, blocked) {
            Decision::Reject(r) => {
                assert_eq!((r.status, r.code), (403, "waf_blocked"));
                assert_eq!(r.audit.unwrap().waf, "block:r");
            }
            d => panic!("{d:?}"),
        }
        match run(
            &p,
            &[(b"content-length", b"1"), (b"content-length", b"1")],
            ok,
        ) {
            Decision::Reject(r) => {
                assert_eq!((r.status, r.code), (400, "duplicate_content_length"))
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn stage_runs_count_what_ran() {
        let runs = |p: &Pipeline| -> HashMap<&str, u64> { p.stage_runs().into_iter().collect() };
        let h: &[(&[u8], &[u8])] = &[(b"authorization", b"Bearer sk")];
        let ok = br#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#;
        // a key without limits: the limiter lets it through without a bucket, and is not counted
        let p = Pipeline::new(&cfg(&STAGES)).unwrap();
        for _ in 0..3 {
            assert!(matches!(run(&p, h, ok), Decision::Forward(_)));
        }
        let r = runs(&p);
        for s in ["guard", "auth", "parse", "waf", "route", "adapter"] {
            assert_eq!(r[s], 3, "{s}: {r:?}");
        }
        assert_eq!((r["ratelimit"], r["forward"], r["respond"]), (0, 0, 0));
        // a key with limits: one bucket check per request; an answer counts forward + respond
        let mut c = cfg(&STAGES);
        c.keys[0].rpm = Some(1_000_000_000_000);
        c.keys[0].tpm = Some(1_000_000_000_000_000);
        let p = Pipeline::new(&c).unwrap();
        let Decision::Forward(f) = run(&p, h, ok) else {
            panic!("forwarded")
        };
        p.respond(
            &f,
            200,
            br#"{"id":"x","object":"chat.completion","choices":[]}"#,
            |_| {},
        )
        .ok();
        let _ = p.relay(&f);
        let r = runs(&p);
        assert_eq!(
            (r["ratelimit"], r["forward"], r["respond"]),
            (1, 2, 1),
            "{r:?}"
        );
        // a rejection stops the count where the request stopped: no key, no auth past the guard
        let _ = run(&p, &[], ok);
        let r = runs(&p);
        assert_eq!((r["guard"], r["auth"], r["parse"]), (2, 2, 1), "{r:?}");
        // the passthrough: the guard only
        let p = Pipeline::new(&cfg(&[])).unwrap();
        let _ = run(&p, &[], b"not json");
        let r = runs(&p);
        assert_eq!(r["guard"], 1);
        assert_eq!(r.values().sum::<u64>(), 1, "{r:?}");
    }

    #[test]
    fn stages_none_forwards_unchanged() {
        let p = Pipeline::new(&cfg(&[])).unwrap();
        match run(&p, &[], b"not json") {
            Decision::Forward(f) => {
                assert_eq!((f.body.as_slice(), f.adapt), (&b"not json"[..], false))
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn relay_splits_events_across_chunks() {
        let p = Pipeline::new(&cfg(&STAGES)).unwrap();
        let f = match run(
            &p,
            &[(b"authorization", b"Bearer sk")],
            br#"{"model":"mock","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        ) {
            Decision::Forward(f) => f,
            d => panic!("{d:?}"),
        };
        let mut r = p.relay(&f);
        assert_eq!(r.feed(b"data: {\"model\":\"m\",\"a\":1}\r").unwrap(), b"");
        assert_eq!(
            r.feed(b"\n\r\n").unwrap(),
            b"data: {\"model\":\"mock\",\"a\":1}\n\n".to_vec()
        );
        assert_eq!(r.collected.len(), 1);
        assert!(r.feed(b"data: {bad\n\n").is_err());
    }
}
