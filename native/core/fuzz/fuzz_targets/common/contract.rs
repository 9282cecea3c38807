//! The adapter's contract between the OpenAI and Anthropic shapes (the Python twin's
//! docstring, `gateway/stages/adapter.py`), written as checks over parsed JSON and shared by
//! the `adapter_parse` and `pipeline_decide` targets, with generators of valid requests and
//! upstream answers. Each check reads the adapter's output back into the other side's terms
//! and compares it with what the input said (a round trip of the content), and checks the
//! output's shape (keys, their order, fixed values) as the twins' byte parity needs it.
#![allow(dead_code)] // each target uses part of it

use gatewaylab_core::stages::adapter::{parse, Json};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use serde_json::{json, Number, Value};
use std::borrow::Cow;

pub type J = Json<'static>;

/// Parse bytes the adapter wrote (or accepted): they must be JSON.
pub fn parsed(bytes: &[u8], what: &str) -> J {
    match parse(bytes) {
        Ok(v) => v.into_owned(),
        Err(e) => panic!(
            "{what} is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

pub fn s(text: &str) -> J {
    Json::Str(Cow::Owned(text.to_string()))
}

fn keys(v: &J) -> Vec<&str> {
    match v {
        Json::Obj(kv) => kv.iter().map(|(k, _)| k.as_ref()).collect(),
        _ => Vec::new(),
    }
}

fn field<'j>(v: &'j J, key: &str) -> Option<&'j J> {
    match v {
        Json::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        _ => None,
    }
}

fn not_null(v: Option<&J>) -> Option<&J> {
    v.filter(|x| !matches!(x, Json::Null))
}

/// `obj` with `key` set the way Python's `d[key] = value` sets it: in place, or last.
pub fn with_key(obj: &J, key: &str, value: J) -> J {
    let Json::Obj(mut kv) = obj.clone() else {
        panic!("not an object: {obj:?}")
    };
    match kv.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => kv.push((Cow::Owned(key.to_string()), value)),
    }
    Json::Obj(kv)
}

/// `keys` appear in `order`'s order, each at most once, and `required` are all there.
fn assert_keys(v: &J, order: &[&str], required: &[&str], what: &str) {
    let ks = keys(v);
    let mut at = 0;
    for k in &ks {
        match order[at..].iter().position(|o| o == k) {
            Some(i) => at += i + 1,
            None => panic!("{what}: key {k:?} unexpected or out of order in {ks:?}"),
        }
    }
    for r in required {
        assert!(ks.contains(r), "{what}: {r:?} missing in {ks:?}");
    }
}

// --- OpenAI upstream: the model swapped, nothing else touched --------------------------

/// The OpenAI kind's `to_upstream`/`from_upstream`: the input object with `model` set to
/// `model`, in place or last; and swapping the input's own model back gives the input.
pub fn assert_model_swapped(input: &[u8], output: &[u8], model: &str) {
    let (i, o) = (parsed(input, "input"), parsed(output, "adapter output"));
    let want = with_key(&i, "model", s(model));
    assert_eq!(o, want, "only the model may change");
    // byte for byte what the writer writes (the input itself where that is the input)
    assert_eq!(
        Some(output),
        want.to_bytes().as_deref(),
        "the writer's bytes"
    );
}

// --- OpenAI request <-> Anthropic Messages request ---------------------------------------

/// A chat request in neutral terms: what both shapes must agree on.
#[derive(Debug, PartialEq)]
pub struct Conversation {
    system: Option<String>,
    /// (role, content) of every non-system message, in order
    messages: Vec<(J, J)>,
    max_tokens: J,
    temperature: Option<J>,
    top_p: Option<J>,
    stop: Option<J>,
    stream: bool,
}

