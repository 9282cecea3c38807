//! Rung 2 (`rs-core`): the engine (native/engine) behind the Python shell.
//!
//! `RsCore(spec_json)`: spec_json is gateway/config.py's `engine_spec` (the normalized
//! config and the engine's options). `submit([(token, headers, body), ...])` returns at
//! once; on a Tokio runtime, with the GIL released throughout, each request is admitted,
//! decided, forwarded and answered by the engine. Completions do not cross into asyncio one
//! future at a time (pyo3-async-runtimes creates an asyncio future, copies the task's
//! context and schedules a `call_soon_threadsafe` per call, ~36 µs of GIL per request here):
//! they are queued, and an eventfd the event loop watches is written only when the queue
//! goes from empty to non-empty. One `drain()` per wake-up hands every completion over at
//! once (gateway/rs_core.py sets the futures). Streams are a channel per stream;
//! `next_chunk` completes through the same queue.
//!
//! This file converts and crosses; everything the request path does is the engine's.
use crate::convert::bytes_arg;
use crate::entry;
use crate::errors::{guard, index_error, invalid_input};
use bytes::Bytes;
use gatewaylab_core::errors::error_body;
use gatewaylab_engine::metrics::{BUCKETS, COUNTERS, RUNS_AUDIT, RUN_STAGES, STAGES};
use gatewaylab_engine::{BuildError, Engine, Reply, Spec};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The items of a list of `n`-tuples, or InvalidInput(`what`).
fn tuples<'py>(
    list: &Bound<'py, PyAny>,
    n: usize,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyTuple>>> {
    let bad = || invalid_input(what.to_string());
    let mut out = Vec::new();
    for item in list.try_iter().map_err(|_| bad())? {
        let t = item?.cast_into::<PyTuple>().map_err(|_| bad())?;
        if t.len() != n {
            return Err(bad());
        }
        out.push(t);
    }
    Ok(out)
}

pub(crate) fn header_pairs(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for t in tuples(headers, 2, "headers must be a list of (bytes, bytes) pairs")? {
        out.push((
            bytes_arg(&t.get_item(0)?, "header name")?.into_owned(),
            bytes_arg(&t.get_item(1)?, "header value")?.into_owned(),
        ));
    }
    Ok(out)
}

fn pairs(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    headers
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect()
}

enum Done {
    Response {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    },
    Stream {
        sid: u64,
        request_id: String,
    },
    Chunk(Option<Bytes>),
}

/// A submitted request waiting for the dispatcher task.
struct Submitted {
    token: u64,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    t0: Instant,
}

/// A stream's chunks as the crossing holds them: the receiver, and the client's hang-up.
/// A `next_chunk` waiting on the receiver holds the slot, so removing it from the map is not
/// enough to drop the receiver (and so tell the relay): `close_stream` wakes the waiter too.
struct StreamSlot {
    rx: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    gone: tokio::sync::Notify,
}

type Chunks = Arc<StreamSlot>;

struct Shared {
    engine: Arc<Engine>,
    /// Submissions wait here; the dispatcher is woken only when the inbox turns non-empty
    /// (a wake-up of a parked Tokio worker is a syscall; under load one serves many).
    inbox: Mutex<Vec<Submitted>>,
    inbox_ready: tokio::sync::Notify,
    done: Mutex<Vec<(u64, Done)>>,
    efd: RawFd,
    streams: Mutex<HashMap<u64, Chunks>>,
    next_sid: AtomicU64,
    completed: AtomicU64,
    wakeups: AtomicU64,
}

impl Shared {
    fn complete(&self, token: u64, d: Done) {
        let was_empty = {
            let mut q = self.done.lock().unwrap_or_else(|e| e.into_inner());
            let e = q.is_empty();
            q.push((token, d));
            e
        };
        self.completed.fetch_add(1, Relaxed);
        if was_empty {
            // the queue went non-empty: one wake-up for the loop, however many follow
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a u64 we own to our eventfd.
            unsafe { libc::write(self.efd, &one as *const u64 as *const libc::c_void, 8) };
            self.wakeups.fetch_add(1, Relaxed);
        }
    }

