//! Adapter: OpenAI chat request -> upstream request (OpenAI-compatible or Anthropic
//! Messages), and back, including streaming events. Bytes in, bytes out.
//!
//! The output bytes equal the Python twin's (`gateway/stages/adapter.py`, orjson): compact
//! separators, object key order preserved (a duplicate key keeps its first position and its
//! last value), non-ASCII as UTF-8, integers within i64/u64 kept exact (others become
//! floats), floats written as orjson writes them, nesting deeper than 1024 rejected.
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A JSON value that keeps object key order (without serde_json's global `preserve_order`).
/// Strings borrow from the input where they have no escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    Arr(Vec<Json<'a>>),
    Obj(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// orjson's nesting limits: 1024 levels parse, 1025 do not; 254 levels are written, 255 not.
const MAX_DEPTH: usize = 1024;
const MAX_WRITE_DEPTH: usize = 254;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct AdapterError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, AdapterError> {
    Err(AdapterError(msg.into()))
}

impl<'a> Json<'a> {
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Python's `d[key] = value`: replace in place, or append last.
    pub fn set(&mut self, key: &'a str, value: Json<'a>) {
        if let Json::Obj(kv) = self {
            match kv.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => kv.push((Cow::Borrowed(key), value)),
            }
        }
    }

    /// The same value owning all its strings.
    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::I64(n) => Json::I64(n),
            Json::U64(n) => Json::U64(n),
            Json::F64(f) => Json::F64(f),
            Json::Str(s) => Json::Str(Cow::Owned(s.into_owned())),
            Json::Arr(a) => Json::Arr(a.into_iter().map(Json::into_owned).collect()),
            Json::Obj(kv) => Json::Obj(
                kv.into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    fn str_eq(&self, s: &str) -> bool {
        self.as_str() == Some(s)
    }

    /// Python truthiness of the parsed value.
    fn truthy(&self) -> bool {
        match self {
            Json::Null => false,
            Json::Bool(b) => *b,
            Json::I64(n) => *n != 0,
            Json::U64(n) => *n != 0,
            Json::F64(f) => *f != 0.0,
            Json::Str(s) => !s.is_empty(),
            Json::Arr(a) => !a.is_empty(),
            Json::Obj(o) => !o.is_empty(),
        }
    }

    /// Compact JSON; `None` when containers nest deeper than orjson writes (`MAX_WRITE_DEPTH`).
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(128);
        self.write(&mut out, 0).then_some(out)
    }

    fn write(&self, out: &mut Vec<u8>, depth: usize) -> bool {
        if matches!(self, Json::Arr(_) | Json::Obj(_)) && depth >= MAX_WRITE_DEPTH {
            return false;
        }
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::I64(n) => {
                let _ = write!(out, "{n}");
            }
            Json::U64(n) => {
                let _ = write!(out, "{n}");
            }
            Json::F64(f) => out.extend_from_slice(format_float(*f).as_bytes()),
            Json::Str(s) => write_str(out, s),
            Json::Arr(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if !v.write(out, depth + 1) {
                        return false;
                    }
                }
                out.push(b']');
            }
            Json::Obj(kv) => {
                out.push(b'{');
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, k);
                    out.push(b':');
                    if !v.write(out, depth + 1) {
                        return false;
                    }
                }
                out.push(b'}');
            }
        }
        true
    }
}

use std::io::Write as _;

/// Decimal digits of `u` at the end of `buf`; the slice written.
fn digits(u: u64, buf: &mut [u8; 20]) -> &[u8] {
    let (mut u, mut at) = (u, buf.len());
    loop {
        at -= 1;
        buf[at] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            return &buf[at..];
        }
    }
}

/// Whether `raw[*pos..]` starts with `s`; if so `pos` moves past it.
fn eat(raw: &[u8], pos: &mut usize, s: &[u8]) -> bool {
    let ok = raw.get(*pos..*pos + s.len()) == Some(s);
    if ok {
        *pos += s.len();
    }
    ok
}

