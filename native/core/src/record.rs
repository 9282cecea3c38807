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
            Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Value::Str(s) => write_json_string(&mut out, s),
        }
    }
    out.push(b'}');
    out
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
/// hex (UTF-16 surrogate pairs above U+FFFF).
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        let u = c as u32;
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            ' '..='~' => out.push(u as u8),
            _ if u >= 0x10000 => {
                let v = u - 0x10000;
                push_u_escape(out, 0xd800 | (v >> 10));
                push_u_escape(out, 0xdc00 | (v & 0x3ff));
            }
            _ => push_u_escape(out, u),
        }
    }
    out.push(b'"');
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
