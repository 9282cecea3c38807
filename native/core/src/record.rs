//! The canonical audit-record serializer: byte-identical to Python's
//! `json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()`
//! for flat records whose keys are strings and whose values are integers or strings.

/// A record value: the format allows integers (i64) and strings only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Str(&'a str),
}

/// Encode a flat record canonically. Keys are sorted by code point (UTF-8 byte order is
/// code point order, as Python sorts `str`); duplicate keys are the caller's concern
/// (a Python dict has none).
pub fn encode_record(entries: &mut [(&str, Value<'_>)]) -> Vec<u8> {
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let cap = entries
        .iter()
        .map(|(k, v)| {
            k.len()
                + 4
                + match v {
                    Value::Int(_) => 20,
                    Value::Str(s) => s.len() + 2,
                }
        })
        .sum::<usize>()
        + 2;
    let mut out = Vec::with_capacity(cap);
    out.push(b'{');
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(&mut out, k);
        out.push(b':');
        match v {
            Value::Int(n) => write_int(&mut out, *n),
            Value::Str(s) => write_json_string(&mut out, s),
        }
    }
    out.push(b'}');
    out
}

/// `str(n)` in decimal, written in place (no String per integer).
fn write_int(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut u = n.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[at..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u_escape(out: &mut Vec<u8>, u: u32) {
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((u >> shift) & 15) as usize]);
    }
}

/// A JSON string exactly as CPython's `ensure_ascii` encoder writes it: printable ASCII
/// as is, the short escapes `\" \\ \b \f \n \r \t`, everything else `\uXXXX` in lowercase
/// hex (UTF-16 surrogate pairs above U+FFFF). Runs of printable ASCII are copied whole.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        i = plain_run_end(b, i);
        if i == b.len() {
            break;
        }
        out.extend_from_slice(&b[start..i]);
        // `i` is a char boundary: only whole chars are stepped over, and a printable ASCII
        // byte is never inside a multi-byte one
        let ch = s[i..].chars().next().unwrap_or_default();
        write_escaped(out, ch);
        i += ch.len_utf8();
        start = i;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// A byte `ensure_ascii` writes as it is: printable ASCII but `"` and `\\`.
#[inline]
fn is_plain(c: u8) -> bool {
    (b' '..=b'~').contains(&c) && c != b'"' && c != b'\\'
}

/// Whether all eight bytes of `w` are plain. Each test is the classic any-byte-in-a-word
/// check, exact as a yes/no answer: a byte below 0x20, a byte above 0x7e, a `"`, a `\\`.
#[inline]
fn word_is_plain(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let above_tilde = w.wrapping_add(ONES) | w;
    let quote = w ^ (ONES * b'"' as u64);
    let backslash = w ^ (ONES * b'\\' as u64);
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v;
    (below_space | above_tilde | zero_in(quote) | zero_in(backslash)) & HIGH == 0
}

/// The end of the run of plain bytes in `b` from `i`: eight bytes a step while whole words
/// are plain (the record's hashes, ids and keys are), the last few as one word padded with
/// a plain byte, and byte by byte only in a word that holds something to escape.
#[inline]
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("eight bytes"));
    while let Some(w) = b.get(i..i + 8) {
        if !word_is_plain(word(w)) {
            break;
        }
        i += 8;
    }
    let rest = &b[i..];
    if rest.len() < 8 {
        let mut padded = [b' '; 8];
        for (p, c) in padded.iter_mut().zip(rest) {
            *p = *c;
        }
        if word_is_plain(word(&padded)) {
            return b.len();
        }
    }
    while i < b.len() && is_plain(b[i]) {
        i += 1;
    }
    i
}