/// Whether `write_str(s)` gives the bytes of `raw` at `pos` (moved past them if so).
fn str_writes_at(s: &str, raw: &[u8], pos: &mut usize) -> bool {
    // A string `parse` borrowed from `raw` (`Cow::Borrowed`; an owned one is never in `raw`)
    // sits between its quotes in `raw` as it is: serde_json borrows only a string without
    // escape sequences, and refuses raw control characters, so it holds nothing `write_str`
    // escapes. Its place proves its bytes.
    let start = *pos + 1;
    let end = start + s.len();
    if raw.get(*pos) == Some(&b'"')
        && raw.get(end) == Some(&b'"')
        && std::ptr::eq(raw.as_ptr().wrapping_add(start), s.as_ptr())
    {
        *pos = end + 1;
        return true;
    }
    let mut out = Vec::with_capacity(s.len() + 2);
    write_str(&mut out, s);
    eat(raw, pos, &out)
}

impl Json<'_> {
    /// Whether `to_bytes` would give exactly `raw`, the bytes `parse` read this value from;
    /// `false` also where `to_bytes` gives nothing (nested too deeply to write). Checked without
    /// writing: a string borrowed from `raw` by its place, every other token by its bytes.
    /// A value not read from `raw` is compared byte for byte (correct, only slower).
    pub fn writes_as(&self, raw: &[u8]) -> bool {
        let mut pos = 0;
        self.writes_at(raw, &mut pos, 0) && pos == raw.len()
    }

    fn writes_at(&self, raw: &[u8], pos: &mut usize, depth: usize) -> bool {
        if matches!(self, Json::Arr(_) | Json::Obj(_)) && depth >= MAX_WRITE_DEPTH {
            return false;
        }
        let mut buf = [0u8; 20];
        match self {
            Json::Null => eat(raw, pos, b"null"),
            Json::Bool(true) => eat(raw, pos, b"true"),
            Json::Bool(false) => eat(raw, pos, b"false"),
            Json::I64(n) => {
                (*n >= 0 || eat(raw, pos, b"-"))
                    && eat(raw, pos, digits(n.unsigned_abs(), &mut buf))
            }
            Json::U64(n) => eat(raw, pos, digits(*n, &mut buf)),
            Json::F64(f) => eat(raw, pos, format_float(*f).as_bytes()),
            Json::Str(s) => str_writes_at(s, raw, pos),
            Json::Arr(a) => {
                if !eat(raw, pos, b"[") {
                    return false;
                }
                for (i, v) in a.iter().enumerate() {
                    if (i > 0 && !eat(raw, pos, b",")) || !v.writes_at(raw, pos, depth + 1) {
                        return false;
                    }
                }
                eat(raw, pos, b"]")
            }
            Json::Obj(kv) => {
                if !eat(raw, pos, b"{") {
                    return false;
                }
                for (i, (k, v)) in kv.iter().enumerate() {
                    if (i > 0 && !eat(raw, pos, b","))
                        || !str_writes_at(k, raw, pos)
                        || !eat(raw, pos, b":")
                        || !v.writes_at(raw, pos, depth + 1)
                    {
                        return false;
                    }
                }
                eat(raw, pos, b"}")
            }
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as orjson does: \" \\ \b \f \n \r \t, other controls as \u00xx.
    if serde_json::to_writer(&mut *out, s).is_err() {
        unreachable!("writing a str to a Vec cannot fail");
    }
}

/// A finite float as orjson writes it: the shortest round-trip digits; plain decimal
/// notation for decimal exponents -5..=15 (always with a fraction, `100.0`), otherwise
/// `d.ddde+NN` / `d.ddde-N`.
pub fn format_float(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let sci = format!("{:e}", f); // shortest digits, e.g. "-1.2345e16", "5e-324"
    let (neg, sci) = match sci.strip_prefix('-') {
        Some(s) => (true, s),
        None => (false, sci.as_str()),
    };
    let (mant, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if (-5..16).contains(&exp) {
        if exp >= 0 {
            let k = exp as usize + 1;
            if digits.len() <= k {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', k - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..k]);
                out.push('.');
                out.push_str(&digits[k..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp > 0 { '+' } else { '-' });
        out.push_str(&exp.unsigned_abs().to_string());
    }
    out
}

struct Seed(usize);

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Json<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Json<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(if v <= i64::MAX as u64 {
            Json::I64(v as i64)
        } else {
            Json::U64(v)
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        if v.is_finite() {
            Ok(Json::F64(v))
        } else {
            Err(E::custom("number is infinity when parsed as double"))
        }
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Json<'de>, A::Error> {
        if self.0 >= MAX_DEPTH {
            return Err(de::Error::custom("depth limit exceeded"));
        }
        let mut v = Vec::with_capacity(a.size_hint().unwrap_or(4));
        while let Some(x) = a.next_element_seed(Seed(self.0 + 1))? {
            v.push(x);
        }
        Ok(Json::Arr(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Json<'de>, A::Error> {
        if self.0 >= MAX_DEPTH {
            return Err(de::Error::custom("depth limit exceeded"));
        }
        let mut kv: Vec<(Cow<'de, str>, Json<'de>)> = Vec::with_capacity(8);
        while let Some(k) = a.next_key_seed(KeySeed)? {
            let v = a.next_value_seed(Seed(self.0 + 1))?;
            match kv.iter_mut().find(|(k2, _)| *k2 == k) {
                Some(slot) => slot.1 = v,
                None => kv.push((k, v)),
            }
        }
        Ok(Json::Obj(kv))
    }
}

/// serde_json reads the integer `-0` as the float -0.0; orjson (Python) as the int 0. Blank
/// the sign of every `-0` integer token (outside strings) so both read 0; positions stay.
fn negative_zero_as_int(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // memchr finds the few '-' (vectorised); a byte-pair window over every byte cost about
    // 13 instructions a byte, on every body parsed
    if !memchr::memchr_iter(b'-', data).any(|i| data.get(i + 1) == Some(&b'0')) {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut out = data.to_vec();
    let (mut in_str, mut esc) = (false, false);
    for i in 0..data.len() {
        let c = data[i];
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'-'
            && data.get(i + 1) == Some(&b'0')
            && !matches!(data.get(i + 2), Some(b'.' | b'e' | b'E' | b'0'..=b'9'))
        {
            out[i] = b' ';
        }
    }
    std::borrow::Cow::Owned(out)
}

fn parse_exact(data: &[u8]) -> Result<Json<'_>, String> {
    let mut de = serde_json::Deserializer::from_slice(data);
    de.disable_recursion_limit();
    let v = Seed(0).deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

/// Parse JSON bytes as orjson does (see the module doc).
pub fn parse(data: &[u8]) -> Result<Json<'_>, String> {
    match negative_zero_as_int(data) {
        Cow::Borrowed(d) => parse_exact(d),
        Cow::Owned(d) => parse_exact(&d).map(Json::into_owned),
    }
}

fn load_obj<'a>(data: &'a [u8], what: &str) -> Result<Json<'a>, AdapterError> {
    match parse(data) {
        Ok(v @ Json::Obj(_)) => Ok(v),
        Ok(_) => err(format!("{what}: expected a JSON object")),
        Err(e) => err(format!("{what}: invalid JSON: {e}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "openai" => Some(Kind::OpenAi),
            "anthropic" => Some(Kind::Anthropic),
            _ => None,
        }
    }
}

/// FINISH: end_turn|stop_sequence -> "stop", max_tokens -> "length", tool_use ->
/// "tool_calls", null/absent -> null, any other scalar -> "stop". Arrays and objects are
/// rejected (Python cannot look them up in its table either).
fn finish(reason: Option<&Json<'_>>) -> Result<Json<'static>, AdapterError> {
    Ok(match reason {
        None | Some(Json::Null) => Json::Null,
        Some(Json::Arr(_)) | Some(Json::Obj(_)) => {
            return err("adapter: stop_reason must be a string")
        }
        Some(r) => Json::Str(
            match r.as_str() {
                Some("max_tokens") => "length",
                Some("tool_use") => "tool_calls",
                _ => "stop",
            }
            .into(),
        ),
    })
}

fn dump(v: Json<'_>) -> Result<Vec<u8>, AdapterError> {
    match v.to_bytes() {
        Some(b) => Ok(b),
        None => err("adapter: JSON nested too deeply to write (orjson: recursion limit reached)"),
    }
}

fn chunk(public_model: &str, delta: Json<'_>, finish: Json<'_>) -> Vec<u8> {
    Json::Obj(vec![
        ("id".into(), Json::Str("chatcmpl-anthropic".into())),
        ("object".into(), Json::Str("chat.completion.chunk".into())),
        ("created".into(), Json::I64(0)),
        ("model".into(), Json::Str(public_model.into())),
        (
            "choices".into(),
            Json::Arr(vec![Json::Obj(vec![
                ("index".into(), Json::I64(0)),
                ("delta".into(), delta),
                ("finish_reason".into(), finish),
            ])]),
        ),
    ])
    .to_bytes()
    .unwrap_or_default() // fixed shape, three levels deep
}

pub struct Adapter {
    pub kind: Kind,
}

impl Adapter {
    pub fn new(kind: Kind) -> Self {
        Self { kind }
    }

    /// The upstream request for an OpenAI chat request `body`: `body` itself where the
    /// adapter would write the same bytes (see `to_upstream_doc`).
    pub fn to_upstream<'a>(
        &self,
        body: &'a [u8],
        upstream_model: &'a str,
    ) -> Result<Cow<'a, [u8]>, AdapterError> {
        self.to_upstream_doc(load_obj(body, "adapter")?, body, upstream_model)
    }

    /// `to_upstream` of a request body the caller has parsed already (`doc`, read from `raw`
    /// by `parse`: the pipeline's parse stage), so it is not parsed twice. An OpenAI upstream
    /// whose model is the one the request names gets `raw` itself when writing the document
    /// back would give the same bytes (compact, no duplicate key, numbers and escapes as the
    /// writer writes them): the bytes every rung sends are the same either way.
    pub fn to_upstream_doc<'a>(
        &self,
        doc: Json<'a>,
        raw: &'a [u8],
        upstream_model: &'a str,
    ) -> Result<Cow<'a, [u8]>, AdapterError> {
        if !matches!(doc, Json::Obj(_)) {
            return err("adapter: expected a JSON object");
        }
        match self.kind {
            Kind::OpenAi => swap_doc(doc, raw, upstream_model),
            Kind::Anthropic => anthropic_request(doc, upstream_model).map(Cow::Owned),
        }
    }

    /// The client's answer for an upstream answer `body`: `body` itself where the adapter
    /// would write the same bytes (an OpenAI answer already naming the public model, written
    /// as the writer writes it).
    pub fn from_upstream<'a>(
        &self,
        body: &'a [u8],
        public_model: &'a str,
    ) -> Result<Cow<'a, [u8]>, AdapterError> {
        self.from_upstream_read(body, public_model, |_| {})
    }

    /// `from_upstream`, showing `read` the document it parsed from an OpenAI upstream's
    /// `body` before writing the answer (which is `body` itself, or that document with its
    /// `model` set, written: bytes that parse to the same document but for `model`). An
    /// Anthropic answer is written from another document: `read` is not called.
    pub fn from_upstream_read<'a>(
        &self,
        body: &'a [u8],
        public_model: &'a str,
        read: impl FnOnce(&Json<'a>),
    ) -> Result<Cow<'a, [u8]>, AdapterError> {
        match self.kind {
            Kind::OpenAi => {
                let doc = load_obj(body, "adapter")?;
                read(&doc);
                swap_doc(doc, body, public_model)
            }
            Kind::Anthropic => anthropic_response(body, public_model).map(Cow::Owned),
        }
    }

    pub fn stream_event(
        &self,
        event: &[u8],
        public_model: &str,
    ) -> Result<Vec<Vec<u8>>, AdapterError> {
        match self.kind {
            Kind::OpenAi => openai_event(event, public_model),
            Kind::Anthropic => anthropic_event(event, public_model),
        }
    }
}

