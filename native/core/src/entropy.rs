//! Shannon entropy of a response's token distribution, in integer millibits
//! (`gateway/audit/protocols.py` defines it; the Python twin is `gateway/audit/entropy.py`).
//!
//! Floating point is computed in the same order as the Python twin (left-to-right sums,
//! libm `exp`/`log2`) so both twins round to the same integer: `floor(H * 1000 + 0.5)`.
//!
//! A body is read once, by the adapter's orjson-compatible parser (`stages::adapter::parse`),
//! and the record takes its usage counts from the same document (`job.rs`).
use crate::stages::adapter::{self, Json};
use std::collections::HashMap;

/// `floor(h * 1000 + 0.5)` as the record stores it.
pub fn to_millibits(h: f64) -> i64 {
    (h * 1000.0 + 0.5).floor() as i64
}

/// Why a body has no entropy: it is not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidJson(pub String);

/// ASCII whitespace as the protocol defines it: b" \t\n\r\x0b\x0c".
#[inline]
fn is_ws(c: &u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Entropy in bits of the whitespace-token distribution of `text`
/// (distinct tokens in order of first appearance; no tokens -> 0).
pub fn text_entropy_bits(text: &str) -> f64 {
    text_entropy_bits_bytes(text.as_bytes())
}

/// The same over UTF-8 bytes (or Python's `surrogatepass` encoding of a str with lone
/// surrogates): ASCII bytes never occur inside a multi-byte sequence, so splitting bytes
/// and comparing tokens as bytes is exactly splitting and comparing the str.
pub fn text_entropy_bits_bytes(text: &[u8]) -> f64 {
    // foldhash, seeded per process: a fraction of SipHash's cost on short tokens, and an
    // upstream cannot choose colliding tokens without the seed. Sized for a short answer
    // (a longer one grows it), so the common case never rehashes.
    let mut index: HashMap<&[u8], usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(32, Default::default());
    let mut counts: Vec<u64> = Vec::with_capacity(32);
    let mut n: u64 = 0;
    for tok in text.split(is_ws).filter(|t| !t.is_empty()) {
        n += 1;
        match index.get(tok) {
            Some(&i) => counts[i] += 1,
            None => {
                index.insert(tok, counts.len());
                counts.push(1);
            }
        }
    }
    if n == 0 {
        return 0.0;
    }
    let nf = n as f64;
    let mut h = 0.0f64;
    for &c in &counts {
        let p = c as f64 / nf;
        h -= p * p.log2();
    }
    h
}

pub fn text_entropy_millibits(text: &str) -> i64 {
    to_millibits(text_entropy_bits(text))
}

pub fn text_entropy_millibits_bytes(text: &[u8]) -> i64 {
    to_millibits(text_entropy_bits_bytes(text))
}

/// The per-position top_logprobs of `choices[0].logprobs.content`, when every entry
/// carries a non-empty list of numeric logprobs; otherwise None (the text branch runs).
fn top_logprobs(doc: &Json<'_>) -> Option<Vec<Vec<f64>>> {
    let Json::Arr(choices) = doc.get("choices")? else {
        return None;
    };
    let Json::Arr(content) = choices.first()?.get("logprobs")?.get("content")? else {
        return None;
    };
    if content.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(content.len());
    for entry in content {
        let Json::Arr(tops) = entry.get("top_logprobs")? else {
            return None;
        };
        if tops.is_empty() {
            return None;
        }
        let mut lps = Vec::with_capacity(tops.len());
        for t in tops {
            lps.push(match t.get("logprob")? {
                Json::I64(n) => *n as f64,
                Json::U64(n) => *n as f64,
                Json::F64(f) => *f,
                _ => return None,
            });
        }
        out.push(lps);
    }
    Some(out)
}

/// How Python's built-in `sum()` adds floats: plain left-to-right before 3.12, Neumaier
/// compensated summation from 3.12 on. The Python twin normalises with `sum()`, so the
/// binding passes the running interpreter's mode to stay bit-identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PySum {
    Plain,
    Neumaier,
}

/// `sum(xs)` as CPython computes it for a non-empty list of floats (start = int 0).
pub fn py_sum(xs: &[f64], mode: PySum) -> f64 {
    let Some((&first, rest)) = xs.split_first() else {
        return 0.0;
    };
    // 0 + x0 (int + float) is x0, except that it turns -0.0 into 0.0.
    let mut f = 0.0 + first;
    match mode {
        PySum::Plain => {
            for &x in rest {
                f += x;
            }
            f
        }
        PySum::Neumaier => {
            let mut c = 0.0f64;
            for &x in rest {
                let t = f + x;
                if f.abs() >= x.abs() {
                    c += (f - t) + x;
                } else {
                    c += (x - t) + f;
                }
                f = t;
            }
            if c != 0.0 && c.is_finite() {
                f += c;
            }
            f
        }
    }
}

