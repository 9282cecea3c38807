//! The smuggling guard (the Rust twin of gateway/stages/guard.py), in two parts:
//! `check_head` on the raw request head, for what an HTTP parser normalises or refuses
//! without a word (the Python rungs' httptools refuses exactly these; rs-server's hyper
//! shell runs it before hyper sees the head), and `check_headers` on the parsed header list
//! (every rung: inside the core pipeline's `decide`, and in the shells before a body is read).
use crate::errors::error_body;

/// A request refused before it is read or decided (gateway/errors.py GuardError): never
/// audited; a framing error (400) or an oversized head (431, as hyper closes) closes the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// extra response headers (`connection: close` after a framing error)
    pub headers: Vec<(&'static str, String)>,
}

impl GuardError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        let headers = if status == 400 || status == 431 {
            vec![("connection", "close".to_string())]
        } else {
            Vec::new()
        };
        Self {
            status,
            code,
            message: message.into(),
            headers,
        }
    }

    pub fn body(&self) -> Vec<u8> {
        error_body(self.status, &self.message, self.code)
    }
}

/// hyper's default (rs-server, granian): a head with more header fields is refused with 431.
pub const MAX_HEADER_FIELDS: usize = 100;

/// 431 (RFC 6585 §5), closing the connection as hyper does for a head over its buffer.
fn too_large_head(message: String) -> GuardError {
    GuardError::new(431, "headers_too_large", message)
}

fn framing(code: &'static str, message: &str) -> GuardError {
    GuardError::new(400, code, message)
}

fn reject(status: u16, code: &'static str, message: impl Into<String>) -> GuardError {
    GuardError {
        headers: Vec::new(),
        ..GuardError::new(status, code, message)
    }
}

fn token_byte(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    ) || b.is_ascii_digit()
        || b.is_ascii_lowercase()
}

fn ascii_strip(v: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = v.iter().position(|b| !ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// The smuggling guard's verdicts on a request head (gateway/stages/guard.py, the same
/// checks in the same order): the Authorization value, or the rejection.
pub fn check_headers<'h>(
    headers: &[(&'h [u8], &'h [u8])],
    max_header_bytes: u64,
    max_body_bytes: u64,
) -> Result<Option<&'h [u8]>, GuardError> {
    let mut content_length: Option<u64> = None;
    let mut authorization = None;
    let mut te: Option<&[u8]> = None;
    let mut total: u64 = 0;
    for &(name, value) in headers {
        total += (name.len() + value.len() + 4) as u64;
        if name == b"content-length" {
            if content_length.is_some() {
                return Err(framing(
                    "duplicate_content_length",
                    "duplicate Content-Length header",
                ));
            }
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 18 {
                return Err(framing(
                    "invalid_content_length",
                    "Content-Length is not a decimal integer",
                ));
            }
            content_length = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
        } else if name == b"authorization" {
            authorization = Some(value);
        } else if name == b"transfer-encoding" {
            if te.is_some() {
                return Err(framing(
                    "unsupported_transfer_encoding",
                    "more than one Transfer-Encoding header",
                ));
            }
            te = Some(value);
        }
        if name.is_empty() || !name.iter().all(|&b| token_byte(b)) {
            return Err(framing("invalid_header", "invalid bytes in a header name"));
        }
        if value
            .iter()
            .any(|&b| b <= 0x08 || (0x0a..=0x1f).contains(&b) || b == 0x7f)
        {
            return Err(framing("invalid_header", "invalid bytes in a header value"));
        }
    }
    if total > max_header_bytes {
        return Err(too_large_head(format!(
            "request headers exceed {max_header_bytes} bytes"
        )));
    }
    if headers.len() > MAX_HEADER_FIELDS {
        return Err(too_large_head(format!(
            "more than {MAX_HEADER_FIELDS} header fields"
        )));
    }
    if let Some(te) = te {
        if content_length.is_some() {
            return Err(framing(
                "ambiguous_framing",
                "Content-Length together with Transfer-Encoding",
            ));
        }
        if !ascii_strip(te).eq_ignore_ascii_case(b"chunked") {
            return Err(framing(
                "unsupported_transfer_encoding",
                "Transfer-Encoding other than chunked",
            ));
        }
    }
    if let Some(cl) = content_length {
        if cl > max_body_bytes {
            return Err(reject(
                413,
                "body_too_large",
                format!("request body exceeds {max_body_bytes} bytes"),
            ));
        }
    }
    Ok(authorization)
}

