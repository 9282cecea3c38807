//! The response body: a whole buffer, or a stream of chunks fed by a relay task (SSE). When
//! the client goes away hyper drops the body, the channel closes and the relay notices on
//! its next send.
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

pub enum GwBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl GwBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        GwBody::Full(Some(b.into()))
    }
}

impl Body for GwBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            GwBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            GwBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, GwBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GwBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            GwBody::Full(None) => SizeHint::with_exact(0),
            GwBody::Stream(_) => SizeHint::default(),
        }
    }
}
