//! `pipeline::decide` (the request logic of every rung) on any head and body: never panics,
//! and its verdict keeps the error contract and the routing:
//! - a rejection's status is the one its code has (the table below: the codes decide can
//!   give), its body is exactly `{"error": {"message", "type", "code"}}` with the OpenAI type
//!   of `errors::ERROR_TYPES` (the Rust copy of `gateway/errors.py`'s table, checked equal
//!   to it by tests/pipeline/test_decide_parity.py), and its extra headers are the framing
//!   guard's `connection: close` and the limiter's `retry-after`, nowhere else;
//! - a forwarded request goes to the model's route (a named model to its own upstream model
//!   and kind, any other to the first model under its own name), and its body is a request
//!   of that upstream's kind for the routed model, saying what the client's request said
//!   (common/contract.rs: the OpenAI body with only `model` replaced, or the Anthropic
//!   Messages request whose conversation is the client's).
//!
//! Input: byte 0 = flags (bit 0: a valid Authorization; bit 1: the first model is Anthropic,
//! the second OpenAI; bit 2: the body is a generated valid request, not the raw bytes; bit 3:
//! authorize with the key limited to 1 request a minute and send the request twice, where a
//! forwarded first means a 429 `rate_limit_exceeded` second; bit 4: method GET; bit 5: another
//! path), byte 1 = length of a header block ("name: value" lines), then the block, then the
//! body (or the generator's bytes). The two pipelines are built once (a WAF compiles its
//! regexes); each input decides two minutes after the one before, when every rate-limit
//! bucket is full again, so a verdict does not depend on earlier inputs.
#![no_main]
#[path = "common/contract.rs"]
mod contract;

use contract::{assert_anthropic_request, assert_model_swapped, openai_request, parsed, text};
use gatewaylab_core::errors::{error_type, ERROR_TYPES, UPSTREAM_CODES};
use gatewaylab_core::hash::sha256_hex;
use gatewaylab_core::pipeline::{
    Context, Decision, Forwarding, KeyConfig, ModelConfig, Pipeline, PipelineConfig, Rejection,
    Request, RuleConfig, CHAT_PATH, STAGES,
};
use gatewaylab_core::stages::adapter::{Json, Kind};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every code `decide` answers with, and its status (docs/reliability.md, the guard's
/// framing errors in gateway/stages/guard.py, the pipeline's in gateway/pipeline.py).
const CODES: &[(&str, u16)] = &[
    ("duplicate_content_length", 400),
    ("invalid_content_length", 400),
    ("unsupported_transfer_encoding", 400),
    ("invalid_header", 400),
    ("headers_too_large", 431),
    ("ambiguous_framing", 400),
    ("body_too_large", 413),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("invalid_api_key", 401),
    ("invalid_json", 400),
    ("invalid_request", 400),
    ("invalid_model", 400),
    ("invalid_messages", 400),
    ("invalid_stream", 400),
    ("invalid_max_tokens", 400),
    ("waf_blocked", 403),
    ("model_not_found", 404),
    ("tokens_exceed_limit", 429),
    ("rate_limit_exceeded", 429),
];
/// The guard's framing errors and its oversized head (431): after one, nothing more on the
/// connection can be trusted.
const FRAMING: &[&str] = &[
    "duplicate_content_length",
    "invalid_content_length",
    "unsupported_transfer_encoding",
    "invalid_header",
    "headers_too_large",
    "ambiguous_framing",
];

const FIRST_URL: &str = "http://first/v1/chat/completions";
const SECOND_URL: &str = "http://second/v1/messages";

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::OpenAi => "openai",
        Kind::Anthropic => "anthropic",
    }
}