    /// Complete a reply: a whole answer first, then its audit hand-off (waking the ledger
    /// thread may switch to it on a one-core gateway, and the client should not wait for
    /// that; the job is queued before this task ends, so a drain still finds it).
    fn reply(&self, token: u64, reply: Reply) {
        match reply {
            Reply::Whole {
                status,
                headers,
                body,
                handoff,
            } => {
                self.complete(
                    token,
                    Done::Response {
                        status,
                        headers,
                        body,
                    },
                );
                drop(handoff);
            }
            Reply::Stream { request_id, chunks } => {
                let sid = self.next_sid.fetch_add(1, Relaxed);
                self.streams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        sid,
                        Arc::new(StreamSlot {
                            rx: tokio::sync::Mutex::new(chunks),
                            gone: tokio::sync::Notify::new(),
                        }),
                    );
                self.complete(token, Done::Stream { sid, request_id });
            }
        }
    }
}

/// Answers a request whose task panicked: while armed, dropping it (as unwinding does)
/// completes the token with a 500, so the shell's future never waits forever and the
/// process goes on (Tokio contains the panic to the task).
struct PanicAnswer {
    sh: Arc<Shared>,
    token: u64,
    armed: bool,
}

impl Drop for PanicAnswer {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            let body = error_body(
                500,
                "internal error in the gateway (a Rust panic, contained)",
                "internal_error",
            );
            self.sh.complete(
                self.token,
                Done::Response {
                    status: 500,
                    headers: Vec::new(),
                    body: body.into(),
                },
            );
        }
    }
}

