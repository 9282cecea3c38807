//! What the gateway answers when it refuses or fails, in OpenAI's error shape
//! `{"error": {"message", "type", "code"}}` (the Rust twin of gateway/errors.py: the `type`
//! table, the upstream failures as `UpstreamFailure`), and Python's `repr()`, so messages
//! quote values as the Python twins do.
use crate::stages::adapter::Json;
use serde_json::Value;

/// An upstream answer the gateway cannot pass on (the Python twin's UpstreamError classes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFailure {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl UpstreamFailure {
    pub fn unavailable(detail: &str) -> Self {
        Self {
            status: 502,
            code: "upstream_unavailable",
            message: format!("upstream connection failed: {detail}"),
        }
    }
    pub fn timeout(secs: f64) -> Self {
        Self {
            status: 504,
            code: "upstream_timeout",
            message: format!("upstream timed out after {}s", fmt_g(secs)),
        }
    }
    /// A non-2xx status where a stream was expected, or a 5xx/1xx/3xx answer.
    pub fn status(status: u16) -> Self {
        let http = if (400..500).contains(&status) {
            status
        } else {
            502
        };
        Self {
            status: http,
            code: "upstream_status",
            message: format!("upstream answered HTTP {status}"),
        }
    }
    /// The router found no deployment of `model` it could send to (all cooling down or at
    /// their rate limits).
    pub fn no_deployment(model: &str) -> Self {
        Self {
            status: 503,
            code: "no_deployment_available",
            message: format!(
                "no deployment of model {} is available (cooling down or at its rate limit)",
                py_repr(model)
            ),
        }
    }
    pub fn malformed(what: &str, detail: &str) -> Self {
        Self {
            status: 502,
            code: "upstream_malformed",
            message: format!("upstream sent a malformed {what}: {detail}"),
        }
    }
    pub fn body(&self) -> Vec<u8> {
        error_body(self.status, &self.message, self.code)
    }
}

/// Python's `f"{x:g}"` for the timeouts we print (plain numbers of seconds).
fn fmt_g(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// The OpenAI `type` below 500, by HTTP status (gateway/errors.py ERROR_TYPES).
pub const ERROR_TYPES: &[(u16, &str)] = &[
    (400, "invalid_request_error"),
    (401, "authentication_error"),
    (403, "permission_error"),
    (404, "invalid_request_error"),
    (413, "invalid_request_error"),
    (429, "rate_limit_error"),
];

/// The codes of a 5xx that is the upstream's failure (gateway/errors.py UPSTREAM_CODES);
/// every other 5xx is the gateway's own (`overloaded`, `audit_unavailable`, ...).
pub const UPSTREAM_CODES: &[&str] = &[
    "upstream_error",
    "upstream_unavailable",
    "upstream_timeout",
    "upstream_malformed",
    "upstream_status",
    "no_deployment_available",
];

/// The OpenAI `type` of an error answer (gateway/errors.py error_type): by status below 500;
/// a 5xx is `upstream_error` when its code says the upstream failed, else `server_error`
/// (503 is both `overloaded` and `no_deployment_available`: the status alone cannot say).
pub fn error_type(status: u16, code: &str) -> &'static str {
    if status >= 500 {
        return if UPSTREAM_CODES.contains(&code) {
            "upstream_error"
        } else {
            "server_error"
        };
    }
    ERROR_TYPES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("invalid_request_error", |(_, t)| t)
}

/// `{"error": {"message", "type", "code"}}`, written as orjson writes it.
pub fn error_body(status: u16, message: &str, code: &str) -> Vec<u8> {
    Json::Obj(vec![(
        "error".into(),
        Json::Obj(vec![
            ("message".into(), Json::Str(message.into())),
            ("type".into(), Json::Str(error_type(status, code).into())),
            ("code".into(), Json::Str(code.into())),
        ]),
    )])
    .to_bytes()
    .unwrap_or_default() // two levels deep
}

/// Python's `repr()` of a str, for messages that quote a model name.
pub fn py_repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// Python's repr of a JSON value (the router twin's messages).
pub fn py_repr_json(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e16 {
                    format!("{f:.1}")
                } else {
                    format!("{f}")
                }
            } else {
                n.to_string()
            }
        }
        Value::String(s) => py_repr(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(py_repr_json).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(k), py_repr_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_shape() {
        assert_eq!(
            error_body(429, "x\"y", "c"),
            br#"{"error":{"message":"x\"y","type":"rate_limit_error","code":"c"}}"#.to_vec()
        );
    }

    #[test]
    fn a_5xx_type_follows_its_code() {
        assert_eq!(error_type(503, "overloaded"), "server_error");
        assert_eq!(error_type(503, "audit_unavailable"), "server_error");
        assert_eq!(error_type(503, "no_deployment_available"), "upstream_error");
        assert_eq!(error_type(502, "upstream_unavailable"), "upstream_error");
        assert_eq!(error_type(502, "plugin_unavailable"), "server_error");
        assert_eq!(error_type(504, "upstream_timeout"), "upstream_error");
        assert_eq!(error_type(500, "internal_error"), "server_error");
        assert_eq!(error_type(429, "upstream_status"), "rate_limit_error"); // an upstream 4xx keeps its status's type
        assert_eq!(error_type(422, "x"), "invalid_request_error");
    }
}