fn build(first: Kind, second: Kind) -> Pipeline {
    let key = |id: &str, secret: &[u8], rpm| KeyConfig {
        id: id.into(),
        sha256: sha256_hex(secret),
        rpm: Some(rpm),
        tpm: Some(1 << 40),
    };
    let model = |name: &str, kind: Kind, url: &str, up: &str| ModelConfig {
        name: name.into(),
        kind: kind_name(kind).into(),
        url: url.into(),
        model: up.into(),
        api_key: Some("key".into()),
    };
    Pipeline::new(&PipelineConfig {
        keys: vec![key("k", b"sk", 1_000_000), key("k1", b"sk1", 1)],
        waf_rules: vec![
            RuleConfig {
                id: "lit".into(),
                kind: "literal".into(),
                pattern: "evil".into(),
                case_insensitive: true,
            },
            RuleConfig {
                id: "re".into(),
                kind: "regex".into(),
                pattern: r"ignore\s+previous".into(),
                case_insensitive: true,
            },
        ],
        models: vec![
            model("mock", first, FIRST_URL, "up"),
            model("claude", second, SECOND_URL, "up-claude"),
        ],
        passthrough: true,
        max_body_bytes: 1 << 16,
        max_header_bytes: 1 << 12,
        stages: STAGES.iter().map(|s| s.to_string()).collect(),
        audit: true,
        router: None,
        deployments: Vec::new(),
    })
    .expect("a valid configuration")
}

/// The pipeline whose first model is `first` (the second is the other kind).
fn pipeline(first: Kind) -> &'static Pipeline {
    static P: [OnceLock<Pipeline>; 2] = [OnceLock::new(), OnceLock::new()];
    let other = match first {
        Kind::OpenAi => Kind::Anthropic,
        Kind::Anthropic => Kind::OpenAi,
    };
    P[(first == Kind::Anthropic) as usize].get_or_init(|| build(first, other))
}

/// Inputs so far: the clock of the next one (limits are per minute; two minutes refill all).
static INPUTS: AtomicU64 = AtomicU64::new(0);

fn check_rejection(r: &Rejection) {
    let Some(&(_, status)) = CODES.iter().find(|(c, _)| *c == r.code) else {
        panic!("decide answered with a code outside the table: {r:?}")
    };
    assert_eq!(r.status, status, "status of {}", r.code);
    assert!(
        !UPSTREAM_CODES.contains(&r.code),
        "decide never answers for the upstream"
    );
    // the OpenAI type by status below 500 (ERROR_TYPES), the default invalid_request_error
    let ty = ERROR_TYPES
        .iter()
        .find(|(s, _)| *s == r.status)
        .map_or("invalid_request_error", |(_, t)| t);
    assert_eq!(
        error_type(r.status, r.code),
        ty,
        "error_type and the table disagree"
    );
    let want = Json::Obj(vec![(
        "error".into(),
        Json::Obj(vec![
            ("message".into(), Json::Str(r.message.as_str().into())),
            ("type".into(), Json::Str(ty.into())),
            ("code".into(), Json::Str(r.code.into())),
        ]),
    )]);
    assert_eq!(
        parsed(&r.body(), "error body"),
        want,
        "the OpenAI error body"
    );
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| *n).collect();
    if FRAMING.contains(&r.code) {
        assert_eq!(
            r.headers,
            [("connection", "close".to_string())],
            "{}",
            r.code
        );
    } else if r.code == "rate_limit_exceeded" {
        assert_eq!(names, ["retry-after"]);
        let secs: u64 = r.headers[0]
            .1
            .parse()
            .expect("retry-after in whole seconds");
        assert!(secs >= 1, "retry-after {secs}");
    } else {
        assert!(
            r.headers.is_empty(),
            "{} with headers {:?}",
            r.code,
            r.headers
        );
    }
    if r.code == "waf_blocked" {
        let a = r.audit.as_ref().expect("a WAF block is audited");
        assert!(a.waf.starts_with("block:"), "audited as {:?}", a.waf);
    }
}

