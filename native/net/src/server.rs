//! The server loop: accept, cap connections, serve HTTP/1 with hyper, stop gracefully.
//!
//! Limits (all per [`Limits`]):
//! - `max_connections`: an accept waits for a free slot (a semaphore), so a flood of
//!   connections queues in the kernel backlog instead of exhausting file descriptors.
//! - `max_header_bytes`: hyper's read buffer; a head larger than it is refused by hyper
//!   itself (431, connection closed) before any handler runs. Callers that want their own
//!   answer for large heads set it above their own check.
//! - `header_read_timeout`: time allowed for a request head, counted from the first byte
//!   of the request (hyper closes the connection when it runs out).
//! - `idle_timeout`: a keep-alive connection with no request in flight for this long is
//!   closed (checked by the connection task; hyper has no idle timer of its own).
//!
//! Body read timeouts belong to the handler, which knows what it reads.
//!
//! Raw head check: hyper normalises framings a smuggling guard wants to refuse (it keeps
//! one of two equal Content-Length headers and drops Content-Length beside
//! Transfer-Encoding, as RFC 9112 allows) and answers what it cannot parse with an empty
//! 400. A server that wants its own answer for such heads sets `head_check`: the raw bytes
//! of each request head that starts while no request is in flight on the connection are
//! passed to it, and if it returns a response, that response is written and the connection
//! closed before hyper sees the head. (Heads pipelined behind a request in flight are not
//! checked: hyper's own framing, which is unambiguous, is all there is for them.)
//! With `head_too_large` set, a head that grows past `max_header_bytes` or past
//! `max_header_fields` lines is answered with that response (and the connection closed)
//! before hyper's own buffer limit answers it with an empty 431; the same for pipelined heads
//! is hyper's.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Raw request head (request line and header lines, no blank line) -> a whole HTTP response
/// to send instead of serving it, or None.
pub type HeadCheck = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

#[derive(Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub drain_timeout: Duration,
    pub head_check: Option<HeadCheck>,
    /// the whole response for a head over the limits (needs `head_check`), e.g. an
    /// OpenAI-shaped 431; None leaves such heads to hyper
    pub head_too_large: Option<Vec<u8>>,
    /// header fields a head may have (hyper's own limit is 100)
    pub max_header_fields: usize,
}

impl Default for Limits {
    /// No idle cutoff and no head timeout: a client's pooled keep-alive connection stays
    /// usable between runs (what the mock wants). The gateway sets its own.
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            header_read_timeout: None,
            idle_timeout: None,
            drain_timeout: Duration::from_secs(30),
            head_check: None,
            head_too_large: None,
            max_header_fields: 100,
        }
    }
}

