//! HTTP/1 clients: one dedicated connection ([`connect_http1`], the load generator's
//! per-worker connection) and a pooled upstream client with timeouts ([`Upstream`], the
//! gateway binary's forwarder).
//!
//! Upstream failures come back as [`Failure`]: `Timeout` (no response head in time, or no
//! data for `timeout` while reading a body) or `Unavailable` (refused, reset, closed early;
//! with the error chain) — the two classes the gateway maps to 504 and 502, as the Python
//! forwarder does — or `Invalid` (a URL or header no request can carry; nothing was sent).
//!
//! [`Upstream`] is the one upstream client of the Rust rungs and twins: the engine's
//! forward (rs-core and rs-server) and the forwarder twin (`gateway._native.NativeForwarder`,
//! rung 1). Requests go as the Python forwarder twin sends them: dot segments in the path
//! resolved (as the WHATWG URL parser and gateway/stages/forwarder.py do), and a POST always
//! carries its Content-Length, `0` included (hyper sends none for an empty body).
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// One HTTP/1 connection; its driver task runs on the current runtime.
pub async fn connect_http1<B>(addr: SocketAddr) -> std::io::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Timeout(String),
    Unavailable(String),
    Invalid(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout(m) | Failure::Unavailable(m) | Failure::Invalid(m) => f.write_str(m),
        }
    }
}

/// `url` with its path's dot segments resolved the way the WHATWG URL parser does (and
/// gateway/stages/forwarder.py `without_dot_segments`): `.` (or `%2e`) is dropped, `..` (or
/// `.%2e`, `%2e.`, `%2e%2e`, any case) drops the segment before it, and either one last
/// leaves the path ending in `/`. Everything else goes as given.
pub fn without_dot_segments(url: &str) -> std::borrow::Cow<'_, str> {
    // a dot segment starts right after a `/` with `.` or `%` (`%2e`): without one, no work
    if !url
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'/' && (w[1] == b'.' || w[1] == b'%'))
    {
        return url.into();
    }
    let single = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    let double = |s: &str| {
        ["..", ".%2e", "%2e.", "%2e%2e"]
            .iter()
            .any(|d| s.eq_ignore_ascii_case(d))
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(cut);
    let end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, after) = tail.split_at(end);
    let Some(path) = path.strip_prefix('/') else {
        return url.into();
    };
    let segments: Vec<&str> = path.split('/').collect();
    if !segments.iter().any(|s| single(s) || double(s)) {
        return url.into();
    }
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let last = i == segments.len() - 1;
        if double(seg) {
            out.pop();
            if last {
                out.push("");
            }
        } else if single(seg) {
            if last {
                out.push("");
            }
        } else {
            out.push(seg);
        }
    }
    format!("{scheme}://{authority}/{}{after}", out.join("/")).into()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// A pooled keep-alive client for the upstreams.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Upstream {
    /// `pool`: idle connections kept per host; `timeout`: for the response head, and the
    /// longest gap between body chunks.
    pub fn new(pool: usize, timeout: Duration, connect_timeout: Duration) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(conn);
        Self { client, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The POST of `body` to `url`, or `Invalid` (nothing is sent).
    pub fn request(
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, Failure> {
        let mut b = Request::post(without_dot_segments(url).as_ref());
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        if body.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            b = b.header(hyper::header::CONTENT_LENGTH, "0");
        }
        b.body(Full::new(body))
            .map_err(|e| Failure::Invalid(format!("bad upstream request: {e}")))
    }

    /// POST `body` to `url`; the response head, or a failure.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Response<Incoming>, Failure> {
        self.send(Self::request(url, headers, body)?).await
    }

    /// Send a request made by [`Upstream::request`]; the response head, or a failure.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Failure> {
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(Failure::Timeout(format!(
                "upstream timed out after {}s",
                secs(self.timeout)
            ))),
            Ok(Err(e)) => Err(Failure::Unavailable(chain(&e))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// The next chunk of a body (None at its end), with no gap longer than the timeout.
    pub async fn next_chunk(&self, body: &mut Incoming) -> Result<Option<Bytes>, Failure> {
        loop {
            match tokio::time::timeout(self.timeout, body.frame()).await {
                Err(_) => {
                    return Err(Failure::Timeout(format!(
                        "upstream stream timed out (no data for {}s)",
                        secs(self.timeout)
                    )))
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(Failure::Unavailable(chain(&e))),
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        return Ok(Some(d));
                    }
                }
            }
        }
    }

    /// The whole body, within the timeout between chunks.
    pub async fn collect(&self, body: &mut Incoming) -> Result<Bytes, Failure> {
        let mut all = Gather::default();
        while let Some(c) = self.next_chunk(body).await? {
            all.push(c);
        }
        Ok(all.finish())
    }
}

/// A body gathered from its chunks: a body of one chunk is that chunk, never copied.
#[derive(Default)]
pub struct Gather {
    first: Option<Bytes>,
    buf: BytesMut,
}

impl Gather {
    pub fn push(&mut self, c: Bytes) {
        match self.first.take() {
            None if self.buf.is_empty() => self.first = Some(c),
            Some(f) => {
                self.buf.extend_from_slice(&f);
                self.buf.extend_from_slice(&c);
            }
            None => self.buf.extend_from_slice(&c),
        }
    }

    pub fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.buf.freeze())
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_resolve_as_the_python_twin_does() {
        let r = |u: &str| without_dot_segments(u).into_owned();
        assert_eq!(r("http://h/seen/.?q=1"), "http://h/seen/?q=1");
        assert_eq!(r("http://h/seen/a/..?q=1"), "http://h/seen/?q=1");
        assert_eq!(r("http://h/seen/./a"), "http://h/seen/a");
        assert_eq!(r("http://h/seen/a/%2E%2e/b"), "http://h/seen/b");
        assert_eq!(r("http://h/seen/..."), "http://h/seen/...");
        assert_eq!(r("http://h/a./.b"), "http://h/a./.b");
        assert_eq!(
            r("http://h:9/v1/chat/completions"),
            "http://h:9/v1/chat/completions"
        );
        assert_eq!(r("no-scheme/./x"), "no-scheme/./x");
    }

    #[test]
    fn every_post_carries_its_content_length_and_bad_headers_are_invalid() {
        let req = Upstream::request("http://127.0.0.1:9/x", &[], Bytes::new()).unwrap();
        assert_eq!(req.headers()["content-length"], "0");
        let h = vec![("x-a".to_string(), "b".to_string())];
        let req = Upstream::request("http://127.0.0.1:9/x", &h, Bytes::from_static(b"{}")).unwrap();
        assert_eq!(req.headers()["x-a"], "b");
        assert!(!req.headers().contains_key("content-length")); // hyper writes it from the body
        let bad = vec![("bad header".to_string(), "v".to_string())];
        assert!(matches!(
            Upstream::request("http://127.0.0.1:9/", &bad, Bytes::new()),
            Err(Failure::Invalid(_))
        ));
        let bad = vec![("x-ok".to_string(), "line\nbreak".to_string())];
        assert!(matches!(
            Upstream::request("http://127.0.0.1:9/", &bad, Bytes::new()),
            Err(Failure::Invalid(_))
        ));
    }
}
