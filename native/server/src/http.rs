//! Rung 3's shell: hyper serves the engine (native/engine), as the Python shells serve the
//! Python gateway (`gateway/shell_asgi.py`: the same routes, guard order and answers).
//!
//! ```text
//! raw head check (core guard: what hyper would hide) -> hyper parses the head -> admission
//! -> guard on hyper's view (core check_headers) -> body (limit, read timeout) -> engine
//! ```
//!
//! A panic while serving a request becomes a 500 for that request (the process and the other
//! connections go on); SIGTERM stops accepting, lets in-flight requests finish, runs the
//! audit hand-offs queued behind their answers and drains the audit queue before it exits.
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatewaylab_core::errors::error_body;
use gatewaylab_core::pipeline::CHAT_PATH as CHAT;
use gatewaylab_core::stages::guard::{self, GuardError};
use gatewaylab_engine::ops::{percent_decode, query_param, OpAnswer, JSON};
use gatewaylab_engine::unit::Unit;
use gatewaylab_engine::{Engine, Reply, Spec};
use gatewaylab_net::client::Gather;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::GwBody;
use crate::cli::ServerSpec;
use crate::sidecar::Sidecar;

/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

fn response(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<GwBody> {
    let mut r = Response::new(GwBody::full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn op(a: OpAnswer) -> Response<GwBody> {
    response(a.status, a.content_type, a.body)
}

fn error(status: u16, message: &str, code: &str) -> Response<GwBody> {
    response(status, JSON, error_body(status, message, code))
}

fn with_headers(mut r: Response<GwBody>, headers: &[(&'static str, String)]) -> Response<GwBody> {
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().append(HeaderName::from_static(k), v);
        }
    }
    r
}

fn refused(g: &GuardError) -> Response<GwBody> {
    with_headers(response(g.status, JSON, g.body()), &g.headers)
}

/// The engine's reply on the wire. A whole answer's audit hand-off runs once hyper is done
/// with the body (body.rs: after_send), so the response is written before the ledger thread
/// wakes (docs/claims.md `answer-first`: the response first, the record after).
fn reply(reply: Reply) -> Response<GwBody> {
    match reply {
        Reply::Whole {
            status,
            headers,
            body,
            handoff,
        } => {
            let mut r = with_headers(response(status, JSON, body), &headers);
            if let Some(h) = handoff {
                r.body_mut().after_send(Box::new(move || h.submit()));
            }
            r
        }
        Reply::Stream { request_id, chunks } => {
            let mut r = Response::new(GwBody::stream(chunks));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert("cache-control", HeaderValue::from_static("no-cache"));
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                h.insert("x-request-id", v);
            }
            r
        }
    }
}

/// Read and drop up to `cap` bytes of a rejected request's body, so a client still sending
/// gets to read the answer (the Python guard's `discard_body`).
async fn discard_body(body: &mut Incoming, cap: usize) {
    let mut seen = 0usize;
    while seen <= cap {
        match tokio::time::timeout(BODY_READ_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(f))) => seen += f.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

/// The whole body, failing with 413 as soon as it grows past `max` (never buffering more;
/// the Python guard's `read_body`).
async fn read_body(body: &mut Incoming, max: usize) -> Result<Bytes, GuardError> {
    let mut all = Gather::default();
    let mut size = 0usize;
    loop {
        let frame = match tokio::time::timeout(BODY_READ_TIMEOUT, body.frame()).await {
            Err(_) => {
                let secs = BODY_READ_TIMEOUT.as_secs();
                let msg = format!("request body not received within {secs}s");
                return Err(GuardError::new(408, "request_timeout", msg));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // hyper refused the body's framing (a bad chunk size, chunk extensions or
                // trailers over its 16 KiB caps: an InvalidData I/O error under the body error),
                // or the client went away; the Python rungs answer the first as
                // gateway/framing.py does
                let refused = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .filter(|io| io.kind() == std::io::ErrorKind::InvalidData);
                return Err(match refused {
                    Some(why) => {
                        let msg = format!("malformed HTTP request: {why}");
                        GuardError::new(400, "bad_http_framing", msg)
                    }
                    None => {
                        let msg = "client disconnected while sending the body";
                        GuardError::new(400, "client_disconnected", msg)
                    }
                });
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len();
        if size > max {
            discard_body(body, 8 * max).await;
            let msg = format!("request body exceeds {max} bytes");
            return Err(GuardError::new(413, "body_too_large", msg));
        }
        all.push(data);
    }
    Ok(all.finish())
}

fn route_label(path: &str) -> &'static str {
    match path {
        CHAT => CHAT,
        "/health" => "/health",
        "/v1/models" => "/v1/models",
        "/metrics" => "/metrics",
        "/audit/root" => "/audit/root",
        "/audit/consistency" => "/audit/consistency",
        p if p.starts_with("/audit/proof/") => "/audit/proof",
        _ => "other",
    }
}

fn header_pairs(headers: &hyper::HeaderMap) -> Vec<(&[u8], &[u8])> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
        .collect()
}

pub struct Shell {
    engine: Arc<Engine>,
    max_header_bytes: u64,
    max_body_bytes: u64,
}

impl Shell {
    pub fn new(engine: Arc<Engine>) -> Self {
        let p = &engine.config().pipeline;
        let (max_header_bytes, max_body_bytes) = (p.max_header_bytes, p.max_body_bytes);
        Self {
            engine,
            max_header_bytes,
            max_body_bytes,
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<GwBody> {
        let path = req.uri().path().to_string();
        let t0 = Instant::now();
        let resp = if path == CHAT && req.method() == Method::POST {
            self.chat(req, t0).await
        } else {
            self.other(req, &path).await
        };
        self.engine
            .metrics
            .count_request(route_label(&path), resp.status().as_u16());
        resp
    }

    /// Admission first (a shed request is answered before its body is read), then the guard
    /// and the body, then the engine.
    async fn chat(&self, req: Request<Incoming>, t0: Instant) -> Response<GwBody> {
        let Some(permit) = self.engine.admit() else {
            return reply(self.engine.shed());
        };
        let (parts, mut body) = req.into_parts();
        let body = match self.head_and_body(&parts, &mut body).await {
            Ok(b) => b,
            Err(g) => return refused(&g),
        };
        let pairs = header_pairs(&parts.headers);
        reply(self.engine.chat(permit, &pairs, body, t0).await)
    }

    /// The guard on hyper's view of the head (the core's `check_headers`, the function rung 2
    /// runs inside `decide`), then the body within its limit (gateway/shell_asgi.py's order).
    async fn head_and_body(
        &self,
        parts: &hyper::http::request::Parts,
        body: &mut Incoming,
    ) -> Result<Bytes, GuardError> {
        let max = self.max_body_bytes as usize;
        let pairs = header_pairs(&parts.headers);
        if let Err(g) = guard::check_headers(&pairs, self.max_header_bytes, self.max_body_bytes) {
            if g.status == 413 {
                discard_body(body, 8 * max).await; // declared too large: drop the body, then answer
            }
            return Err(g);
        }
        read_body(body, max).await
    }

    async fn other(&self, req: Request<Incoming>, path: &str) -> Response<GwBody> {
        let (parts, mut body) = req.into_parts();
        if let Err(g) = self.head_and_body(&parts, &mut body).await {
            return refused(&g);
        }
        let e = &self.engine;
        let query = parts.uri.query();
        if parts.method == Method::GET {
            match path {
                "/health" => return op(e.health()),
                "/v1/models" => return op(e.models()),
                "/metrics" => return op(e.metrics_text()),
                "/audit/root" => return op(e.audit_root().await),
                "/audit/consistency" => {
                    let (old, shard) = (query_param(query, "old"), query_param(query, "shard"));
                    return op(e.audit_consistency(old, shard).await);
                }
                p if p.starts_with("/audit/proof/") => {
                    let raw = percent_decode(&p["/audit/proof/".len()..], false);
                    return op(e.audit_proof(&raw, query_param(query, "shard")).await);
                }
                _ => {}
            }
        }
        let known = matches!(
            path,
            "/health" | "/v1/models" | "/metrics" | "/audit/root" | "/audit/consistency" | CHAT
        ) || path.starts_with("/audit/proof/");
        let method = &parts.method;
        if known {
            let msg = format!("method {method} not allowed on {path}");
            error(405, &msg, "method_not_allowed")
        } else {
            error(404, &format!("no route for {method} {path}"), "not_found")
        }
    }
}

/// What the raw head shows and hyper's view hides: the core guard's `check_head`, written
/// out as a whole response on a closing connection.
fn raw_head_check(head: &[u8]) -> Option<Vec<u8>> {
    guard::check_head(head).map(|r| whole_answer(&r))
}

/// The answer to a head over the net layer's limits (hyper's buffer, or more header fields
/// than the guard's [`guard::MAX_HEADER_FIELDS`]): the guard's 431 `headers_too_large`,
/// OpenAI-shaped, instead of hyper's bare 431.
fn head_too_large_answer() -> Vec<u8> {
    let msg = format!(
        "request head too large (over the server's buffer or {} header fields)",
        guard::MAX_HEADER_FIELDS
    );
    whole_answer(&GuardError::new(431, "headers_too_large", msg))
}

/// A refusal as a whole HTTP/1.1 response on a closing connection (written by the net layer
/// before hyper sees the head).
fn whole_answer(r: &GuardError) -> Vec<u8> {
    let body = r.body();
    let reason = StatusCode::from_u16(r.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        r.status,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

async fn listen(
    host: &str,
    port: u16,
    reuse_port: bool,
) -> Result<tokio::net::TcpListener, String> {
    let cannot = |e: std::io::Error| format!("--port: cannot listen on {host}:{port}: {e}");
    if !reuse_port {
        return tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(cannot);
    }
    // a worker of a unit: every worker listens on the port with SO_REUSEPORT and the kernel
    // spreads connections over them
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(cannot)?
        .next()
        .ok_or_else(|| format!("--host: {host} resolves to no address"))?;
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(cannot)?;
    sock.set_reuseaddr(true).map_err(cannot)?;
    sock.set_reuseport(true).map_err(cannot)?;
    sock.bind(addr).map_err(cannot)?;
    sock.listen(2048).map_err(cannot)
}

/// Build the engine, bind, announce, serve until SIGTERM/SIGINT, drain the audit queue.
pub fn run(spec: ServerSpec) -> Result<(), String> {
    let ServerSpec {
        config,
        engine: options,
        server,
    } = spec;
    let unit = server.worker.as_ref().map(|w| Unit {
        index: w.index,
        count: w.count,
        dir: w.unit_dir.clone().into(),
        sharded: w.layout == "sharded",
    });
    let threads = options.threads;
    // before the runtime: the OTLP exporter's blocking HTTP client must not start inside it
    let engine = Arc::new(
        Engine::new(
            Spec {
                config,
                engine: options,
            },
            unit,
        )
        .map_err(|e| e.to_string())?,
    );
    let rt = gatewaylab_net::server::build_runtime(threads).map_err(|e| format!("runtime: {e}"))?;
    let e = Arc::clone(&engine);
    let result = rt.block_on(async move {
        let listener = listen(&server.host, server.port, server.reuse_port).await?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let plugins = &e.config().plugins;
        if !plugins.pre_call.is_empty() {
            let sidecar = Sidecar::start(
                &server.python,
                &plugins.pre_call,
                Duration::from_secs_f64(plugins.timeout_ms / 1000.0),
                plugins.max_in_flight,
                Duration::from_secs(60),
            )
            .await?;
            e.set_pre_call(Box::new(sidecar));
        }
        let max_header = e.config().pipeline.max_header_bytes as usize;
        let limits = gatewaylab_net::server::Limits {
            max_connections: 4096,
            // above the guard's own limit, so its 431 headers_too_large answers first
            max_header_bytes: max_header.saturating_mul(2).max(16 * 1024) + 4096,
            header_read_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(30)),
            drain_timeout: Duration::from_secs(30),
            head_check: Some(Arc::new(raw_head_check)),
            // a head over hyper's buffer or field count: the guard's 431, OpenAI-shaped, not
            // hyper's bare one (the Python rungs give the same: gateway/framing.py, guard.py)
            head_too_large: Some(head_too_large_answer()),
            max_header_fields: guard::MAX_HEADER_FIELDS,
        };
        if let Some(unit) = e.unit() {
            // a worker of a unit: its peers reach its shard here (bound before it announces)
            let listener = unit.bind()?;
            let g = Arc::clone(&e);
            gatewaylab_engine::unit::serve(listener, move |req| g.control_answer(req));
        }
        let sig = gatewaylab_net::server::termination_signal();
        println!("gateway listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let shell = Arc::new(Shell::new(Arc::clone(&e)));
        let served = gatewaylab_net::server::serve(
            listener,
            limits,
            move |_| {
                let shell = Arc::clone(&shell);
                hyper::service::service_fn(move |req| {
                    let shell = Arc::clone(&shell);
                    async move {
                        // a panic in one request is that request's 500, never the process's end
                        let fut = AssertUnwindSafe(Arc::clone(&shell).handle(req));
                        let resp = match futures_util::FutureExt::catch_unwind(fut).await {
                            Ok(r) => r,
                            Err(_) => {
                                shell.engine.metrics.count_request("other", 500);
                                let msg = "internal error while serving the request";
                                error(500, msg, "internal_error")
                            }
                        };
                        Ok::<_, Infallible>(resp)
                    }
                })
            },
            sig,
        )
        .await
        .map_err(|e| e.to_string());
        // in-flight requests have finished (or the drain timed out); their audit hand-offs
        // run as tasks behind the answers: let them, then empty the audit queue
        let deadline = Instant::now() + Duration::from_secs(5);
        while e.pending_handoffs() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let drained = tokio::task::spawn_blocking(move || e.drain())
            .await
            .map_err(|e| e.to_string())?;
        served.and(drained)
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    engine.shutdown_tracing(); // export what the last requests recorded
    result
}