/// Spawns every submitted request onto the runtime (from inside it: no wake-up syscalls).
async fn dispatcher(sh: Arc<Shared>) {
    loop {
        sh.inbox_ready.notified().await;
        let batch = std::mem::take(&mut *sh.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        for s in batch {
            tokio::spawn(handle(Arc::clone(&sh), s));
        }
    }
}

async fn handle(sh: Arc<Shared>, s: Submitted) {
    let mut guard = PanicAnswer {
        sh: Arc::clone(&sh),
        token: s.token,
        armed: true,
    };
    let reply = match sh.engine.admit() {
        None => sh.engine.shed(),
        Some(permit) => {
            sh.engine
                .chat(permit, &pairs(&s.headers), s.body.into(), s.t0)
                .await
        }
    };
    sh.reply(s.token, reply);
    guard.armed = false;
}

#[pyclass(name = "RsCore", module = "gateway._native", frozen)]
pub struct PyRsCore {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    started: Instant,
}

impl PyRsCore {
    fn handle(&self) -> PyResult<tokio::runtime::Handle> {
        // the error object is made after the lock is released (docs/interpreters.md)
        let h = (self.runtime.lock().unwrap_or_else(|e| e.into_inner()))
            .as_ref()
            .map(|r| r.handle().clone());
        h.ok_or_else(|| invalid_input("RsCore is shut down"))
    }

    /// A proof from the ledger as JSON text, built detached; out of range -> AuditIndexError.
    fn prove(
        &self,
        py: Python<'_>,
        call: &mut crate::gil::Call,
        inclusion: bool,
        n: i64,
    ) -> PyResult<String> {
        guard(|| {
            let e = &self.shared.engine;
            let r = call.detach(py, || match u64::try_from(n) {
                Err(_) => {
                    let what = if inclusion { "leaf index" } else { "old count" };
                    Err(format!(
                        "{what} {n} out of range for an MMR of {} leaves",
                        e.root().0
                    ))
                }
                Ok(n) => e.prove(inclusion, n).map(|v| v.to_string()),
            });
            r.map_err(index_error)
        })
    }
}

#[pymethods]
impl PyRsCore {
    #[new]
    fn new(py: Python<'_>, spec_json: &str) -> PyResult<Self> {
        let _c = entry!("rs_core.new");
        guard(|| {
            let spec = Spec::from_json(spec_json).map_err(invalid_input)?;
            let threads = spec.engine.threads.max(1);
            // before the runtime: the OTLP exporter's blocking client must not start inside it
            let engine = py.detach(|| Engine::new(spec, None)).map_err(|e| match e {
                BuildError::Ledger { error, .. } => crate::wal::wal_err(error),
                BuildError::Other(m) => invalid_input(format!("RsCore: {m}")),
            })?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("gatewaylab-rs-core")
                .enable_all()
                .build()
                .map_err(|e| invalid_input(format!("RsCore: runtime: {e}")))?;
            // SAFETY: plain syscall; the fd is closed in Drop.
            let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if efd < 0 {
                let e = std::io::Error::last_os_error();
                return Err(invalid_input(format!("RsCore: eventfd: {e}")));
            }
            let shared = Arc::new(Shared {
                engine: Arc::new(engine),
                inbox: Mutex::new(Vec::new()),
                inbox_ready: tokio::sync::Notify::new(),
                done: Mutex::new(Vec::new()),
                efd,
                streams: Mutex::new(HashMap::new()),
                next_sid: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                wakeups: AtomicU64::new(0),
            });
            runtime.spawn(dispatcher(Arc::clone(&shared)));
            Ok(Self {
                shared,
                runtime: Mutex::new(Some(runtime)),
                started: Instant::now(),
            })
        })
    }

    /// The eventfd that becomes readable when completions are waiting (for loop.add_reader).
    fn fileno(&self) -> RawFd {
        self.shared.efd
    }

    /// submit(requests): start chat requests, each a (token, headers, body) tuple; each
    /// completion arrives through drain() as (token, (status, headers, body, None)) or, for a
    /// stream, (token, (200, headers, None, stream_id)). The shell hands over every request
    /// its event loop read in one iteration at once: one wake-up of the runtime for all.
    fn submit(&self, py: Python<'_>, requests: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut call = entry!("rs_core.submit");
        guard(|| {
            let t0 = Instant::now();
            let mut batch = Vec::new();
            for t in tuples(requests, 3, "submit takes a list of (token, headers, body)")? {
                batch.push(Submitted {
                    token: t.get_item(0)?.extract()?,
                    headers: header_pairs(&t.get_item(1)?)?,
                    body: bytes_arg(&t.get_item(2)?, "body")?.into_owned(),
                    t0,
                });
            }
            self.handle()?;
            if batch.is_empty() {
                return Ok(());
            }
            let was_empty = {
                let mut inbox = self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
                let e = inbox.is_empty();
                inbox.append(&mut batch);
                e
            };
            if was_empty {
                // Waking the dispatcher wakes a Tokio worker, which on a one-core gateway may
                // run at once: never with the GIL held.
                let shared = Arc::clone(&self.shared);
                call.detach(py, move || shared.inbox_ready.notify_one());
            }
            Ok(())
        })
    }

    /// next_chunk(token, stream_id): the stream's next bytes complete as (token, bytes),
    /// or (token, None) at its end.
    fn next_chunk(&self, py: Python<'_>, token: u64, stream_id: u64) -> PyResult<()> {
        let mut call = entry!("rs_core.next_chunk");
        guard(|| {
            let sh = Arc::clone(&self.shared);
            let rx = sh
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&stream_id)
                .cloned();
            let Some(rx) = rx else {
                sh.complete(token, Done::Chunk(None));
                return Ok(());
            };
            let rt = self.handle()?;
            let task = async move {
                // one waiter at a time (Python awaits each chunk before asking for the next):
                // a hang-up before this waits leaves a permit, so it is never missed
                let c = tokio::select! {
                    c = async { rx.rx.lock().await.recv().await } => c,
                    _ = rx.gone.notified() => None,
                };
                if c.is_none() {
                    let mut streams = sh.streams.lock().unwrap_or_else(|e| e.into_inner());
                    streams.remove(&stream_id);
                }
                sh.complete(token, Done::Chunk(c));
            };
            call.detach(py, move || drop(rt.spawn(task)));
            Ok(())
        })
    }

    /// close_stream(stream_id): the client is gone; the relay stops and audits 499.
    fn close_stream(&self, stream_id: u64) {
        let _c = entry!("rs_core.close_stream");
        let mut streams = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = streams.remove(&stream_id) {
            slot.gone.notify_one(); // a waiting next_chunk lets go of the receiver
        }
    }

    /// Every completion waiting, as a list of (token, value); resets the eventfd first, so a
    /// completion queued during the call either comes now or writes the eventfd again.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let _c = entry!("rs_core.drain");
        guard(|| {
            let mut buf: u64 = 0;
            // SAFETY: reading 8 bytes into a u64 we own from our non-blocking eventfd.
            unsafe {
                libc::read(
                    self.shared.efd,
                    &mut buf as *mut u64 as *mut libc::c_void,
                    8,
                )
            };
            let items =
                std::mem::take(&mut *self.shared.done.lock().unwrap_or_else(|e| e.into_inner()));
            let bytes = |b: &[u8]| PyBytes::new(py, b);
            let out = PyList::empty(py);
            for (token, d) in items {
                let v: Bound<'py, PyAny> = match d {
                    Done::Response {
                        status,
                        headers,
                        body,
                    } => {
                        let h: Vec<_> = headers
                            .iter()
                            .map(|(k, v)| (bytes(k.as_bytes()), bytes(v.as_bytes())))
                            .collect();
                        (status, h, bytes(&body), py.None())
                            .into_pyobject(py)?
                            .into_any()
                    }
                    Done::Stream { sid, request_id } => {
                        let h = vec![(bytes(b"x-request-id"), bytes(request_id.as_bytes()))];
                        (200u16, h, py.None(), sid).into_pyobject(py)?.into_any()
                    }
                    Done::Chunk(Some(b)) => bytes(&b).into_any(),
                    Done::Chunk(None) => py.None().into_bound(py),
                };
                out.append((token, v))?;
            }
            Ok(out)
        })
    }

    /// (count, root, durable_count)
    fn root(&self, py: Python<'_>) -> PyResult<(u64, String, u64)> {
        let mut call = entry!("rs_core.root");
        guard(|| Ok(call.detach(py, || self.shared.engine.root())))
    }

    /// inclusion_proof(index) -> proof JSON text (AuditIndexError when out of range)
    fn inclusion_proof(&self, py: Python<'_>, index: i64) -> PyResult<String> {
        let mut call = entry!("rs_core.inclusion_proof");
        self.prove(py, &mut call, true, index)
    }

    /// consistency_proof(old_count) -> proof JSON text (AuditIndexError when out of range)
    fn consistency_proof(&self, py: Python<'_>, old_count: i64) -> PyResult<String> {
        let mut call = entry!("rs_core.consistency_proof");
        self.prove(py, &mut call, false, old_count)
    }

    /// Counters (every name in COUNTERS) and gauges for /metrics, and the crossing's own
    /// counts and the audit queue for /health.
    fn stats(&self) -> HashMap<&'static str, f64> {
        let _c = entry!("rs_core.stats");
        let s = &self.shared;
        let mut out: HashMap<&'static str, f64> = s.engine.stats().into_iter().collect();
        out.insert("completed", s.completed.load(Relaxed) as f64);
        out.insert("wakeups", s.wakeups.load(Relaxed) as f64);
        out.insert("uptime_ms", self.started.elapsed().as_millis() as f64);
        out
    }

    /// {stage: times it ran} of the core pipeline (gateway_stage_runs_total; "audit": stats()).
    fn stage_runs(&self) -> HashMap<&'static str, u64> {
        let _c = entry!("rs_core.stage_runs");
        self.shared.engine.stage_runs().into_iter().collect()
    }

    /// The stage histograms: {stage: (bucket counts, the last past every bound; sum ns)}.
    fn stage_histograms(&self) -> HashMap<&'static str, (Vec<u64>, u64)> {
        let _c = entry!("rs_core.stage_histograms");
        let m = &self.shared.engine.metrics;
        STAGES
            .iter()
            .zip(gatewaylab_engine::metrics::Stage::ALL)
            .map(|(name, s)| (*name, m.stage(s).snapshot()))
            .collect()
    }

    /// Stop the runtime (in-flight requests are abandoned: call after the server has
    /// finished them), then append every queued audit job and close the WAL.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        let mut call = entry!("rs_core.shutdown");
        guard(|| {
            let rt = self
                .runtime
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let r = call.detach(py, move || {
                if let Some(rt) = rt {
                    rt.shutdown_timeout(Duration::from_secs(5));
                }
                self.shared.engine.shutdown_tracing();
                self.shared.engine.drain()
            });
            r.map_err(|e| crate::errors::wal_error(format!("audit ledger drain failed: {e}")))
        })
    }
}