/// Entropy in bits of one position: p_i = exp(lp_i) / sum(exp), H = -Σ p log2 p in list
/// order, zero (or NaN) probabilities contributing nothing.
fn position_entropy(lps: &[f64], mode: PySum) -> f64 {
    let es: Vec<f64> = lps.iter().map(|lp| lp.exp()).collect();
    let z = py_sum(&es, mode);
    let mut h = 0.0f64;
    if z > 0.0 {
        for e in &es {
            let p = e / z;
            if p > 0.0 {
                h -= p * p.log2();
            }
        }
    }
    h
}

/// Containers nested deeper than this make a body "not JSON" to the entropy: serde_json's
/// default recursion limit, which the Python twin copies (`MAX_JSON_DEPTH` in
/// gateway/audit/entropy.py).
pub const MAX_JSON_DEPTH: usize = 127;

/// Whether containers nest more than `limit` deep in `v` (recursion bounded by `limit`).
fn deeper_than(v: &Json<'_>, limit: usize) -> bool {
    match v {
        Json::Arr(a) => limit == 0 || a.iter().any(|x| deeper_than(x, limit - 1)),
        Json::Obj(o) => limit == 0 || o.iter().any(|(_, x)| deeper_than(x, limit - 1)),
        _ => false,
    }
}

/// Whether `parse_body` keeps `doc`, a document `adapter::parse` read: the one check it adds
/// to the adapter's parse (nesting within `MAX_JSON_DEPTH`).
pub fn body_doc_ok(doc: &Json<'_>) -> bool {
    !deeper_than(doc, MAX_JSON_DEPTH)
}

/// A response body as the entropy reads it: the adapter's document (orjson's reading, the
/// one the record's usage counts come from too), or why it is not JSON (in serde_json's
/// words, as the entropy has always said it).
pub fn parse_body(body: &[u8]) -> Result<Json<'_>, InvalidJson> {
    match adapter::parse(body) {
        Ok(doc) if body_doc_ok(&doc) => Ok(doc),
        // the rare path: ask serde_json for its own message
        _ => Err(InvalidJson(
            match serde_json::from_slice::<serde_json::Value>(body) {
                Err(e) => e.to_string(),
                Ok(_) => "invalid JSON".to_string(),
            },
        )),
    }
}

/// Entropy in bits of a parsed OpenAI chat-completion response.
pub fn doc_entropy_bits(doc: &Json<'_>, mode: PySum) -> f64 {
    if let Some(positions) = top_logprobs(doc) {
        let mut total = 0.0f64;
        for lps in &positions {
            total += position_entropy(lps, mode);
        }
        return total / positions.len() as f64;
    }
    let text = doc
        .get("choices")
        .and_then(|c| match c {
            Json::Arr(a) => a.first(),
            _ => None,
        })
        .and_then(|c| c.get("message"))
        .and_then(|m| m.get("content"));
    match text {
        Some(Json::Str(t)) => text_entropy_bits(t),
        _ => 0.0,
    }
}

/// Entropy in bits of an OpenAI chat-completion JSON response.
pub fn entropy_bits(body: &[u8], mode: PySum) -> Result<f64, InvalidJson> {
    parse_body(body).map(|doc| doc_entropy_bits(&doc, mode))
}

