//! Audit jobs and the one place (Rust twin) where an audit record is assembled.
//!
//! The Python twin is `gateway/audit/job.py` (`RecordAssembler.record`); both give the same
//! payload bytes for the same job. A job is the request's `AuditMaterial` plus the answer.
use crate::entropy::{body_doc_ok, doc_entropy_bits, text_entropy_millibits, to_millibits, PySum};
use crate::hash::sha256_hex;
use crate::pipeline::AuditMaterial;
use crate::record::{encode_record, Value};
use crate::stages::adapter::{self, Json};

#[derive(Debug, Clone)]
pub enum Answer {
    /// The body sent (non-streamed).
    Body(Vec<u8>),
    /// Every OpenAI chunk JSON sent on a stream.
    Chunks(Vec<Vec<u8>>),
}

#[derive(Debug, Clone)]
pub struct AuditJob {
    pub material: AuditMaterial,
    pub status: u16,
    pub answer: Answer,
    pub latency_us: i64,
    /// A 2xx `Answer::Body`'s figures, read on the request path from the document the
    /// response adapter parsed (`doc_figures`), so the ledger does not parse the body again;
    /// `None`: the ledger reads them from the body (`body_figures`). Either way the same.
    pub figures: Option<Figures>,
}

/// What a 2xx body gives its record: (entropy_mbits, prompt_tokens, completion_tokens).
pub type Figures = (i64, i64, i64);

/// `orjson.loads(chunk)["choices"][0]["delta"].get("content")` when it is a non-empty str.
fn delta_content(chunk: &[u8]) -> Option<String> {
    let v = adapter::parse(chunk).ok()?;
    let Some(Json::Arr(choices)) = v.get("choices") else {
        return None;
    };
    let delta = choices.first()?.get("delta")?;
    match delta.get("content") {
        Some(Json::Str(s)) if !s.is_empty() => Some(s.to_string()),
        _ => None,
    }
}

fn falsy(v: &Json<'_>) -> bool {
    match v {
        Json::Null => true,
        Json::Bool(b) => !b,
        Json::I64(n) => *n == 0,
        Json::U64(n) => *n == 0,
        Json::F64(f) => *f == 0.0,
        Json::Str(s) => s.is_empty(),
        Json::Arr(a) => a.is_empty(),
        Json::Obj(o) => o.is_empty(),
    }
}

/// A usage count as the record keeps it (the Python twin's `_count`).
fn count(v: Option<&Json<'_>>, default: i64) -> Result<i64, ()> {
    match v {
        None => Ok(default),
        Some(v) if falsy(v) => Ok(default),
        Some(Json::I64(n)) if *n >= 0 => Ok(*n),
        _ => Err(()),
    }
}

/// (entropy, prompt_tokens, completion_tokens) of a non-streamed 2xx body; what cannot be
/// read leaves entropy 0 and keeps the counts read so far (the Python twin's try block).
/// The body is parsed once: the entropy and the usage counts read the same document.
pub fn body_figures(body: &[u8], prompt_tokens: i64, mode: PySum) -> Figures {
    match adapter::parse(body) {
        Ok(doc) => doc_figures(&doc, prompt_tokens, mode),
        Err(_) => (0, prompt_tokens, 0),
    }
}

/// `body_figures` of a body from the document `adapter::parse` read from it (or from bytes
/// that parse to the same document: the adapter's writing of it), without parsing again.
pub fn doc_figures(doc: &Json<'_>, prompt_tokens: i64, mode: PySum) -> Figures {
    if !body_doc_ok(doc) {
        return (0, prompt_tokens, 0); // entropy::parse_body's reading: not JSON it reads
    }
    let entropy = to_millibits(doc_entropy_bits(doc, mode));
    if !matches!(doc, Json::Obj(_)) {
        return (0, prompt_tokens, 0);
    }
    let usage = doc.get("usage");
    let empty = Json::Obj(Vec::new());
    let usage = match usage {
        None => &empty,
        Some(u) if falsy(u) => &empty,
        Some(u @ Json::Obj(_)) => u,
        Some(_) => return (0, prompt_tokens, 0),
    };
    let Ok(completion) = count(usage.get("completion_tokens"), 0) else {
        return (0, prompt_tokens, 0);
    };
    let Ok(prompt) = count(usage.get("prompt_tokens"), prompt_tokens) else {
        return (0, prompt_tokens, completion);
    };
    (entropy, prompt, completion)
}

