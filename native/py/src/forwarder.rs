//! Forwarder twin, native half: `native/net`'s pooled upstream client (the one HTTP client of
//! the Rust rungs) on a shared Tokio runtime, awaited from asyncio through
//! pyo3-async-runtimes. The asyncio loop awaits a plain future while the request runs on the
//! Tokio threads, so the GIL is free the whole time.
//!
//! Errors are builtin exceptions that `gateway/stages/rust_forwarder.py` maps to the
//! gateway's UpstreamError classes: `TimeoutError` (no answer / no data in time),
//! `ConnectionError` (refused, reset, closed early), `InvalidInput` (a bad URL or header,
//! raised by the call itself: nothing is sent).
use crate::entry;
use crate::errors::{guard, invalid_input};
use bytes::Bytes;
use gatewaylab_net::client::{Failure, Upstream};
use hyper::body::Incoming;
use pyo3::exceptions::{PyConnectionError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio::sync::Mutex;

/// The runtime is shared by every forwarder; two worker threads serve a gateway core's
/// traffic (the work per request is a few microseconds of parsing) without competing
/// with the Python thread for more than one core.
fn init_runtime() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2)
            .thread_name("gatewaylab-fwd")
            .enable_all();
        pyo3_async_runtimes::tokio::init(b);
    });
}

fn py_err(f: Failure, what: &str) -> PyErr {
    match f {
        Failure::Timeout(m) => PyTimeoutError::new_err(format!("{what}: {m}")),
        Failure::Unavailable(m) => PyConnectionError::new_err(format!("{what}: {m}")),
        Failure::Invalid(m) => invalid_input(format!("forwarder: {m}")),
    }
}

fn timeout_err(what: &str, secs: f64) -> PyErr {
    PyTimeoutError::new_err(format!("{what}: no data for {secs}s"))
}

#[pyclass(name = "NativeForwarder", module = "gateway._native", frozen)]
pub struct PyNativeForwarder {
    client: std::sync::Mutex<Option<Upstream>>,
    timeout: Duration,
}

fn secs(name: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid_input(format!(
                "NativeForwarder: {name} must be a positive number of seconds, got {v}"
            ))
        })
}

impl PyNativeForwarder {
    fn client(&self) -> PyResult<Upstream> {
        // the error object is made after the lock is released (docs/interpreters.md)
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        client.ok_or_else(|| PyConnectionError::new_err("forwarder is closed"))
    }

    /// The client and the request, made now: a bad URL or header raises here, unsent.
    fn prepare(
        &self,
        url: &str,
        body: &[u8],
        headers: &[(String, String)],
    ) -> PyResult<(Upstream, Request)> {
        let req = Upstream::request(url, headers, Bytes::copy_from_slice(body))
            .map_err(|f| py_err(f, "upstream request"))?;
        Ok((self.client()?, req))
    }
}

type Request = hyper::Request<http_body_util::Full<Bytes>>;

#[pymethods]
impl PyNativeForwarder {
    #[new]
    #[pyo3(signature = (timeout_s = 30.0, pool = 256, connect_timeout_s = 5.0))]
    fn new(timeout_s: f64, pool: usize, connect_timeout_s: f64) -> PyResult<Self> {
        let _c = entry!("forwarder.new");
        guard(|| {
            init_runtime();
            let timeout = secs("timeout_s", timeout_s)?;
            let connect = secs("connect_timeout_s", connect_timeout_s)?;
            // the client spawns nothing until used; building it needs no runtime context
            Ok(Self {
                client: std::sync::Mutex::new(Some(Upstream::new(pool, timeout, connect))),
                timeout,
            })
        })
    }