/// The raw request head's verdicts (request line and header lines, no blank line), for what
/// an HTTP parser normalises or refuses without an OpenAI-shaped answer: invalid bytes in a
/// header line, two Content-Length lines (hyper keeps one of two equal ones), Content-Length
/// beside Transfer-Encoding (hyper drops the Content-Length); and the request line's
/// verdicts as gateway/stages/guard.py `check_scope` gives them: HTTP/1.0 and 1.1 only (505),
/// exactly one non-empty Host on HTTP/1.1, no Transfer-Encoding on HTTP/1.0. The Python
/// rungs' parser (httptools under uvicorn) refuses the framing cases before their guard runs,
/// with 400 `bad_http_framing` (gateway/server.py); so does this.
pub fn check_head(head: &[u8]) -> Option<GuardError> {
    let refuse = |why: &str| {
        let msg = format!("malformed HTTP request: {why}");
        Some(framing("bad_http_framing", &msg))
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let request_line = request_line.strip_suffix(b"\r").unwrap_or(request_line);
    let version = request_line
        .rsplit(|&b| b == b' ')
        .next()
        .unwrap_or_default();
    if version.starts_with(b"HTTP/")
        && version != b"HTTP/1.1"
        && version != b"HTTP/1.0"
        && version.len() == 8
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit()
    {
        let v = String::from_utf8_lossy(&version[5..]);
        let msg = format!("HTTP/{v} is not supported (HTTP/1.0 and 1.1 only)");
        return Some(reject(505, "unsupported_http_version", msg));
    }
    let (mut cl, mut te, mut hosts, mut empty_host) = (0, 0, 0, false);
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return refuse("header line without a colon");
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| token(b)) {
            return refuse("invalid bytes in a header name");
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return refuse("invalid bytes in a header value");
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            cl += 1;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te += 1;
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            empty_host = value.iter().all(|b| b.is_ascii_whitespace());
        }
    }
    if cl > 1 {
        return refuse("duplicate Content-Length header");
    }
    if cl > 0 && te > 0 {
        return refuse("Content-Length together with Transfer-Encoding");
    }
    if hosts > 1 {
        return Some(framing("invalid_host", "more than one Host header"));
    }
    if (hosts == 0 && version == b"HTTP/1.1") || empty_host {
        let msg = "an HTTP/1.1 request without a Host header (or with an empty one)";
        return Some(framing("invalid_host", msg));
    }
    if te > 0 && version == b"HTTP/1.0" {
        let msg = "Transfer-Encoding in an HTTP/1.0 request";
        return Some(framing("ambiguous_framing", msg));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(head: &str) -> Option<String> {
        check_head(head.as_bytes()).map(|r| r.message)
    }

    #[test]
    fn raw_heads_hyper_would_normalise_are_refused() {
        let h = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n";
        assert_eq!(
            message(&format!("{h}content-length: 2\r\nContent-Length: 2")).unwrap(),
            "malformed HTTP request: duplicate Content-Length header"
        );
        assert!(message(&format!(
            "{h}content-length: 2\r\ntransfer-encoding: chunked"
        ))
        .unwrap()
        .contains("together"));
        assert!(message(&format!("{h}x-evil: a\x01b"))
            .unwrap()
            .contains("header value"));
        assert!(message(&format!("{h}bad name: a"))
            .unwrap()
            .contains("header name"));
        assert_eq!(
            message(&format!("{h}content-length: 2\r\nauthorization: Bearer k")),
            None
        );
        // the guard's, on the parsed list
        assert_eq!(
            message(&format!("{h}transfer-encoding: gzip, chunked")),
            None
        );
        let r = check_head(b"GET / HTTP/2.0\r\nhost: x").unwrap();
        assert_eq!((r.status, r.code), (505, "unsupported_http_version"));
        assert!(String::from_utf8(r.body())
            .unwrap()
            .contains("\"type\":\"server_error\""));
    }
}