/// `obj` (an object `parse` read from `raw`) with its `model` set to `model`, written; `raw`
/// itself when that changes nothing.
fn swap_doc<'a>(
    mut obj: Json<'a>,
    raw: &'a [u8],
    model: &'a str,
) -> Result<Cow<'a, [u8]>, AdapterError> {
    if obj.get("model").is_some_and(|m| m.str_eq(model)) && obj.writes_as(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    obj.set("model", Json::Str(model.into()));
    dump(obj).map(Cow::Owned)
}

fn strip_ascii(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    &b[start..end]
}

fn openai_event<'a>(event: &'a [u8], public_model: &'a str) -> Result<Vec<Vec<u8>>, AdapterError> {
    if strip_ascii(event) == b"[DONE]" {
        return Ok(vec![]);
    }
    let mut obj = load_obj(event, "adapter stream event")?;
    match obj.get("model") {
        None if obj.writes_as(event) => return Ok(vec![event.to_vec()]),
        Some(m) if m.str_eq(public_model) && obj.writes_as(event) => {
            return Ok(vec![event.to_vec()])
        }
        None => {}
        Some(_) => obj.set("model", Json::Str(public_model.into())),
    }
    Ok(vec![dump(obj)?])
}

fn anthropic_request<'a>(req: Json<'a>, upstream_model: &'a str) -> Result<Vec<u8>, AdapterError> {
    let Some(Json::Arr(msgs)) = req.get("messages") else {
        return err("adapter: 'messages' must be a list");
    };
    let mut system: Vec<&str> = Vec::new();
    let mut messages = Vec::with_capacity(msgs.len());
    for m in msgs {
        let (Some(role), Some(content)) = (m.get("role"), m.get("content")) else {
            return err("adapter: each message needs 'role' and 'content'");
        };
        if role.str_eq("system") {
            match content.as_str() {
                Some(s) => system.push(s),
                None => return err("adapter: a system message's content must be a string"),
            }
        } else {
            messages.push(Json::Obj(vec![
                ("role".into(), role.clone()),
                ("content".into(), content.clone()),
            ]));
        }
    }
    let max_tokens = match req.get("max_tokens") {
        None | Some(Json::Null) => Json::I64(1024),
        Some(v) => v.clone(),
    };
    let mut out: Vec<(Cow<'a, str>, Json<'a>)> = vec![
        ("model".into(), Json::Str(upstream_model.into())),
        ("max_tokens".into(), max_tokens),
    ];
    if !system.is_empty() {
        out.push(("system".into(), Json::Str(system.join("\n").into())));
    }
    out.push(("messages".into(), Json::Arr(messages)));
    for k in ["temperature", "top_p"] {
        if let Some(v) = req.get(k).filter(|v| !v.is_null()) {
            out.push((k.into(), v.clone()));
        }
    }
    if let Some(stop) = req.get("stop").filter(|v| !v.is_null()) {
        let s = match stop {
            Json::Str(_) => Json::Arr(vec![stop.clone()]),
            _ => stop.clone(),
        };
        out.push(("stop_sequences".into(), s));
    }
    if let Some(Json::Bool(true)) = req.get("stream") {
        out.push(("stream".into(), Json::Bool(true)));
    }
    dump(Json::Obj(out))
}