/// Serve HTTP/1 on `listener` until `shutdown` resolves, then drain. `make_service` is
/// called once per connection with the peer address.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    limits: Limits,
    make_service: M,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    M: Fn(std::net::SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_header_fields)
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                // Out of file descriptors and the like: back off briefly instead of spinning.
                Err(_) => { tokio::time::sleep(Duration::from_millis(5)).await; continue; }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = IdleIo::new(stream, &limits);
        let activity = io.activity.clone();
        let svc = Tracked {
            inner: make_service(peer),
            activity: activity.clone(),
        };
        let conn = graceful.watch(http.serve_connection(TokioIo::new(io), svc));
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match idle {
                None => {
                    let _ = conn.await;
                }
                Some(limit) => {
                    tokio::pin!(conn);
                    loop {
                        let last = activity.last();
                        let wait = limit.saturating_sub(last.elapsed());
                        tokio::select! {
                            _ = &mut conn => break,
                            _ = tokio::time::sleep(wait) => {
                                if activity.last().elapsed() >= limit && activity.idle() {
                                    break; // dropping the connection closes the socket
                                }
                            }
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let drain = limits.drain_timeout;
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
    Ok(())
}

/// Last read/write time of a connection, and whether a response is still being written
/// (a long stream with slow upstream tokens is not idle).
pub struct Activity {
    start: Option<Instant>,
    last_ns: AtomicU64,
    in_flight: AtomicU64,
}

/// Collects the bytes of a head that starts while the connection is idle.
struct HeadScan {
    buf: Vec<u8>,
    active: bool,
    check: HeadCheck,
    /// (hyper's buffer size, header fields, the answer) for a head over them
    too_large: Option<(usize, usize, Vec<u8>)>,
    /// the answer to write instead of serving the head
    refused: Option<Vec<u8>>,
}

const HEAD_SCAN_CAP: usize = 256 * 1024;

impl HeadScan {
    fn feed(&mut self, data: &[u8], activity: &Activity) {
        if !self.active {
            if activity.in_flight.load(Ordering::Relaxed) != 0 {
                return;
            }
            self.active = true;
            self.buf.clear();
        }
        self.buf.extend_from_slice(data);
        // blank lines before a request line are allowed (RFC 9112 2.2)
        let start = self
            .buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(self.buf.len());
        let body = &self.buf[start..];
        let end = find(body, b"\r\n\r\n").or_else(|| find(body, b"\n\n"));
        if let Some((max_bytes, max_fields, answer)) = &self.too_large {
            // over hyper's buffer (which holds the leading blank lines too) or over the
            // fields, counted on what has arrived: answered before hyper refuses it bare
            let head = &body[..end.unwrap_or(body.len())];
            let lines = head.iter().filter(|&&b| b == b'\n').count();
            if self.buf.len() >= *max_bytes || lines > *max_fields {
                self.refused = Some(answer.clone());
                self.active = false;
                self.buf.clear();
                return;
            }
        }
        if let Some(end) = end {
            self.refused = (self.check)(&body[..end]);
            self.active = false;
            self.buf.clear();
        } else if self.buf.len() > HEAD_SCAN_CAP {
            self.active = false; // hyper refuses a head this large itself
            self.buf.clear();
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

impl Activity {
    fn touch(&self) {
        if let Some(s) = self.start {
            self.last_ns
                .store(s.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
    fn last(&self) -> Instant {
        self.start.expect("set at creation")
            + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))
    }
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }
}

/// Counts a request as in flight from the handler's call until its response body is
/// dropped (sent or abandoned).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body + Unpin,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(self.activity.clone());
        TrackedFuture {
            fut: self.inner.call(req),
            busy: Some(busy),
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's future and its request's count, unboxed: hyper keeps the service's
    /// future in its connection's own slot, so a box here was one more allocation and copy
    /// of the whole (kilobytes-large) handler future per request.
    struct TrackedFuture<F> {
        #[pin]
        fut: F,
        busy: Option<Busy>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.fut.poll(cx));
        // the count ends with the response body, or here when the handler failed
        let busy = this.busy.take().expect("polled after completion");
        Poll::Ready(out.map(|resp| resp.map(|body| TrackedBody { body, _busy: busy })))
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
pub struct TrackedBody<B> {
    body: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream that records when it last moved bytes.
pub struct IdleIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    scan: Option<HeadScan>,
    closed: bool,
}

impl IdleIo {
    fn new(inner: TcpStream, limits: &Limits) -> Self {
        let activity = Activity {
            start: Some(Instant::now()),
            last_ns: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        };
        let scan = limits.head_check.clone().map(|check| HeadScan {
            buf: Vec::new(),
            active: false,
            check,
            too_large: limits.head_too_large.clone().map(|answer| {
                (
                    limits.max_header_bytes.max(8192),
                    limits.max_header_fields,
                    answer,
                )
            }),
            refused: None,
        });
        Self {
            inner,
            activity: Arc::new(activity),
            scan,
            closed: false,
        }
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(())); // EOF: a refused head ended the connection
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
            let this = &mut *self;
            if let Some(scan) = this.scan.as_mut() {
                scan.feed(&buf.filled()[before..], &this.activity);
                if let Some(resp) = scan.refused.take() {
                    // a few hundred bytes into an idle socket's empty send buffer
                    let _ = this.inner.try_write(&resp);
                    this.closed = true;
                    buf.set_filled(before);
                    return Poll::Ready(Ok(()));
                }
            }
        }
        r
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A current-thread runtime for one thread, a multi-thread one otherwise.
pub fn build_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
            _ => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
