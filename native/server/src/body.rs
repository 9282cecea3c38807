//! The response body: a whole buffer, or a stream of chunks fed by a relay task (SSE). When
//! the client goes away hyper drops the body, the channel closes and the relay notices on
//! its next send.
//!
//! A whole body can carry an `after_send` action (the audit hand-off): it runs when hyper is
//! done with the body, as a task queued behind the connection's own work, so the response
//! bytes go out before the ledger thread is woken (docs/claims.md `answer-first`: the response first, the
//! record after; on a one-core gateway an earlier wake-up would run the ledger first).
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

pub type AfterSend = Box<dyn FnOnce() + Send + 'static>;

pub enum Kind {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

pub struct GwBody {
    kind: Kind,
    after_send: Option<AfterSend>,
}

impl GwBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Some(b.into())),
            after_send: None,
        }
    }

    pub fn stream(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            kind: Kind::Stream(rx),
            after_send: None,
        }
    }

    /// Run `f` once the body has been handed to the connection (or dropped unsent).
    pub fn after_send(&mut self, f: AfterSend) {
        self.after_send = Some(f);
    }
}

impl Drop for GwBody {
    fn drop(&mut self) {
        if let Some(f) = self.after_send.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move { f() });
                }
                Err(_) => f(),
            }
        }
    }
}

impl Body for GwBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}