/// The canonical record payload of `job` as leaf `seq`. `mode` is how the interpreter the
/// Python twin runs on sums floats (entropy): the rungs agree with the twin they replace.
pub fn record_payload(seq: u64, job: &AuditJob, mode: PySum) -> Vec<u8> {
    let m = &job.material;
    let (entropy, prompt_tokens, completion_tokens, response_sha) = match &job.answer {
        Answer::Chunks(chunks) => {
            let mut text = String::new();
            let mut n = 0i64;
            let mut body = Vec::new();
            for c in chunks {
                if let Some(t) = delta_content(c) {
                    text.push_str(&t);
                    n += 1;
                }
                body.extend_from_slice(b"data: ");
                body.extend_from_slice(c);
                body.extend_from_slice(b"\n\n");
            }
            (
                text_entropy_millibits(&text),
                m.prompt_tokens,
                n,
                sha256_hex(&body),
            )
        }
        Answer::Body(b) => {
            let (e, p, c) = if (200..300).contains(&job.status) {
                job.figures
                    .unwrap_or_else(|| body_figures(b, m.prompt_tokens, mode))
            } else {
                (0, m.prompt_tokens, 0)
            };
            (e, p, c, sha256_hex(b))
        }
    };
    let request_sha = sha256_hex(&m.request_body);
    // in key order already (encode_record sorts; a sorted list costs it one pass)
    let mut entries = vec![
        ("completion_tokens", Value::Int(completion_tokens)),
        ("entropy_mbits", Value::Int(entropy)),
        ("key_id", Value::Str(&m.key_id)),
        ("latency_us", Value::Int(job.latency_us)),
        ("model", Value::Str(&m.model)),
        ("prompt_tokens", Value::Int(prompt_tokens)),
        ("request_id", Value::Str(&m.request_id)),
        ("request_sha256", Value::Str(&request_sha)),
        ("response_sha256", Value::Str(&response_sha)),
        ("seq", Value::Int(seq as i64)),
        ("status", Value::Int(job.status as i64)),
        ("time_ns", Value::Int(m.time_ns)),
        ("waf", Value::Str(&m.waf)),
    ];
    // only a traced (sampled) request's record has it: every other record is as before
    if !m.trace_id.is_empty() {
        entries.insert(12, ("trace_id", Value::Str(&m.trace_id)));
    }
    encode_record(&mut entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material() -> AuditMaterial {
        AuditMaterial {
            time_ns: 5,
            request_id: "r".into(),
            key_id: "k".into(),
            model: "m".into(),
            request_body: b"{}".to_vec(),
            prompt_tokens: 3,
            waf: "allow".into(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn usage_counts_and_fallbacks() {
        let job = |body: &[u8]| AuditJob {
            material: material(),
            status: 200,
            answer: Answer::Body(body.to_vec()),
            latency_us: 7,
            figures: None,
        };
        let p = record_payload(
            0,
            &job(br#"{"usage":{"prompt_tokens":9,"completion_tokens":2}}"#),
            PySum::Plain,
        );
        let s = String::from_utf8(p).unwrap();
        assert!(
            s.contains(r#""completion_tokens":2"#) && s.contains(r#""prompt_tokens":9"#),
            "{s}"
        );
        let s = String::from_utf8(record_payload(
            0,
            &job(br#"{"usage":{"completion_tokens":2,"prompt_tokens":"x"}}"#),
            PySum::Plain,
        ))
        .unwrap();
        assert!(
            s.contains(r#""completion_tokens":2"#)
                && s.contains(r#""prompt_tokens":3"#)
                && s.contains(r#""entropy_mbits":0"#),
            "{s}"
        );
    }

    #[test]
    fn figures_of_the_adapters_document_are_the_bodys() {
        use crate::stages::adapter::{Adapter, Kind};
        let deep = format!(
            r#"{{"model":"up","choices":[{{"message":{{"content":"x"}}}}],"z":{}1{}}}"#,
            "[".repeat(130),
            "]".repeat(130)
        );
        let bodies: Vec<&[u8]> = vec![
            br#"{"model":"pub","choices":[{"message":{"content":"hello hello world"}}],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
            br#"{"model":"up","choices":[{"message":{"content":"caf\u00e9 \"q\" \n"}}],"usage":{"completion_tokens":4}}"#,
            br#"{"model":"up","choices":[{"logprobs":{"content":[{"top_logprobs":[{"logprob":-0.1},{"logprob":-2.5e-7}]}]}}],"usage":{"prompt_tokens":-0,"completion_tokens":1.0}}"#,
            br#"{"usage":{"prompt_tokens":"x","completion_tokens":2},"choices":[]}"#,
            br#"{"usage":[1],"model":"up","model":"pub"}"#,
            br#"{"choices":{"message":1},"usage":0}"#,
            br#"{ "model" : "up" , "choices" : [ ] }"#,
            deep.as_bytes(),
        ];
        let a = Adapter::new(Kind::OpenAi);
        for body in bodies {
            for mode in [PySum::Plain, PySum::Neumaier] {
                let mut seen = None;
                let out = a
                    .from_upstream_read(body, "pub", |d| seen = Some(doc_figures(d, 3, mode)))
                    .unwrap();
                let want = body_figures(&out, 3, mode);
                assert_eq!(seen, Some(want), "{}", String::from_utf8_lossy(body));
            }
        }
    }

    #[test]
    fn trace_id_only_when_traced() {
        let mut job = AuditJob {
            material: material(),
            status: 404,
            answer: Answer::Body(b"{}".to_vec()),
            latency_us: 7,
            figures: None,
        };
        let plain = String::from_utf8(record_payload(0, &job, PySum::Plain)).unwrap();
        assert!(!plain.contains("trace_id"), "{plain}");
        job.material.trace_id = "0af7651916cd43dd8448eb211c80319c".into();
        let s = String::from_utf8(record_payload(0, &job, PySum::Plain)).unwrap();
        assert!(
            s.ends_with(r#","trace_id":"0af7651916cd43dd8448eb211c80319c","waf":"allow"}"#),
            "{s}"
        );
    }

    #[test]
    fn stream_counts_content_chunks() {
        let chunks = vec![
            br#"{"choices":[{"delta":{"content":"a"}}]}"#.to_vec(),
            br#"{"choices":[{"delta":{}}]}"#.to_vec(),
        ];
        let job = AuditJob {
            material: material(),
            status: 200,
            answer: Answer::Chunks(chunks),
            latency_us: 1,
            figures: None,
        };
        let s = String::from_utf8(record_payload(1, &job, PySum::Plain)).unwrap();
        assert!(
            s.contains(r#""completion_tokens":1"#) && s.contains(r#""seq":1"#),
            "{s}"
        );
    }
}