pub fn entropy_millibits(body: &[u8], mode: PySum) -> Result<i64, InvalidJson> {
    entropy_bits(body, mode).map(to_millibits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_branch() {
        assert_eq!(text_entropy_millibits(""), 0);
        assert_eq!(text_entropy_millibits(" \t\n"), 0);
        assert_eq!(text_entropy_millibits("a a a"), 0);
        assert_eq!(text_entropy_millibits("a b"), 1000);
        assert_eq!(text_entropy_millibits("a\x0bb\x0cc\rd"), 2000);
        // Non-ASCII whitespace is part of a token, not a separator.
        assert_eq!(text_entropy_millibits("a\u{a0}b"), 0);
        // a a b: -(2/3 log2 2/3 + 1/3 log2 1/3) = 0.9182958...
        assert_eq!(text_entropy_millibits("a a b"), 918);
    }

    #[test]
    fn body_text_and_logprobs() {
        let b = br#"{"choices":[{"message":{"role":"assistant","content":"x y z w"}}]}"#;
        assert_eq!(entropy_millibits(b, PySum::Plain), Ok(2000));
        let half = (0.5f64).ln();
        let b = format!(
            r#"{{"choices":[{{"message":{{"content":"x x"}},"logprobs":{{"content":[
                {{"token":"a","logprob":{half},"top_logprobs":[{{"token":"a","logprob":{half}}},{{"token":"b","logprob":{half}}}]}},
                {{"token":"c","logprob":0,"top_logprobs":[{{"token":"c","logprob":0}}]}}]}}}}]}}"#
        );
        // positions: 1 bit and 0 bits -> mean 0.5 bits
        assert_eq!(entropy_millibits(b.as_bytes(), PySum::Neumaier), Ok(500));
        assert_eq!(entropy_millibits(b"{}", PySum::Plain), Ok(0));
        assert_eq!(entropy_millibits(br#"{"choices":[]}"#, PySum::Plain), Ok(0));
        assert!(entropy_millibits(b"not json", PySum::Plain).is_err());
    }

    /// The entropy as it read bodies before it shared the adapter's parse: serde_json's
    /// Value, its recursion limit and its messages. The shared parse must agree on every body.
    fn entropy_bits_by_value(body: &[u8], mode: PySum) -> Result<f64, InvalidJson> {
        use serde_json::Value;
        let doc: Value = serde_json::from_slice(body).map_err(|e| InvalidJson(e.to_string()))?;
        let tops = (|| {
            let content = doc
                .get("choices")?
                .get(0)?
                .get("logprobs")?
                .get("content")?
                .as_array()?;
            if content.is_empty() {
                return None;
            }
            let mut out = Vec::new();
            for entry in content {
                let tops = entry.get("top_logprobs")?.as_array()?;
                if tops.is_empty() {
                    return None;
                }
                let mut lps = Vec::new();
                for t in tops {
                    lps.push(t.get("logprob")?.as_f64()?);
                }
                out.push(lps);
            }
            Some(out)
        })();
        if let Some(positions) = tops {
            let total: f64 = positions.iter().map(|l| position_entropy(l, mode)).sum();
            return Ok(total / positions.len() as f64);
        }
        let text = doc["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("");
        Ok(text_entropy_bits(text))
    }

    #[test]
    fn shared_parse_reads_every_body_as_serde_json_did() {
        let nest = |d: usize, open: &str, close: &str| {
            format!(
                r#"{{"choices":[{{"message":{{"content":"a b"}}}}],"x":{}1{}}}"#,
                open.repeat(d),
                close.repeat(d)
            )
        };
        let mut bodies: Vec<Vec<u8>> = [
            r#"{"choices":[{"message":{"content":"a b a c"}}]}"#,
            r#"{"choices":[{"message":{"content":"a b"},"logprobs":{"content":[{"top_logprobs":[{"logprob":-0},{"logprob":0},{"logprob":-1e-3}]},{"top_logprobs":[{"logprob":-2}]}]}}]}"#,
            r#"{"choices":[{"message":{"content":"a b"},"logprobs":{"content":[{"top_logprobs":[{"logprob":true}]}]}}]}"#,
            r#"{"choices":[{"message":{"content":"a b"},"logprobs":{"content":[{"top_logprobs":[]}]}}]}"#,
            r#"{"choices":[{"message":{"content":"a b"},"logprobs":{"content":[{"top_logprobs":[{"logprob":18446744073709551615},{"logprob":-99999999999999999999999}]}]}}]}"#,
            r#"{"choices":{"0":{"message":{"content":"a b"}}}}"#,
            r#"{"choices":[{"message":{"content":7}}]}"#,
            r#"{"choices":[{"message":{"content":"x","content":"a b c d"}}]}"#,
            r#"{"choices":[{"message":{"content":"\u00e9 \ud83d\ude00 \u00e9\t\n"}}]}"#,
            r#"[{"message":{"content":"a b"}}]"#,
            r#"-0"#,
            r#"{"a":-0.0,"b":[-0,-0e1]}"#,
            r#"{"choices":[{"message":{"content":"\ud800"}}]}"#,
            r#"{"a":1e400}"#,
            r#"{"a":1} x"#,
            r#"{"a":[1-0]}"#,
            r#"{"a":"-0"}"#,
            "",
            "nul\u{0}",
        ]
        .iter()
        .map(|b| b.as_bytes().to_vec())
        .collect();
        bodies.push(b"{\"choices\":[{\"message\":{\"content\":\"\xff\"}}]}".to_vec());
        for d in [120, 125, 126, 127, 128, 129, 200, 1100] {
            bodies.push(nest(d, "[", "]").into_bytes());
            bodies.push(nest(d, r#"{"k":"#, "}").into_bytes());
        }
        for b in &bodies {
            for mode in [PySum::Plain, PySum::Neumaier] {
                let (new, old) = (entropy_bits(b, mode), entropy_bits_by_value(b, mode));
                match (&new, &old) {
                    (Ok(x), Ok(y)) => {
                        assert_eq!(x.to_bits(), y.to_bits(), "{}", String::from_utf8_lossy(b))
                    }
                    _ => assert_eq!(new, old, "{}", String::from_utf8_lossy(b)),
                }
            }
        }
    }

    #[test]
    fn python_sum_modes() {
        // sum([1e16, 1.0, -1e16]): 0.0 plain (1e16 + 1 rounds away), 1.0 with Neumaier (3.12+).
        assert_eq!(py_sum(&[1e16, 1.0, -1e16], PySum::Plain), 0.0);
        assert_eq!(py_sum(&[1e16, 1.0, -1e16], PySum::Neumaier), 1.0);
        assert_eq!(py_sum(&[0.1, 0.2, 0.3], PySum::Plain), 0.1 + 0.2 + 0.3);
        assert!(py_sum(&[-0.0], PySum::Plain).is_sign_positive());
    }

    #[test]
    fn rounding_floor_half_up() {
        assert_eq!(to_millibits(0.0004999), 0);
        assert_eq!(to_millibits(0.0005), 1);
        assert_eq!(to_millibits(-0.0), 0);
    }
}
