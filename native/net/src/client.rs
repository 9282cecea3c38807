//! HTTP/1 clients: one dedicated connection ([`connect_http1`], the load generator's
//! per-worker connection) and a pooled upstream client with timeouts ([`Upstream`], the
//! gateway binary's forwarder).
//!
//! Upstream failures come back as [`Failure`]: `Timeout` (no response head in time, or no
//! data for `timeout` while reading a body) or `Unavailable` (refused, reset, closed early;
//! with the error chain) — the two classes the gateway maps to 504 and 502, as the Python
//! forwarder does.
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
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout(m) | Failure::Unavailable(m) => f.write_str(m),
        }
    }
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

    /// POST `body` to `url`; the response head, or a failure.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Response<Incoming>, Failure> {
        let mut b = Request::post(url);
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b
            .body(Full::new(body))
            .map_err(|e| Failure::Unavailable(format!("bad upstream request: {e}")))?;
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
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        while let Some(c) = self.next_chunk(body).await? {
            match first.take() {
                None if buf.is_empty() => first = Some(c),
                Some(f) => {
                    buf.extend_from_slice(&f);
                    buf.extend_from_slice(&c);
                }
                None => buf.extend_from_slice(&c),
            }
        }
        Ok(match first {
            Some(f) => f,
            None => buf.freeze(),
        })
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