impl Drop for PyRsCore {
    fn drop(&mut self) {
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
        let _ = self.shared.engine.drain();
        // SAFETY: our fd, closed once.
        unsafe { libc::close(self.shared.efd) };
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // the metric names of every rung, one list each (gateway/metrics.py reads them)
    m.add("COUNTERS", COUNTERS.to_vec())?;
    m.add("STAGES", STAGES.to_vec())?;
    m.add("BUCKETS", BUCKETS.to_vec())?;
    m.add("RUN_STAGES", RUN_STAGES.to_vec())?;
    m.add("RUNS_AUDIT", RUNS_AUDIT)?;
    m.add_class::<PyRsCore>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(dir: &std::path::Path) -> PyRsCore {
        crate::test_python();
        let spec = serde_json::json!({
            "config": {
                "pipeline": {
                    "keys": [{"id": "k", "sha256": gatewaylab_core::hash::sha256_hex(b"sk"), "rpm": null, "tpm": null}],
                    "waf_rules": [], "passthrough": true, "max_body_bytes": 1000, "max_header_bytes": 1000,
                    "models": [{"name": "mock", "kind": "openai", "url": "http://127.0.0.1:9/v1/chat/completions", "model": "mock", "api_key": null}],
                    "stages": ["auth", "parse", "waf", "ratelimit", "adapter"], "audit": true,
                    "router": null, "deployments": [],
                },
                "ledger": {"dir": dir.to_str().unwrap(), "fsync": "none", "group_delay_ms": 1.0, "ack": "background"},
                "limits": {"upstream_timeout_s": 1.0, "upstream_pool": 4, "max_in_flight": 8},
                "plugins": {"pre_call": [], "timeout_ms": 200.0, "max_in_flight": 64},
                "tracing": {"mode": "off", "ratio": 0.0, "endpoint": "http://127.0.0.1:4318/v1/traces"},
            },
            "engine": {"rung": "rs-core", "threads": 1, "float_sum": "plain", "ledger_delay_ms": 0.0},
        });
        Python::attach(|py| PyRsCore::new(py, &spec.to_string()).unwrap())
    }

    fn taken(c: &PyRsCore) -> Vec<(u64, Done)> {
        std::mem::take(&mut *c.shared.done.lock().unwrap())
    }

    fn submitted(token: u64, headers: Vec<(Vec<u8>, Vec<u8>)>, body: &[u8]) -> Submitted {
        Submitted {
            token,
            headers,
            body: body.to_vec(),
            t0: Instant::now(),
        }
    }

    #[test]
    fn a_panicking_request_task_is_answered_500_and_the_core_goes_on() {
        let dir = std::env::temp_dir().join(format!("gl-rscore-panic-{}", std::process::id()));
        let c = core(&dir);
        let sh = Arc::clone(&c.shared);
        let rt = c.handle().unwrap();
        let joined = rt.block_on(rt.spawn(async move {
            let _guard = PanicAnswer {
                sh,
                token: 7,
                armed: true,
            };
            panic!("boom");
        }));
        assert!(joined.unwrap_err().is_panic());
        match taken(&c).as_slice() {
            [(
                7,
                Done::Response {
                    status: 500, body, ..
                },
            )] => {
                assert!(String::from_utf8_lossy(body).contains("\"code\":\"internal_error\""))
            }
            other => panic!(
                "expected one 500 for token 7, got {} completions",
                other.len()
            ),
        }
        // the same core still answers: a request without a key is a 401 with no upstream involved
        let sh = Arc::clone(&c.shared);
        rt.block_on(handle(sh, submitted(8, vec![], br#"{"model":"mock"}"#)));
        assert!(matches!(
            taken(&c).as_slice(),
            [(8, Done::Response { status: 401, .. })]
        ));
        // a task that finishes normally completes once, with no 500 from its disarmed guard
        let sh = Arc::clone(&c.shared);
        let auth = vec![(b"authorization".to_vec(), b"Bearer sk".to_vec())];
        rt.block_on(handle(sh, submitted(9, auth, b"{")));
        assert!(matches!(
            taken(&c).as_slice(),
            [(9, Done::Response { status: 400, .. })]
        ));
        Python::attach(|py| c.shutdown(py)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
