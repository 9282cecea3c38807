//! Shannon entropy of a response's token distribution, in integer millibits
//! (`gateway/audit/protocols.py` defines it; the Python twin is `gateway/audit/entropy.py`).
//!
//! Floating point is computed in the same order as the Python twin (left-to-right sums,
//! libm `exp`/`log2`) so both twins round to the same integer: `floor(H * 1000 + 0.5)`.
use serde_json::Value;
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
fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{0b}' | '\u{0c}')
}

/// Entropy in bits of the whitespace-token distribution of `text`
/// (distinct tokens in order of first appearance; no tokens -> 0).
pub fn text_entropy_bits(text: &str) -> f64 {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut counts: Vec<u64> = Vec::new();
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
    let mut s = 0.0f64;
    for &c in &counts {
        let p = c as f64 / nf;
        s += p * p.log2();
    }
    -s
}

pub fn text_entropy_millibits(text: &str) -> i64 {
    to_millibits(text_entropy_bits(text))
}

/// The per-position top_logprobs of `choices[0].logprobs.content`, when every entry
/// carries a non-empty list of numeric logprobs; otherwise None (the text branch runs).
fn top_logprobs(doc: &Value) -> Option<Vec<Vec<f64>>> {
    let content = doc.get("choices")?.get(0)?.get("logprobs")?.get("content")?.as_array()?;
    if content.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(content.len());
    for entry in content {
        let tops = entry.get("top_logprobs")?.as_array()?;
        if tops.is_empty() {
            return None;
        }
        let mut lps = Vec::with_capacity(tops.len());
        for t in tops {
            lps.push(t.get("logprob")?.as_f64()?);
        }
        out.push(lps);
    }
    Some(out)
}

/// Entropy in bits of one position: p_i = exp(lp_i) normalised over the position;
/// zero-probability terms contribute nothing.
fn position_entropy(lps: &[f64]) -> f64 {
    let es: Vec<f64> = lps.iter().map(|lp| lp.exp()).collect();
    let mut total = 0.0f64;
    for e in &es {
        total += e;
    }
    if total <= 0.0 || !total.is_finite() {
        return 0.0;
    }
    let mut s = 0.0f64;
    for e in &es {
        let p = e / total;
        if p > 0.0 {
            s += p * p.log2();
        }
    }
    -s
}

/// Entropy in bits of an OpenAI chat-completion JSON response.
pub fn entropy_bits(body: &[u8]) -> Result<f64, InvalidJson> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| InvalidJson(e.to_string()))?;
    if let Some(positions) = top_logprobs(&doc) {
        let mut s = 0.0f64;
        for lps in &positions {
            s += position_entropy(lps);
        }
        return Ok(s / positions.len() as f64);
    }
    let text = doc
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    Ok(text_entropy_bits(text))
}

pub fn entropy_millibits(body: &[u8]) -> Result<i64, InvalidJson> {
    entropy_bits(body).map(to_millibits)
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
        assert_eq!(entropy_millibits(b), Ok(2000));
        let half = (0.5f64).ln();
        let b = format!(
            r#"{{"choices":[{{"message":{{"content":"x x"}},"logprobs":{{"content":[
                {{"token":"a","logprob":{half},"top_logprobs":[{{"token":"a","logprob":{half}}},{{"token":"b","logprob":{half}}}]}},
                {{"token":"c","logprob":0,"top_logprobs":[{{"token":"c","logprob":0}}]}}]}}}}]}}"#
        );
        // positions: 1 bit and 0 bits -> mean 0.5 bits
        assert_eq!(entropy_millibits(b.as_bytes()), Ok(500));
        assert_eq!(entropy_millibits(b"{}"), Ok(0));
        assert_eq!(entropy_millibits(br#"{"choices":[]}"#), Ok(0));
        assert!(entropy_millibits(b"not json").is_err());
    }

    #[test]
    fn rounding_floor_half_up() {
        assert_eq!(to_millibits(0.0004999), 0);
        assert_eq!(to_millibits(0.0005), 1);
        assert_eq!(to_millibits(-0.0), 0);
    }
}