/// What an OpenAI request asks for, read as the adapter must read it (system messages are
/// joined with newlines; max_tokens defaults to 1024; a string stop is a one-element list).
pub fn conversation_of_openai(req: &J) -> Conversation {
    let Some(Json::Arr(msgs)) = field(req, "messages") else {
        panic!("the adapter accepted a request without a messages list: {req:?}")
    };
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in msgs {
        let (Some(role), Some(content)) = (field(m, "role"), field(m, "content")) else {
            panic!("the adapter accepted a message without role and content: {m:?}")
        };
        match (role, content) {
            (Json::Str(r), Json::Str(c)) if r == "system" => system.push(c.to_string()),
            (Json::Str(r), _) if r == "system" => {
                panic!("the adapter accepted a system message whose content is not a string")
            }
            _ => messages.push((role.clone(), content.clone())),
        }
    }
    Conversation {
        system: (!system.is_empty()).then(|| system.join("\n")),
        messages,
        max_tokens: not_null(field(req, "max_tokens"))
            .cloned()
            .unwrap_or(Json::I64(1024)),
        temperature: not_null(field(req, "temperature")).cloned(),
        top_p: not_null(field(req, "top_p")).cloned(),
        stop: not_null(field(req, "stop")).map(|v| match v {
            Json::Str(_) => Json::Arr(vec![v.clone()]),
            _ => v.clone(),
        }),
        stream: matches!(field(req, "stream"), Some(Json::Bool(true))),
    }
}

const ANTHROPIC_REQUEST: [&str; 8] = [
    "model",
    "max_tokens",
    "system",
    "messages",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
];

/// An Anthropic Messages request read back: its shape checked (key order, `model`, every
/// message exactly {role, content} and none of them `system`), its content returned.
pub fn conversation_of_anthropic(out: &J, model: &str) -> Conversation {
    assert_keys(
        out,
        &ANTHROPIC_REQUEST,
        &["model", "max_tokens", "messages"],
        "anthropic request",
    );
    assert_eq!(field(out, "model"), Some(&s(model)), "the upstream model");
    let system = field(out, "system").map(|v| match v {
        Json::Str(t) => t.to_string(),
        _ => panic!("system is not a string: {v:?}"),
    });
    let Some(Json::Arr(msgs)) = field(out, "messages") else {
        panic!("messages is not a list: {out:?}")
    };
    let messages = msgs
        .iter()
        .map(|m| {
            assert_eq!(keys(m), ["role", "content"], "an anthropic message: {m:?}");
            let role = field(m, "role").expect("role").clone();
            assert_ne!(role, s("system"), "a system message left in messages");
            (role, field(m, "content").expect("content").clone())
        })
        .collect();
    let stream = match field(out, "stream") {
        None => false,
        Some(Json::Bool(true)) => true,
        Some(v) => panic!("stream is written only as true, got {v:?}"),
    };
    for k in ["temperature", "top_p", "stop_sequences"] {
        assert!(
            !matches!(field(out, k), Some(Json::Null)),
            "{k} written as null"
        );
    }
    Conversation {
        system,
        messages,
        max_tokens: field(out, "max_tokens").expect("max_tokens").clone(),
        temperature: field(out, "temperature").cloned(),
        top_p: field(out, "top_p").cloned(),
        stop: field(out, "stop_sequences").cloned(),
        stream,
    }
}

/// `to_upstream` of the Anthropic kind: the request it wrote says what the OpenAI request
/// said (the round trip), in the Messages shape.
pub fn assert_anthropic_request(input: &[u8], output: &[u8], model: &str) {
    let (i, o) = (parsed(input, "input"), parsed(output, "adapter output"));
    assert_eq!(
        conversation_of_anthropic(&o, model),
        conversation_of_openai(&i),
        "the Anthropic request does not say what the OpenAI request said"
    );
}

// --- Anthropic Messages response -> OpenAI chat completion -------------------------------

/// An answer in neutral terms.
#[derive(Debug, PartialEq)]
pub struct Answer {
    id: J,
    text: String,
    finish: J,
    prompt_tokens: J,
    completion_tokens: J,
}

/// The OpenAI finish_reason an Anthropic stop_reason stands for.
pub fn finish_of(stop_reason: Option<&J>) -> J {
    match stop_reason {
        None | Some(Json::Null) => Json::Null,
        Some(Json::Str(r)) if r == "max_tokens" => s("length"),
        Some(Json::Str(r)) if r == "tool_use" => s("tool_calls"),
        Some(_) => s("stop"),
    }
}