    /// send(url, body, headers) -> awaitable (status, body): the whole exchange within timeout_s.
    fn send<'py>(
        &self,
        py: Python<'py>,
        url: &str,
        body: &[u8],
        headers: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _c = entry!("forwarder.send");
        guard(|| {
            let (up, req) = self.prepare(url, body, &headers)?;
            let total = self.timeout;
            pyo3_async_runtimes::tokio::future_into_py(py, async move {
                let exchange = async {
                    let r = up
                        .send(req)
                        .await
                        .map_err(|f| py_err(f, "upstream request failed"))?;
                    let status = r.status().as_u16();
                    let b = up
                        .collect(&mut r.into_body())
                        .await
                        .map_err(|f| py_err(f, "upstream body failed"))?;
                    Ok::<_, PyErr>((status, b))
                };
                let (status, b) = tokio::time::timeout(total, exchange)
                    .await
                    .map_err(|_| timeout_err("upstream request", total.as_secs_f64()))??;
                Ok((status, BytesOut(b)))
            })
        })
    }

    /// open_stream(url, body, headers) -> awaitable (status, NativeStream) once the headers
    /// have arrived (within timeout_s).
    fn open_stream<'py>(
        &self,
        py: Python<'py>,
        url: &str,
        body: &[u8],
        headers: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _c = entry!("forwarder.open_stream");
        guard(|| {
            let (up, req) = self.prepare(url, body, &headers)?;
            pyo3_async_runtimes::tokio::future_into_py(py, async move {
                let r = up
                    .send(req)
                    .await
                    .map_err(|f| py_err(f, "upstream request failed"))?;
                let status = r.status().as_u16();
                Ok((
                    status,
                    PyNativeStream {
                        body: Arc::new(Mutex::new(Some(r.into_body()))),
                        up,
                    },
                ))
            })
        })
    }

    /// Drop the pooled connections; later requests fail with ConnectionError.
    fn close(&self) {
        let _c = entry!("forwarder.close");
        self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// `Bytes` returned as `bytes`.
struct BytesOut(Bytes);

impl<'py> IntoPyObject<'py> for BytesOut {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

/// An open streaming response: `next_chunk()` awaits the next piece of the body as it
/// arrives (None at the end), each read within timeout_s.
#[pyclass(name = "NativeStream", module = "gateway._native", frozen)]
pub struct PyNativeStream {
    body: Arc<Mutex<Option<Incoming>>>,
    up: Upstream,
}

#[pymethods]
impl PyNativeStream {
    fn next_chunk<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let _c = entry!("forwarder.next_chunk");
        let (body, up) = (Arc::clone(&self.body), self.up.clone());
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut guard = body.lock().await;
            let Some(b) = guard.as_mut() else {
                return Ok(None);
            };
            loop {
                match up.next_chunk(b).await {
                    Err(f) => return Err(py_err(f, "upstream stream failed")),
                    Ok(Some(c)) if c.is_empty() => continue,
                    Ok(Some(c)) => return Ok(Some(BytesOut(c))),
                    Ok(None) => {
                        guard.take();
                        return Ok(None);
                    }
                }
            }
        })
    }

    /// The rest of the body at once (for an error status).
    fn read_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let _c = entry!("forwarder.read_all");
        let (body, up) = (Arc::clone(&self.body), self.up.clone());
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let Some(mut b) = body.lock().await.take() else {
                return Ok(BytesOut(Bytes::new()));
            };
            let all = up
                .collect(&mut b)
                .await
                .map_err(|f| py_err(f, "upstream body failed"))?;
            Ok(BytesOut(all))
        })
    }

    /// Drop the response now (closing its connection if unfinished).
    fn close(&self) {
        let _c = entry!("forwarder.stream_close");
        if let Ok(mut g) = self.body.try_lock() {
            g.take();
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyNativeForwarder>()?;
    m.add_class::<PyNativeStream>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn failures_map_to_timeout_connection_and_invalid_input() {
        crate::test_python();
        // an upstream that accepts and never answers -> timeout; a closed port -> connection error
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_url = format!("http://{}/", silent.local_addr().unwrap());
        let held = std::thread::spawn(move || {
            let (mut s, _) = silent.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf); // read the request, then say nothing until the client gives up
            std::thread::sleep(Duration::from_millis(600));
        });
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let up = Upstream::new(4, Duration::from_millis(200), Duration::from_secs(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let timeout = rt.block_on(up.post(&silent_url, &[], Bytes::from_static(b"{}")));
        let refused = rt.block_on(up.post(&closed_url, &[], Bytes::from_static(b"{}")));
        let bad = Upstream::request(
            "http://127.0.0.1:9/",
            &[("bad header".into(), "v".into())],
            Bytes::new(),
        );
        Python::attach(|py| {
            let t = py_err(timeout.err().unwrap(), "upstream request failed");
            assert!(t.is_instance_of::<PyTimeoutError>(py), "{t}");
            let c = py_err(refused.err().unwrap(), "upstream request failed");
            assert!(c.is_instance_of::<PyConnectionError>(py), "{c}");
            assert!(
                c.to_string()
                    .starts_with("ConnectionError: upstream request failed: "),
                "{c}"
            );
            let e = py_err(bad.err().unwrap(), "upstream request");
            let name = e.get_type(py).name().unwrap().to_string();
            assert!(name.contains("InvalidInput"), "{e}");
        });
        held.join().unwrap();
        // a closed forwarder refuses at once
        let f = PyNativeForwarder::new(1.0, 4, 1.0).unwrap();
        f.close();
        Python::attach(|py| {
            assert!(f
                .client()
                .err()
                .unwrap()
                .is_instance_of::<PyConnectionError>(py))
        });
    }
}