fn anthropic_response<'a>(body: &'a [u8], public_model: &'a str) -> Result<Vec<u8>, AdapterError> {
    const WHAT: &str = "adapter upstream response";
    let r = load_obj(body, WHAT)?;
    let bad = |f: &str| err(format!("{WHAT}: missing or bad field {f:?}"));
    // Python iterates `r["content"]`: a list's items, a string's characters, an object's keys.
    let mut text = String::new();
    match r.get("content") {
        None => return bad("content"),
        Some(Json::Arr(blocks)) => {
            for b in blocks {
                let Json::Obj(_) = b else { return bad("type") };
                let Some(t) = b.get("type") else {
                    return bad("type");
                };
                if t.str_eq("text") {
                    match b.get("text") {
                        Some(Json::Str(s)) => text.push_str(s),
                        _ => return bad("text"),
                    }
                }
            }
        }
        Some(Json::Str(s)) if s.is_empty() => {}
        Some(Json::Obj(o)) if o.is_empty() => {}
        Some(_) => return bad("content"),
    }
    let Some(rid) = r.get("id") else {
        return bad("id");
    };
    let (i, o) = match r.get("usage") {
        Some(u) if u.truthy() => {
            let Json::Obj(_) = u else {
                return err(format!("{WHAT}: usage must be an object"));
            };
            (
                u.get("input_tokens").cloned().unwrap_or(Json::I64(0)),
                u.get("output_tokens").cloned().unwrap_or(Json::I64(0)),
            )
        }
        _ => (Json::I64(0), Json::I64(0)),
    };
    let as_int = |j: &Json<'_>| match j {
        Json::I64(n) => Some(*n as i128),
        Json::U64(n) => Some(*n as i128),
        _ => None,
    };
    let (Some(ii), Some(oi)) = (as_int(&i), as_int(&o)) else {
        return err(format!("{WHAT}: usage token counts must be integers"));
    };
    let total = ii + oi;
    let total = if let Ok(t) = i64::try_from(total) {
        Json::I64(t)
    } else if let Ok(t) = u64::try_from(total) {
        Json::U64(t)
    } else {
        return err(format!("{WHAT}: usage total exceeds 64 bits"));
    };
    let fin = finish(r.get("stop_reason"))?;
    dump(Json::Obj(vec![
        ("id".into(), rid.clone()),
        ("object".into(), Json::Str("chat.completion".into())),
        ("created".into(), Json::I64(0)),
        ("model".into(), Json::Str(public_model.into())),
        (
            "choices".into(),
            Json::Arr(vec![Json::Obj(vec![
                ("index".into(), Json::I64(0)),
                (
                    "message".into(),
                    Json::Obj(vec![
                        ("role".into(), Json::Str("assistant".into())),
                        ("content".into(), Json::Str(text.into())),
                    ]),
                ),
                ("finish_reason".into(), fin),
            ])]),
        ),
        (
            "usage".into(),
            Json::Obj(vec![
                ("prompt_tokens".into(), i),
                ("completion_tokens".into(), o),
                ("total_tokens".into(), total),
            ]),
        ),
    ]))
}

