//! The SSE relay: a task that adapts each upstream chunk as it arrives (core
//! `pipeline::relay::StreamRelay`) and sends it to the shell's channel, then audits the
//! stream. A failure in the middle of a stream is one SSE event carrying the OpenAI error
//! body; the client hanging up (the channel closing) ends the relay at once and closes the
//! upstream stream, as the Python rungs cancel theirs.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gatewaylab_core::errors::UpstreamFailure;
use gatewaylab_core::job::{Answer, AuditJob};
use gatewaylab_core::pipeline::Forwarding;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::engine::{Engine, Permit, Reply};
use crate::metrics::{Counter, Stage};

/// Chunks buffered between the relay and a slow client.
const STREAM_BUFFER: usize = 16;

/// A failure in the middle of a stream: one SSE event carrying the OpenAI error body.
pub fn error_event(fail: &UpstreamFailure) -> Bytes {
    let mut ev = b"data: ".to_vec();
    ev.extend_from_slice(&fail.body());
    ev.extend_from_slice(b"\n\n");
    ev.into()
}

impl Engine {
    /// Start relaying a stream whose first chunk is in; `permit` stays held until it ends.
    pub(crate) fn relay(
        self: &Arc<Self>,
        fwd: Forwarding,
        up: Incoming,
        first: Option<Bytes>,
        permit: Permit,
        rid: String,
        t0: Instant,
    ) -> Reply {
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit; // in flight until the relay ends
            engine.run_relay(fwd, up, first, tx, t0).await;
        });
        Reply::Stream {
            request_id: rid,
            chunks: rx,
        }
    }

    async fn run_relay(
        &self,
        fwd: Forwarding,
        mut up: Incoming,
        first: Option<Bytes>,
        tx: mpsc::Sender<Bytes>,
        t0: Instant,
    ) {
        let mut relay = self.pipeline.relay(&fwd);
        let mut status = 499u16; // until we know better: the client went away
        let mut chunk = first;
        let fail = loop {
            let Some(c) = chunk.take() else {
                let done = relay.done();
                if done.is_empty() || tx.send(Bytes::from_static(done)).await.is_ok() {
                    status = 200;
                }
                break None;
            };
            match relay.feed(&c) {
                Err(f) => break Some(f),
                Ok(out) if !out.is_empty() => {
                    if tx.send(Bytes::from(out)).await.is_err() {
                        break None; // the client hung up
                    }
                }
                Ok(_) => {}
            }
            tokio::select! {
                next = self.upstream.next_chunk(&mut up) => match next {
                    Ok(n) => chunk = n,
                    Err(f) => break Some(self.failure(f)),
                },
                _ = tx.closed() => break None,
            }
        };
        if let Some(f) = fail {
            if !tx.is_closed() {
                // the client is still there: tell it (gone, it is a 499 like any hang-up)
                self.metrics.incr(Counter::UpstreamErrors);
                status = f.status;
                let _ = tx.send(error_event(&f)).await;
            }
        }
        if status == 499 {
            self.metrics.incr(Counter::StreamsAbandoned);
        }
        drop(tx);
        if let Some(material) = fwd.audit {
            self.submit_job(AuditJob {
                material,
                status,
                answer: Answer::Chunks(std::mem::take(&mut relay.collected)),
                latency_us: t0.elapsed().as_micros() as i64,
                figures: None,
            });
        }
        self.metrics
            .observe(Stage::Total, t0.elapsed().as_nanos() as u64);
    }
}