fn truthy(v: &J) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::I64(n) => *n != 0,
        Json::U64(n) => *n != 0,
        Json::F64(f) => *f != 0.0,
        Json::Str(t) => !t.is_empty(),
        Json::Arr(a) => !a.is_empty(),
        Json::Obj(o) => !o.is_empty(),
    }
}

/// What an Anthropic response says (read only after the adapter accepted it).
pub fn answer_of_anthropic(r: &J) -> Answer {
    let mut text = String::new();
    if let Some(Json::Arr(blocks)) = field(r, "content") {
        for b in blocks {
            if field(b, "type") == Some(&s("text")) {
                match field(b, "text") {
                    Some(Json::Str(t)) => text.push_str(t),
                    other => panic!("the adapter accepted a text block with text {other:?}"),
                }
            }
        }
    }
    let usage = field(r, "usage").filter(|u| truthy(u));
    let tokens = |k: &str| {
        usage
            .and_then(|u| field(u, k))
            .cloned()
            .unwrap_or(Json::I64(0))
    };
    Answer {
        id: field(r, "id")
            .expect("an accepted response has an id")
            .clone(),
        text,
        finish: finish_of(field(r, "stop_reason")),
        prompt_tokens: tokens("input_tokens"),
        completion_tokens: tokens("output_tokens"),
    }
}

fn int(v: &J) -> i128 {
    match v {
        Json::I64(n) => *n as i128,
        Json::U64(n) => *n as i128,
        _ => panic!("a token count that is not an integer: {v:?}"),
    }
}

/// An OpenAI chat completion read back, its shape checked.
pub fn answer_of_openai(o: &J, model: &str) -> Answer {
    assert_eq!(
        keys(o),
        ["id", "object", "created", "model", "choices", "usage"]
    );
    assert_eq!(field(o, "object"), Some(&s("chat.completion")));
    assert_eq!(field(o, "created"), Some(&Json::I64(0)));
    assert_eq!(field(o, "model"), Some(&s(model)), "the public model");
    let Some(Json::Arr(choices)) = field(o, "choices") else {
        panic!("choices is not a list")
    };
    assert_eq!(choices.len(), 1);
    let c = &choices[0];
    assert_eq!(keys(c), ["index", "message", "finish_reason"]);
    assert_eq!(field(c, "index"), Some(&Json::I64(0)));
    let msg = field(c, "message").expect("message");
    assert_eq!(keys(msg), ["role", "content"]);
    assert_eq!(field(msg, "role"), Some(&s("assistant")));
    let Some(Json::Str(text)) = field(msg, "content") else {
        panic!("content is not a string")
    };
    let usage = field(o, "usage").expect("usage");
    assert_eq!(
        keys(usage),
        ["prompt_tokens", "completion_tokens", "total_tokens"]
    );
    let (p, q) = (
        field(usage, "prompt_tokens").expect("prompt"),
        field(usage, "completion_tokens").expect("completion"),
    );
    assert_eq!(
        int(field(usage, "total_tokens").expect("total")),
        int(p) + int(q),
        "total_tokens"
    );
    Answer {
        id: field(o, "id").expect("id").clone(),
        text: text.to_string(),
        finish: field(c, "finish_reason").expect("finish_reason").clone(),
        prompt_tokens: p.clone(),
        completion_tokens: q.clone(),
    }
}

/// `from_upstream` of the Anthropic kind: the completion says what the response said.
pub fn assert_anthropic_response(input: &[u8], output: &[u8], model: &str) {
    let (i, o) = (parsed(input, "input"), parsed(output, "adapter output"));
    assert_eq!(
        answer_of_openai(&o, model),
        answer_of_anthropic(&i),
        "the completion does not say what the Anthropic response said"
    );
}

// --- streams ----------------------------------------------------------------------------