/// Python's `str()` of a parsed JSON value, for the stream error message.
fn py_str(v: Option<&Json<'_>>) -> String {
    match v {
        None | Some(Json::Null) => "None".into(),
        Some(Json::Str(s)) => s.to_string(),
        Some(Json::Bool(true)) => "True".into(),
        Some(Json::Bool(false)) => "False".into(),
        Some(j) => String::from_utf8_lossy(&j.to_bytes().unwrap_or_default()).into_owned(),
    }
}

fn anthropic_event<'a>(
    event: &'a [u8],
    public_model: &'a str,
) -> Result<Vec<Vec<u8>>, AdapterError> {
    let ev = load_obj(event, "adapter stream event")?;
    let t = ev.get("type").and_then(Json::as_str);
    match t {
        Some("content_block_delta") => match ev.get("delta") {
            Some(d @ Json::Obj(_)) if d.get("type").is_some_and(|t| t.str_eq("text_delta")) => {
                match d.get("text") {
                    Some(Json::Str(s)) => Ok(vec![chunk(
                        public_model,
                        Json::Obj(vec![("content".into(), Json::Str(s.clone()))]),
                        Json::Null,
                    )]),
                    _ => err("adapter stream event: text_delta without text"),
                }
            }
            _ => Ok(vec![]),
        },
        Some("message_start") => Ok(vec![chunk(
            public_model,
            Json::Obj(vec![
                ("role".into(), Json::Str("assistant".into())),
                ("content".into(), Json::Str("".into())),
            ]),
            Json::Null,
        )]),
        Some("message_delta") => match ev.get("delta") {
            Some(d @ Json::Obj(_)) => match d.get("stop_reason") {
                Some(sr) if !sr.is_null() => Ok(vec![chunk(
                    public_model,
                    Json::Obj(vec![]),
                    finish(Some(sr))?,
                )]),
                _ => Ok(vec![]),
            },
            _ => Ok(vec![]),
        },
        Some("error") => {
            let msg = match ev.get("error") {
                Some(e @ Json::Obj(_)) => py_str(e.get("message")),
                _ => "None".into(),
            };
            err(format!("upstream stream error: {msg}"))
        }
        _ => Ok(vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn floats_as_orjson() {
        for (f, want) in [
            (1e20, "1e+20"),
            (1.5e-7, "1.5e-7"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e-5, "0.00001"),
            (1e-6, "1e-6"),
            (1.2345e16, "1.2345e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (-0.0, "-0.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.0001234, "0.0001234"),
            (123456789.0, "123456789.0"),
            (-2.5, "-2.5"),
        ] {
            assert_eq!(format_float(f), want, "{f:e}");
        }
    }

    #[test]
    fn parse_keeps_order_and_duplicates_like_python() {
        let v = parse(
            br#"{"b":1,"a":[true,null,-0,1.0,18446744073709551615,18446744073709551616],"b":3}"#,
        )
        .unwrap();
        assert_eq!(
            s(&v.to_bytes().unwrap()),
            r#"{"b":3,"a":[true,null,0,1.0,18446744073709551615,1.8446744073709552e+19]}"#
        );
        assert!(parse(b"{} x").is_err());
        assert_eq!(
            s(&parse(br#"[-0.0,-0e1,"-0",-0]"#)
                .unwrap()
                .to_bytes()
                .unwrap()),
            r#"[-0.0,-0.0,"-0",0]"#
        );
        assert!(parse(b"-01").is_err());
        assert_eq!(parse(b"-0").unwrap(), Json::I64(0));
        assert_eq!(
            parse(b"[1,-0]").unwrap(),
            Json::Arr(vec![Json::I64(1), Json::I64(0)])
        );
        assert_eq!(
            parse(b"[-1,-2.5]").unwrap().to_bytes().unwrap(),
            b"[-1,-2.5]"
        );
        assert!(parse(b"1e400").is_err());
        let deep = |n: usize| [vec![b'['; n], vec![b']'; n]].concat();
        assert!(parse(&deep(1024)).is_ok());
        assert!(parse(&deep(254)).unwrap().to_bytes().is_some());
        assert!(parse(&deep(255)).unwrap().to_bytes().is_none());
        assert!(parse(&deep(1025)).is_err());
        assert_eq!(
            s(&parse("\"\n\u{7f}é\"".replace('\n', "\\n").as_bytes())
                .unwrap()
                .to_bytes()
                .unwrap()),
            "\"\\n\u{7f}é\""
        );
    }

    /// Random JSON texts: compact or spaced, strings with and without escapes, duplicate
    /// keys, numbers in every spelling.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
        fn pick<'s>(&mut self, xs: &[&'s str]) -> &'s str {
            xs[self.next(xs.len())]
        }
        fn ws(&mut self, out: &mut String) {
            if self.next(8) == 0 {
                out.push_str(self.pick(&[" ", "\n", "\t", "  "]));
            }
        }
        fn string(&mut self, out: &mut String) {
            out.push('"');
            for _ in 0..self.next(4) {
                out.push_str(self.pick(&[
                    "a",
                    "model",
                    "é",
                    "\\n",
                    "\\u00e9",
                    "\\\"",
                    "\\/",
                    "\\u0041",
                    " ",
                    "\u{7f}",
                    "\\ud83d\\ude00",
                    "😀",
                    "\\\\",
                    "-0",
                ]));
            }
            out.push('"');
        }
        fn value(&mut self, out: &mut String, depth: usize) {
            self.ws(out);
            match self.next(if depth > 3 { 4 } else { 6 }) {
                0 => out.push_str(self.pick(&["null", "true", "false"])),
                1 => out.push_str(self.pick(&[
                    "0",
                    "-0",
                    "1",
                    "-1",
                    "10",
                    "1.0",
                    "1e2",
                    "0.1",
                    "-0.0",
                    "100.0",
                    "1.5E-7",
                    "1.5e-7",
                    "9223372036854775807",
                    "-9223372036854775808",
                    "18446744073709551615",
                    "18446744073709551616",
                    "0.30000000000000004",
                ])),
                2 | 3 => self.string(out),
                4 => {
                    out.push('[');
                    for i in 0..self.next(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        self.value(out, depth + 1);
                    }
                    self.ws(out);
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    for i in 0..self.next(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        self.ws(out);
                        out.push_str(self.pick(&["\"model\"", "\"a\"", "\"b\"", "\"\\u0061\""]));
                        self.ws(out);
                        out.push(':');
                        self.value(out, depth + 1);
                    }
                    self.ws(out);
                    out.push('}');
                }
            }
            self.ws(out);
        }
    }

    #[test]
    fn writes_as_says_what_writing_would_give() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let (mut same, mut differ) = (0, 0);
        for _ in 0..20_000 {
            let mut text = String::new();
            g.value(&mut text, 0);
            let Ok(v) = parse(text.as_bytes()) else {
                continue;
            };
            let written = v.to_bytes();
            let want = written.as_deref() == Some(text.as_bytes());
            assert_eq!(v.writes_as(text.as_bytes()), want, "{text}");
            if want {
                same += 1;
            } else {
                differ += 1;
            }
            // a value compared with bytes it was not read from: byte for byte
            if let Some(w) = &written {
                assert!(v.writes_as(w), "{text}");
            }
        }
        assert!(same > 1000 && differ > 1000, "{same} {differ}");
        let deep = |n: usize| [vec![b'['; n], vec![b']'; n]].concat();
        assert!(parse(&deep(254)).unwrap().writes_as(&deep(254)));
        assert!(!parse(&deep(255)).unwrap().writes_as(&deep(255)));
    }

    #[test]
    fn borrowed_strings_need_no_escape() {
        // what `writes_as` stands on: serde_json refuses raw control characters in strings,
        // and borrows only strings without escape sequences
        for c in 0u8..0x20 {
            assert!(parse(&[b'"', c, b'"']).is_err(), "{c:#x}");
        }
        assert!(matches!(parse(br#""a\nb""#), Ok(Json::Str(Cow::Owned(_)))));
        assert!(matches!(
            parse(br#""a/b""#),
            Ok(Json::Str(Cow::Borrowed(_)))
        ));
    }

    #[test]
    fn unchanged_bytes_pass_through() {
        let a = Adapter::new(Kind::OpenAi);
        let compact = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let out = a.to_upstream(compact, "m").unwrap();
        assert!(matches!(out, Cow::Borrowed(b) if std::ptr::eq(b, &compact[..])));
        for (body, model) in [
            (&br#"{"model": "m","messages":[]}"#[..], "m"), // spaced
            (br#"{"model":"m","messages":[]}"#, "up"),      // another model
            (br#"{"model":"x","model":"m"}"#, "m"),         // a duplicate key
            (br#"{"model":"m","n":-0}"#, "m"),              // -0 is written 0
            (br#"{"model":"m","t":1E2}"#, "m"),             // 100.0
        ] {
            let out = a.to_upstream(body, model).unwrap();
            assert!(matches!(out, Cow::Owned(_)), "{}", s(body));
            assert_ne!(&*out, body);
        }
        let resp = br#"{"id":"c","model":"pub","choices":[{"message":{"content":"a\nb"}}]}"#;
        assert!(matches!(
            a.from_upstream(resp, "pub").unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            s(&a.from_upstream(resp, "other").unwrap()),
            r#"{"id":"c","model":"other","choices":[{"message":{"content":"a\nb"}}]}"#
        );
        let ev = br#"{"id":"c","choices":[]}"#;
        assert_eq!(a.stream_event(ev, "pub").unwrap(), vec![ev.to_vec()]);
    }

    #[test]
    fn openai_swaps_the_model() {
        let a = Adapter::new(Kind::OpenAi);
        assert_eq!(
            s(&a.to_upstream(br#"{"model":"x","messages":[]}"#, "up")
                .unwrap()),
            r#"{"model":"up","messages":[]}"#
        );
        assert_eq!(
            s(&a.to_upstream(br#"{"messages":[]}"#, "up").unwrap()),
            r#"{"messages":[],"model":"up"}"#
        );
        assert!(a.stream_event(b" [DONE]\n", "m").unwrap().is_empty());
        assert_eq!(
            s(&a.stream_event(br#"{"id":"c","model":"u"}"#, "m").unwrap()[0]),
            r#"{"id":"c","model":"m"}"#
        );
        assert!(a.to_upstream(b"[]", "m").is_err());
    }

    #[test]
    fn anthropic_request_and_response() {
        let a = Adapter::new(Kind::Anthropic);
        let req = br#"{"model":"pub","messages":[{"role":"system","content":"be nice"},{"role":"user","content":"hi"}],"stop":"END","temperature":0.5,"stream":true}"#;
        assert_eq!(
            s(&a.to_upstream(req, "claude").unwrap()),
            r#"{"model":"claude","max_tokens":1024,"system":"be nice","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"stop_sequences":["END"],"stream":true}"#
        );
        let resp = br#"{"id":"msg_1","content":[{"type":"text","text":"Hel"},{"type":"tool_use"},{"type":"text","text":"lo"}],"stop_reason":"max_tokens","usage":{"input_tokens":3,"output_tokens":2}}"#;
        assert_eq!(
            s(&a.from_upstream(resp, "pub").unwrap()),
            r#"{"id":"msg_1","object":"chat.completion","created":0,"model":"pub","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#
        );
        assert!(a.from_upstream(br#"{"content":[]}"#, "m").is_err());
        assert!(a
            .to_upstream(br#"{"messages":[{"role":"system","content":[]}]}"#, "m")
            .is_err());
    }

    #[test]
    fn anthropic_stream_events() {
        let a = Adapter::new(Kind::Anthropic);
        let ev = |b: &[u8]| {
            a.stream_event(b, "pub")
                .unwrap()
                .iter()
                .map(|c| s(c).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ev(br#"{"type":"ping"}"#), Vec::<String>::new());
        assert_eq!(
            ev(br#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}}"#),
            vec![
                r#"{"id":"chatcmpl-anthropic","object":"chat.completion.chunk","created":0,"model":"pub","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#
            ]
        );
        assert_eq!(
            ev(br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#),
            vec![
                r#"{"id":"chatcmpl-anthropic","object":"chat.completion.chunk","created":0,"model":"pub","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#
            ]
        );
        let e = a
            .stream_event(
                br#"{"type":"error","error":{"message":"overloaded"}}"#,
                "pub",
            )
            .unwrap_err();
        assert_eq!(e.0, "upstream stream error: overloaded");
    }
}
