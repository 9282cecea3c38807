//! Forward: one upstream attempt on `native/net`'s pooled client (the one HTTP client of the
//! Rust rungs), or a model group's attempts where `core::router::drive` says. A stream is
//! retried only until its first chunk. Traced requests get one attempt span per attempt,
//! each with its own `traceparent` upstream.
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatewaylab_core::errors::UpstreamFailure;
use gatewaylab_core::pipeline::Forwarding;
use gatewaylab_core::router::{drive, retryable, Outcome};
use gatewaylab_net::client::Failure;
use gatewaylab_trace::{Attempt, Instrument};
use hyper::body::Incoming;

use crate::engine::Engine;

/// What an attempt got: a whole answer (any status), or a 2xx stream and its first chunk
/// (None: the stream ended before any).
pub enum Got {
    Whole(u16, Bytes),
    Stream(Incoming, Option<Bytes>),
}

impl Engine {
    pub(crate) fn failure(&self, f: Failure) -> UpstreamFailure {
        match f {
            Failure::Timeout(_) => UpstreamFailure::timeout(self.upstream.timeout().as_secs_f64()),
            Failure::Unavailable(detail) | Failure::Invalid(detail) => {
                UpstreamFailure::unavailable(&detail)
            }
        }
    }

    /// Send `fwd` (or, routed, its group's deployments in turn) and read the answer. One
    /// attempt takes `fwd.body` (nothing reads it after the send).
    pub(crate) async fn forward(
        self: &Arc<Self>,
        fwd: &mut Forwarding,
        request_body: &[u8],
        traced: bool,
    ) -> Result<Got, UpstreamFailure> {
        let router = match &self.router {
            Some(r) if self.pipeline.is_routed(fwd) => r,
            _ => {
                let attempt = traced.then(|| Attempt::begin(1, &fwd.url));
                let body = Bytes::from(std::mem::take(&mut fwd.body));
                return self
                    .attempt(&fwd.url, &fwd.headers, body, fwd.stream, attempt)
                    .await
                    .1;
            }
        };
        let fwd = &*fwd;
        let clock = || self.started.elapsed().as_nanos() as u64;
        let sleep = |ns| tokio::time::sleep(Duration::from_nanos(ns));
        let tokens = (request_body.len() as u64).div_ceil(4);
        let attempts = AtomicU32::new(0);
        let attempts = &attempts;
        let send = |group: String, index: usize| async move {
            let t = match self.pipeline.target(&group, index, fwd, request_body) {
                Err(f) => return (Outcome::Fail, Err(f)),
                Ok(t) => t,
            };
            let attempt =
                traced.then(|| Attempt::begin(attempts.fetch_add(1, Relaxed) + 1, &t.url));
            self.attempt(&t.url, &t.headers, t.body.into(), fwd.stream, attempt)
                .await
        };
        match drive(router, &fwd.public_model, tokens, clock, send, sleep).await {
            Err(e) => Err(UpstreamFailure::unavailable(&e)),
            Ok(None) => Err(UpstreamFailure::no_deployment(&fwd.public_model)),
            Ok(Some(r)) => r,
        }
    }

    /// One attempt, and whether the router may retry it (429, 5xx, timeout, connection
    /// error). A stream's head is read, then its first chunk; a refused stream's body is read
    /// whole (the connection stays reusable).
    async fn attempt(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
        stream: bool,
        attempt: Option<Attempt>,
    ) -> (Outcome, Result<Got, UpstreamFailure>) {
        // a traced attempt: its own span around the exchange, and its traceparent upstream
        let (span, extra) = match &attempt {
            None => (None, None),
            Some(a) => {
                let tp = a
                    .traceparent
                    .clone()
                    .map(|tp| ("traceparent".to_string(), tp));
                (Some(a.span.clone()), tp.map(|h| [headers, &[h]].concat()))
            }
        };
        let headers = extra.as_deref().unwrap_or(headers);
        let sent = match &span {
            None => self.upstream.post(url, headers, body).await,
            Some(s) => {
                self.upstream
                    .post(url, headers, body)
                    .instrument(s.clone())
                    .await
            }
        };
        let resp = match sent {
            Err(f) => return (Outcome::Fail, Err(self.failure(f))),
            Ok(r) => r,
        };
        let status = resp.status().as_u16();
        if let Some(s) = &span {
            gatewaylab_trace::attempt_status(s, status);
        }
        let mut up = resp.into_body();
        if stream && (200..300).contains(&status) {
            let first = self.upstream.next_chunk(&mut up);
            let first = match span {
                None => first.await,
                Some(s) => first.instrument(s).await,
            };
            return match first {
                Ok(first) => (Outcome::Ok, Ok(Got::Stream(up, first))),
                Err(f) => (Outcome::Fail, Err(self.failure(f))),
            };
        }
        match self.upstream.collect(&mut up).await {
            Err(f) => (Outcome::Fail, Err(self.failure(f))),
            Ok(b) => {
                let outcome = if retryable(status) {
                    Outcome::Fail
                } else {
                    Outcome::Ok
                };
                (outcome, Ok(Got::Whole(status, b)))
            }
        }
    }
}