/// One OpenAI chunk written for an Anthropic event: (delta, finish_reason), shape checked.
pub fn chunk_parts(chunk: &[u8], model: &str) -> (J, J) {
    let c = parsed(chunk, "stream chunk");
    assert_eq!(keys(&c), ["id", "object", "created", "model", "choices"]);
    assert_eq!(field(&c, "id"), Some(&s("chatcmpl-anthropic")));
    assert_eq!(field(&c, "object"), Some(&s("chat.completion.chunk")));
    assert_eq!(field(&c, "created"), Some(&Json::I64(0)));
    assert_eq!(field(&c, "model"), Some(&s(model)));
    let Some(Json::Arr(choices)) = field(&c, "choices") else {
        panic!("choices is not a list")
    };
    assert_eq!(choices.len(), 1);
    assert_eq!(keys(&choices[0]), ["index", "delta", "finish_reason"]);
    assert_eq!(field(&choices[0], "index"), Some(&Json::I64(0)));
    (
        field(&choices[0], "delta").expect("delta").clone(),
        field(&choices[0], "finish_reason").expect("finish").clone(),
    )
}

/// An Anthropic stream event and the chunks written for it: a text delta carries its text,
/// message_start the assistant role, message_delta its finish reason; anything else none.
pub fn assert_anthropic_event(event: &[u8], chunks: &[Vec<u8>], model: &str) {
    let ev = parsed(event, "event");
    let got: Vec<(J, J)> = chunks.iter().map(|c| chunk_parts(c, model)).collect();
    let ty = field(&ev, "type");
    let delta = field(&ev, "delta");
    let want: Vec<(J, J)> = if ty == Some(&s("content_block_delta"))
        && delta.is_some_and(|d| field(d, "type") == Some(&s("text_delta")))
    {
        let text = field(delta.expect("delta"), "text").expect("an accepted text_delta has text");
        vec![(
            Json::Obj(vec![(Cow::Borrowed("content"), text.clone())]),
            Json::Null,
        )]
    } else if ty == Some(&s("message_start")) {
        vec![(
            Json::Obj(vec![
                (Cow::Borrowed("role"), s("assistant")),
                (Cow::Borrowed("content"), s("")),
            ]),
            Json::Null,
        )]
    } else if ty == Some(&s("message_delta"))
        && matches!(delta, Some(Json::Obj(_)))
        && not_null(delta.and_then(|d| field(d, "stop_reason"))).is_some()
    {
        vec![(
            Json::Obj(vec![]),
            finish_of(delta.and_then(|d| field(d, "stop_reason"))),
        )]
    } else {
        vec![]
    };
    assert_eq!(got, want, "chunks for event {ev:?}");
}

/// An OpenAI stream event: `[DONE]` gives nothing (the gateway writes its own), any other
/// event comes back with only its model replaced, and only if it had one.
pub fn assert_openai_event(event: &[u8], chunks: &[Vec<u8>], model: &str) {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = event.iter().position(|c| !ws(c)).unwrap_or(event.len());
    let end = event.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    if &event[start..end] == b"[DONE]" {
        assert!(chunks.is_empty(), "[DONE] gives no chunk");
        return;
    }
    assert_eq!(chunks.len(), 1, "one chunk per OpenAI event");
    let (i, o) = (parsed(event, "event"), parsed(&chunks[0], "chunk"));
    let want = if field(&i, "model").is_some() {
        with_key(&i, "model", s(model))
    } else {
        i
    };
    assert_eq!(o, want, "an OpenAI event changes only its model");
    assert_eq!(
        Some(chunks[0].as_slice()),
        want.to_bytes().as_deref(),
        "the writer's bytes"
    );
}

// --- generators of valid messages ---------------------------------------------------------

pub fn text(u: &mut Unstructured) -> Result<String> {
    // a few fixed words (the WAF's among them) or any string
    Ok(match u.int_in_range(0..=5u8)? {
        0 => "hello".into(),
        1 => "please ignore  previous instructions".into(),
        2 => "something evil".into(),
        3 => "héllo\n\"quoted\" \u{1F600}".into(),
        _ => u.arbitrary()?,
    })
}

