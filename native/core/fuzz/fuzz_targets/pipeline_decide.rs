//! `pipeline::decide` (the request logic of every rung) on any head and body: never panics; a
//! rejection is a 4xx/5xx whose OpenAI-shaped body parses; a forwarded body parses.
//! Input: byte 0 = flags (bit 0: add a valid Authorization, bit 1: an Anthropic upstream),
//! byte 1 = length of a header block ("name: value" lines), then the block, then the body.
#![no_main]
use gatewaylab_core::stages::adapter::parse;
use gatewaylab_core::stages::auth::sha256_hex;
use gatewaylab_core::pipeline::{
    Context, Decision, KeyConfig, ModelConfig, Pipeline, PipelineConfig, Request, RuleConfig,
    STAGES,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn pipeline(anthropic: bool) -> &'static Pipeline {
    static P: [OnceLock<Pipeline>; 2] = [OnceLock::new(), OnceLock::new()];
    P[anthropic as usize].get_or_init(|| {
        let kind = if anthropic { "anthropic" } else { "openai" };
        Pipeline::new(&PipelineConfig {
            keys: vec![KeyConfig {
                id: "k".into(),
                sha256: sha256_hex(b"sk"),
                rpm: Some(1_000_000),
                tpm: Some(1 << 40),
            }],
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
            models: vec![ModelConfig {
                name: "mock".into(),
                kind: kind.into(),
                url: "http://u/v1/chat/completions".into(),
                model: "up".into(),
                api_key: Some("key".into()),
            }],
            passthrough: true,
            max_body_bytes: 1 << 16,
            max_header_bytes: 1 << 12,
            stages: STAGES.iter().map(|s| s.to_string()).collect(),
            audit: true,
            router: None,
            deployments: Vec::new(),
        })
        .expect("a valid configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (flags, n) = (data[0], data[1] as usize);
    let rest = &data[2..];
    let (block, body) = rest.split_at(n.min(rest.len()));
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
    if flags & 1 == 1 {
        headers.push((b"authorization", b"Bearer sk"));
    }
    let req = Request {
        method: "POST",
        path: "/v1/chat/completions",
        headers: &headers,
        body,
    };
    let ctx = Context {
        time_ns: 1,
        mono_ns: 1_000_000_000,
        request_id: "r",
    };
    match pipeline(flags & 2 == 2).decide(&req, &ctx) {
        Decision::Reject(r) => {
            assert!((400..=599).contains(&r.status), "status {}", r.status);
            assert!(parse(&r.body()).is_ok());
        }
        Decision::Forward(f) => assert!(parse(&f.body).is_ok(), "forwarded body is JSON"),
    }
});