fn check_forwarding(f: &Forwarding, body: &[u8], first: Kind, second: Kind, key_id: Option<&str>) {
    let req = parsed(body, "a forwarded request's body");
    let Some(Json::Str(model)) = req.get("model") else {
        panic!("forwarded a request without a model: {req:?}")
    };
    let (kind, url, up) = match model.as_ref() {
        "mock" => (first, FIRST_URL, "up"),
        "claude" => (second, SECOND_URL, "up-claude"),
        other => (first, FIRST_URL, other), // passthrough: the first model, under its name
    };
    assert_eq!(
        (f.kind, f.url.as_str()),
        (kind, url),
        "the route of {model:?}"
    );
    assert_eq!(f.public_model, model.as_ref());
    assert!(f.adapt, "the adapter stage is on");
    assert_eq!(
        f.stream,
        matches!(req.get("stream"), Some(Json::Bool(true)))
    );
    match key_id {
        Some(k) => assert_eq!(f.key_id, k),
        None => assert!(
            ["k", "k1"].contains(&f.key_id.as_str()),
            "key {:?}",
            f.key_id
        ),
    }
    let has = |n: &str, v: &str| f.headers.iter().any(|(a, b)| a == n && b == v);
    assert!(has("Content-Type", "application/json"), "{:?}", f.headers);
    match kind {
        Kind::OpenAi => {
            assert!(has("Authorization", "Bearer key"), "{:?}", f.headers);
            assert_model_swapped(body, &f.body, up);
        }
        Kind::Anthropic => {
            assert!(has("anthropic-version", "2023-06-01") && has("x-api-key", "key"));
            assert_anthropic_request(body, &f.body, up);
        }
    }
    let audit = f.audit.as_ref().expect("audit is on");
    assert_eq!(
        (audit.model.as_str(), audit.waf.as_str()),
        (model.as_ref(), "allow")
    );
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (flags, n) = (data[0], data[1] as usize);
    let rest = &data[2..];
    let (block, tail) = rest.split_at(n.min(rest.len()));
    let lowered: Vec<(Vec<u8>, Vec<u8>)> = block
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let i = line.iter().position(|b| *b == b':')?;
            Some((
                line[..i].to_ascii_lowercase(),
                line[i + 1..].trim_ascii().to_vec(),
            ))
        })
        .collect();
    let mut headers: Vec<(&[u8], &[u8])> = lowered.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let twice = flags & 8 == 8;
    // the last Authorization header counts: ours when we add one, else the block's
    let key_id = if twice {
        headers.push((b"authorization", b"Bearer sk1"));
        Some("k1")
    } else if flags & 1 == 1 {
        headers.push((b"authorization", b"Bearer sk"));
        Some("k")
    } else {
        None
    };
    let generated;
    let body: &[u8] = if flags & 4 == 4 {
        let mut u = Unstructured::new(tail);
        let Ok(model) = (match u.int_in_range(0..=2u8) {
            Ok(0) => Ok("mock".to_string()),
            Ok(1) => Ok("claude".to_string()),
            _ => text(&mut u),
        }) else {
            return;
        };
        let Ok(req) = openai_request(&mut u, &model) else {
            return;
        };
        generated = serde_json::to_vec(&req).expect("a Value serialises");
        &generated
    } else {
        tail
    };
    let (first, second) = if flags & 2 == 2 {
        (Kind::Anthropic, Kind::OpenAi)
    } else {
        (Kind::OpenAi, Kind::Anthropic)
    };
    let req = Request {
        method: if flags & 16 == 16 { "GET" } else { "POST" },
        path: if flags & 32 == 32 {
            "/v1/other"
        } else {
            CHAT_PATH
        },
        headers: &headers,
        body,
    };
    let minutes = 2 * INPUTS.fetch_add(1, Ordering::Relaxed) as i128;
    let ctx = Context {
        time_ns: 1,
        mono_ns: 1_000_000_000 + minutes * 60_000_000_000,
        request_id: "r",
    };
    let p = pipeline(first);
    let verdicts = if twice { 2 } else { 1 };
    let mut forwarded_before = false;
    for _ in 0..verdicts {
        match p.decide(&req, &ctx) {
            Decision::Reject(r) => {
                check_rejection(&r);
                if forwarded_before {
                    assert_eq!(
                        r.code, "rate_limit_exceeded",
                        "the second request in a minute"
                    );
                }
            }
            Decision::Forward(f) => {
                assert!(
                    !forwarded_before,
                    "a key of 1 request a minute forwarded two"
                );
                check_forwarding(&f, body, first, second, key_id);
                forwarded_before = true;
            }
        }
    }
});