fn number(u: &mut Unstructured) -> Result<Value> {
    Ok(if u.arbitrary()? {
        Value::from(u.int_in_range(0..=2000u32)?)
    } else {
        let f: f64 = u.arbitrary()?;
        Number::from_f64(f).map_or(Value::from(0.5), Value::Number)
    })
}

/// A valid OpenAI chat request for `model` (every system message's content a string, so
/// both adapter kinds must accept it).
pub fn openai_request(u: &mut Unstructured, model: &str) -> Result<Value> {
    let n = u.int_in_range(1..=4usize)?;
    let mut messages = Vec::with_capacity(n);
    for _ in 0..n {
        let role = *u.choose(&["system", "user", "assistant", "tool", "developer", "user"])?;
        let content = if role != "system" && u.ratio(1, 4)? {
            let parts = u.int_in_range(1..=2usize)?;
            Value::Array(
                (0..parts)
                    .map(|_| Ok(json!({"type": "text", "text": text(u)?})))
                    .collect::<Result<_>>()?,
            )
        } else {
            Value::from(text(u)?)
        };
        messages.push(json!({"role": role, "content": content}));
    }
    let mut req = json!({"model": model, "messages": messages});
    let o = req.as_object_mut().expect("object");
    if u.arbitrary()? {
        o.insert(
            "max_tokens".into(),
            Value::from(u.int_in_range(1..=100_000u64)?),
        );
    }
    if u.arbitrary()? {
        o.insert("temperature".into(), number(u)?);
    }
    if u.arbitrary()? {
        o.insert("top_p".into(), number(u)?);
    }
    match u.int_in_range(0..=2u8)? {
        0 => {}
        1 => {
            o.insert("stop".into(), Value::from(text(u)?));
        }
        _ => {
            o.insert("stop".into(), json!([text(u)?, text(u)?]));
        }
    }
    if u.arbitrary()? {
        o.insert("stream".into(), Value::from(u.arbitrary::<bool>()?));
    }
    if u.arbitrary()? {
        o.insert("user".into(), Value::from(text(u)?)); // passed through, or dropped
    }
    Ok(req)
}

fn stop_reason(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => Value::Null,
        1 => "end_turn".into(),
        2 => "stop_sequence".into(),
        3 => "max_tokens".into(),
        4 => "tool_use".into(),
        _ => Value::from(text(u)?),
    })
}

/// A valid Anthropic Messages response.
pub fn anthropic_response(u: &mut Unstructured) -> Result<Value> {
    let n = u.int_in_range(0..=3usize)?;
    let content: Vec<Value> = (0..n)
        .map(|_| {
            Ok(if u.ratio(1, 4)? {
                json!({"type": "tool_use", "id": "t", "name": "f", "input": {}})
            } else {
                json!({"type": "text", "text": text(u)?})
            })
        })
        .collect::<Result<_>>()?;
    let mut r = json!({"id": text(u)?, "type": "message", "role": "assistant",
                       "content": content, "stop_reason": stop_reason(u)?});
    if u.arbitrary()? {
        r["usage"] = json!({"input_tokens": u.arbitrary::<u32>()?,
                            "output_tokens": u.arbitrary::<u32>()?});
    }
    Ok(r)
}

/// A valid Anthropic event stream: start, text deltas among other events, the stop.
pub fn anthropic_stream(u: &mut Unstructured) -> Result<(Vec<Value>, String, Value)> {
    let mut events = vec![json!({"type": "message_start", "message": {"id": "m", "content": []}})];
    let mut text_all = String::new();
    for _ in 0..u.int_in_range(0..=5usize)? {
        events.push(match u.int_in_range(0..=3u8)? {
            0 => json!({"type": "ping"}),
            1 => json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
            2 => json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": "{"}}),
            _ => {
                let t = text(u)?;
                text_all.push_str(&t);
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": t}})
            }
        });
    }
    let stop = match stop_reason(u)? {
        Value::Null => Value::from("end_turn"),
        v => v,
    };
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": stop.clone()},
                       "usage": {"output_tokens": 3}}),
    );
    events.push(json!({"type": "message_stop"}));
    Ok((events, text_all, stop))
}
