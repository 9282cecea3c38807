//! The adapter, both kinds, all three directions: never panics, and whatever it writes says
//! what its input said, read back in the input's terms (common/contract.rs):
//! - OpenAI upstream: the request, response or stream event with only `model` replaced (in
//!   place, or last), and swapping the input's own model back gives the input again; a
//!   response's record figures read from the adapter's document are its answer's;
//! - Anthropic request: the Messages request read back as an OpenAI conversation is the
//!   input's (system messages joined, every other message's role and content in order,
//!   max_tokens or 1024, temperature, top_p, stop as a list, stream only when true);
//! - Anthropic response: the chat completion carries the response's id, its text blocks
//!   joined, its stop reason's finish_reason and its token counts (total = the sum);
//! - Anthropic stream: each event gives the chunk it stands for, or none.
//!
//! Input: byte 0 selects. Below 0x80, any bytes (bit 0: Anthropic, bits 1-2 mod 3: request,
//! response, stream event); what the adapter refuses is fine, what it accepts is checked.
//! From 0x80 on, a generated valid message (bits 0-1: a request through both kinds, an
//! Anthropic response, an Anthropic event stream, an OpenAI response and its stream), which
//! the adapter must accept.
#![no_main]
#[path = "common/contract.rs"]
mod contract;

use contract::*;
use gatewaylab_core::entropy::PySum;
use gatewaylab_core::job::{body_figures, doc_figures};
use gatewaylab_core::stages::adapter::{Adapter, Json, Kind};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const UP: &str = "upstream-model";
const PUB: &str = "public-model";

/// An OpenAI-kind output: the model swapped; and swapped back to the input's own model (a
/// string), the input again.
fn check_openai_swap(a: &Adapter, input: &[u8], out: &[u8], model: &str) {
    assert_model_swapped(input, out, model);
    if let Some(Json::Str(own)) = parsed(input, "input").get("model").cloned() {
        let back = a
            .to_upstream(out, &own)
            .expect("its own output is accepted");
        assert_eq!(
            parsed(&back, "round trip"),
            parsed(input, "input"),
            "round trip"
        );
    }
}

fn raw(sel: u8, body: &[u8]) {
    let kind = if sel & 1 == 0 {
        Kind::OpenAi
    } else {
        Kind::Anthropic
    };
    let a = Adapter::new(kind);
    match ((sel >> 1) % 3, kind) {
        (0, Kind::OpenAi) => {
            if let Ok(out) = a.to_upstream(body, UP) {
                check_openai_swap(&a, body, &out, UP);
            }
        }
        (0, Kind::Anthropic) => {
            if let Ok(out) = a.to_upstream(body, UP) {
                assert_anthropic_request(body, &out, UP);
            }
        }
        (1, Kind::OpenAi) => {
            // the record's figures read from the document parsed here are the answer's own
            let mut seen = None;
            let read = |d: &Json<'_>| seen = Some(doc_figures(d, 3, PySum::Neumaier));
            if let Ok(out) = a.from_upstream_read(body, PUB, read) {
                check_openai_swap(&a, body, &out, PUB);
                let want = body_figures(&out, 3, PySum::Neumaier);
                assert_eq!(seen, Some(want), "figures");
            }
        }
        (1, Kind::Anthropic) => {
            if let Ok(out) = a.from_upstream(body, PUB) {
                assert_anthropic_response(body, &out, PUB);
            }
        }
        (_, Kind::OpenAi) => {
            if let Ok(chunks) = a.stream_event(body, PUB) {
                assert_openai_event(body, &chunks, PUB);
            }
        }
        (_, Kind::Anthropic) => {
            if let Ok(chunks) = a.stream_event(body, PUB) {
                assert_anthropic_event(body, &chunks, PUB);
            }
        }
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a Value serialises")
}

fn generated(sel: u8, u: &mut Unstructured) -> Result<()> {
    let (openai, anthropic) = (Adapter::new(Kind::OpenAi), Adapter::new(Kind::Anthropic));
    match sel & 3 {
        0 => {
            let model = text(u)?;
            let req = bytes(&openai_request(u, &model)?);
            let out = openai
                .to_upstream(&req, UP)
                .expect("a valid request, OpenAI upstream");
            check_openai_swap(&openai, &req, &out, UP);
            let out = anthropic
                .to_upstream(&req, UP)
                .expect("a valid request, Anthropic upstream");
            assert_anthropic_request(&req, &out, UP);
        }
        1 => {
            let resp = bytes(&anthropic_response(u)?);
            let out = anthropic
                .from_upstream(&resp, PUB)
                .expect("a valid Anthropic response");
            assert_anthropic_response(&resp, &out, PUB);
        }
        2 => {
            // the whole stream: the chunks' text is the deltas' text, one role chunk first,
            // one finish chunk last
            let (events, text_all, stop) = anthropic_stream(u)?;
            let mut chunks = Vec::new();
            for e in &events {
                let e = bytes(e);
                let out = anthropic.stream_event(&e, PUB).expect("a valid event");
                assert_anthropic_event(&e, &out, PUB);
                chunks.extend(out.iter().map(|c| chunk_parts(c, PUB)));
            }
            let (first, last) = (
                chunks.first().expect("chunks"),
                chunks.last().expect("chunks"),
            );
            assert_eq!(
                first.0,
                parsed(br#"{"role":"assistant","content":""}"#, "role")
            );
            assert_eq!(last.1, finish_of(Some(&parsed(&bytes(&stop), "stop"))));
            let mut joined = String::new();
            for (delta, _) in &chunks[1..chunks.len() - 1] {
                match delta.get("content") {
                    Some(Json::Str(t)) => joined.push_str(t),
                    other => panic!("a middle chunk without text: {other:?}"),
                }
            }
            assert_eq!(joined, text_all, "the stream's text");
        }
        _ => {
            let model = text(u)?;
            let resp = bytes(
                &json!({"id": "c", "object": "chat.completion", "created": 1,
                "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": text(u)?}}]}),
            );
            let out = openai
                .from_upstream(&resp, PUB)
                .expect("a valid OpenAI response");
            check_openai_swap(&openai, &resp, &out, PUB);
            let chunk = bytes(&json!({"id": "c", "object": "chat.completion.chunk",
                "model": model, "choices": [{"index": 0, "delta": {"content": text(u)?}}]}));
            for e in [chunk, b"[DONE]".to_vec(), b" [DONE]\n".to_vec()] {
                let out = openai.stream_event(&e, PUB).expect("a valid OpenAI event");
                assert_openai_event(&e, &out, PUB);
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    if sel < 0x80 {
        raw(sel, body);
    } else {
        // running out of fuzz bytes ends the case early; what ran was checked
        let _ = generated(sel, &mut Unstructured::new(body));
    }
});