/// One char that is not printable ASCII, or is `"` or `\`, as `ensure_ascii` writes it.
fn write_escaped(out: &mut Vec<u8>, c: char) {
    let u = c as u32;
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{08}' => out.extend_from_slice(b"\\b"),
        '\u{0c}' => out.extend_from_slice(b"\\f"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        _ if u >= 0x10000 => {
            let v = u - 0x10000;
            push_u_escape(out, 0xd800 | (v >> 10));
            push_u_escape(out, 0xdc00 | (v & 0x3ff));
        }
        _ => push_u_escape(out, u),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(mut e: Vec<(&str, Value)>) -> String {
        String::from_utf8(encode_record(&mut e)).unwrap()
    }

    #[test]
    fn sorted_compact() {
        assert_eq!(enc(vec![]), "{}");
        assert_eq!(
            enc(vec![
                ("b", Value::Int(-3)),
                ("a", Value::Str("x")),
                ("B", Value::Int(i64::MIN))
            ]),
            r#"{"B":-9223372036854775808,"a":"x","b":-3}"#
        );
    }

    #[test]
    fn escapes_like_python() {
        // json.dumps({"k": "q\"\\\b\f\n\r\t\x00\x7f é€😀~ "}, ensure_ascii=True)
        assert_eq!(
            enc(vec![(
                "k",
                Value::Str("q\"\\\u{8}\u{c}\n\r\t\u{0}\u{7f} é€😀~ ")
            )]),
            r#"{"k":"q\"\\\b\f\n\r\t\u0000\u007f \u00e9\u20ac\ud83d\ude00~ "}"#
        );
    }

    /// The writer as it was, one char at a time: the run-copying one must match it.
    fn write_json_string_by_char(out: &mut Vec<u8>, s: &str) {
        out.push(b'"');
        for c in s.chars() {
            match c {
                ' '..='~' if c != '"' && c != '\\' => out.push(c as u8),
                _ => write_escaped(out, c),
            }
        }
        out.push(b'"');
    }

    #[test]
    fn run_copying_writer_matches_the_char_writer() {
        let mut all: Vec<char> = (0u32..0x3000).filter_map(char::from_u32).collect();
        all.extend(['\u{ffff}', '\u{10000}', '😀', '\u{10ffff}']);
        let samples: Vec<String> = vec![
            String::new(),
            all.iter().collect(),
            "plain ascii run".into(),
            "a\"b\\c\u{7f}d\u{0}e\té😀f".into(),
            "😀".into(),
            "\"".into(),
            "tail\u{1}".into(),
        ];
        let mut chunks: Vec<String> = all.chunks(7).map(|c| c.iter().collect()).collect();
        chunks.extend(samples);
        for s in &chunks {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            write_json_string(&mut a, s);
            write_json_string_by_char(&mut b, s);
            assert_eq!(a, b, "{s:?}");
        }
        for n in [0, 7, -7, 10, -10, 1234567890, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_int(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn the_word_scan_finds_every_byte_to_escape_at_every_offset() {
        // one special char at each place of runs longer than a word, between plain bytes
        // on both sides of every test in `word_is_plain` (0x1f/0x20, 0x7e/0x7f, '"', '\\')
        let specials = [
            '"', '\\', '\u{0}', '\u{1f}', '\u{7f}', 'é', '😀', '!', '#', '[', ']',
        ];
        let plain = [' ', '~', '!', '#', '[', ']', 'a'];
        for len in 0..=26 {
            for at in 0..=len {
                for (k, sp) in specials.iter().enumerate() {
                    let p = plain[(len + at + k) % plain.len()];
                    let s: String = (0..len).map(|j| if j == at { *sp } else { p }).collect();
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    write_json_string(&mut a, &s);
                    write_json_string_by_char(&mut b, &s);
                    assert_eq!(a, b, "{s:?}");
                }
            }
        }
    }

    #[test]
    fn code_point_order() {
        // Python: sorted(["é", "z", "😀", "\uffff"]) == ["z", "é", "\uffff", "😀"]
        let r = enc(vec![
            ("😀", Value::Int(1)),
            ("\u{ffff}", Value::Int(2)),
            ("é", Value::Int(3)),
            ("z", Value::Int(4)),
        ]);
        assert_eq!(r, r#"{"z":4,"\u00e9":3,"\uffff":2,"\ud83d\ude00":1}"#);
    }
}
