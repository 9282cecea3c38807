//! Forwarder twin, native half: a pooled reqwest (hyper) client on a shared Tokio runtime,
//! awaited from asyncio through pyo3-async-runtimes. The asyncio loop awaits a plain
//! future while the request runs on the Tokio threads, so the GIL is free the whole time.
//!
//! Errors are builtin exceptions that `gateway/stages/rust_forwarder.py` maps to the
//! gateway's UpstreamError classes: `TimeoutError` (no answer / no data in time),
//! `ConnectionError` (refused, reset, closed early), `InvalidInput` (a bad URL or header).
use crate::entry;
use crate::errors::{guard, invalid_input};
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

/// An error with its chain of causes, as one line (`a: b: c`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// The pooled upstream client both Rust rungs use (the forwarder twin and rs-core).
pub(crate) fn upstream_client(
    connect_timeout: Duration,
    pool: usize,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .no_proxy()
        .build()
}

fn map_err(e: reqwest::Error, what: &str) -> PyErr {
    let msg = error_chain(&e);
    if e.is_timeout() {
        PyTimeoutError::new_err(format!("{what}: {msg}"))
    } else if e.is_builder() {
        invalid_input(format!("{what}: {msg}"))
    } else {
        PyConnectionError::new_err(format!("{what}: {msg}"))
    }
}

fn timeout_err(what: &str, secs: f64) -> PyErr {
    PyTimeoutError::new_err(format!("{what}: no data for {secs}s"))
}

#[pyclass(name = "NativeForwarder", module = "gateway._native", frozen)]
pub struct PyNativeForwarder {
    client: std::sync::Mutex<Option<reqwest::Client>>,
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
    fn request(
        &self,
        url: &str,
        body: &[u8],
        headers: Vec<(String, String)>,
    ) -> PyResult<reqwest::RequestBuilder> {
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| PyConnectionError::new_err("forwarder is closed"))?;
        let mut rb = client.post(url).body(body.to_vec());
        if body.is_empty() {
            // hyper sends no Content-Length for an empty body; RFC 9110 (8.6) wants one on a
            // POST, and the Python twin (aiohttp) sends `Content-Length: 0`
            rb = rb.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| invalid_input(format!("forwarder: bad header name {k:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(&v)
                .map_err(|_| invalid_input(format!("forwarder: bad value for header {k:?}")))?;
            rb = rb.header(name, value);
        }
        Ok(rb)
    }
}

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
            // reqwest's client spawns nothing until used; building it needs no runtime context.
            let client = upstream_client(connect, pool)
                .map_err(|e| invalid_input(format!("NativeForwarder: {e}")))?;
            Ok(Self {
                client: std::sync::Mutex::new(Some(client)),
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
            let rb = self.request(url, body, headers)?.timeout(self.timeout);
            let total = self.timeout.as_secs_f64();
            pyo3_async_runtimes::tokio::future_into_py(py, async move {
                let fut = async {
                    let r = rb
                        .send()
                        .await
                        .map_err(|e| map_err(e, "upstream request failed"))?;
                    let status = r.status().as_u16();
                    let b = r
                        .bytes()
                        .await
                        .map_err(|e| map_err(e, "upstream body failed"))?;
                    Ok::<_, PyErr>((status, b.to_vec()))
                };
                let (status, b) = tokio::time::timeout(Duration::from_secs_f64(total), fut)
                    .await
                    .map_err(|_| timeout_err("upstream request", total))??;
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
            let rb = self.request(url, body, headers)?;
            let timeout = self.timeout;
            pyo3_async_runtimes::tokio::future_into_py(py, async move {
                let r = tokio::time::timeout(timeout, rb.send())
                    .await
                    .map_err(|_| timeout_err("upstream stream", timeout.as_secs_f64()))?
                    .map_err(|e| map_err(e, "upstream request failed"))?;
                let status = r.status().as_u16();
                Ok((
                    status,
                    PyNativeStream {
                        resp: Arc::new(Mutex::new(Some(r))),
                        timeout,
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

/// `Vec<u8>` returned as `bytes`.
struct BytesOut(Vec<u8>);

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
    resp: Arc<Mutex<Option<reqwest::Response>>>,
    timeout: Duration,
}

#[pymethods]
impl PyNativeStream {
    fn next_chunk<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let _c = entry!("forwarder.next_chunk");
        let resp = self.resp.clone();
        let timeout = self.timeout;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut guard = resp.lock().await;
            let Some(r) = guard.as_mut() else {
                return Ok(None);
            };
            loop {
                let c = tokio::time::timeout(timeout, r.chunk())
                    .await
                    .map_err(|_| timeout_err("upstream stream", timeout.as_secs_f64()))?
                    .map_err(|e| map_err(e, "upstream stream failed"))?;
                match c {
                    Some(b) if b.is_empty() => continue,
                    Some(b) => return Ok(Some(BytesOut(b.to_vec()))),
                    None => {
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
        let resp = self.resp.clone();
        let timeout = self.timeout;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let r = resp.lock().await.take();
            let Some(r) = r else {
                return Ok(BytesOut(Vec::new()));
            };
            let b = tokio::time::timeout(timeout, r.bytes())
                .await
                .map_err(|_| timeout_err("upstream stream", timeout.as_secs_f64()))?
                .map_err(|e| map_err(e, "upstream body failed"))?;
            Ok(BytesOut(b.to_vec()))
        })
    }

    /// Drop the response now (closing its connection if unfinished).
    fn close(&self) {
        let _c = entry!("forwarder.stream_close");
        if let Ok(mut g) = self.resp.try_lock() {
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

    fn forwarder(timeout_s: f64) -> PyNativeForwarder {
        crate::test_python();
        PyNativeForwarder::new(timeout_s, 4, 1.0).unwrap()
    }

    #[test]
    fn every_post_carries_its_content_length() {
        let f = forwarder(1.0);
        for body in [&b""[..], b"{}", &[7u8; 3000][..]] {
            let req = f
                .request(
                    "http://127.0.0.1:9/v1/x?y=1",
                    body,
                    vec![("x-a".into(), "b".into())],
                )
                .unwrap()
                .build()
                .unwrap();
            assert_eq!(req.method(), reqwest::Method::POST);
            assert_eq!(req.headers()["x-a"], "b");
            if body.is_empty() {
                assert_eq!(req.headers()["content-length"], "0");
            }
        }
    }

    #[test]
    fn bad_header_and_closed_forwarder_are_errors_of_the_right_class() {
        let f = forwarder(1.0);
        Python::attach(|py| {
            let e = f
                .request(
                    "http://127.0.0.1:9/",
                    b"",
                    vec![("bad header".into(), "v".into())],
                )
                .err()
                .unwrap();
            assert!(
                e.get_type(py)
                    .name()
                    .unwrap()
                    .to_string()
                    .contains("InvalidInput"),
                "{e}"
            );
            let e = f
                .request(
                    "http://127.0.0.1:9/",
                    b"",
                    vec![("x-ok".into(), "line\nbreak".into())],
                )
                .err()
                .unwrap();
            assert!(e.to_string().contains("bad value for header"), "{e}");
            f.close();
            let e = f.request("http://127.0.0.1:9/", b"", vec![]).err().unwrap();
            assert!(e.is_instance_of::<PyConnectionError>(py), "{e}");
        });
    }

    #[test]
    fn errors_map_to_timeout_and_connection_classes() {
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

        let f = forwarder(0.2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let timeout = rt.block_on(async {
            f.request(&silent_url, b"{}", vec![])
                .unwrap()
                .timeout(f.timeout)
                .send()
                .await
        });
        let refused =
            rt.block_on(async { f.request(&closed_url, b"{}", vec![]).unwrap().send().await });
        let (timeout, refused) = (timeout.err().unwrap(), refused.err().unwrap());
        Python::attach(|py| {
            let t = map_err(timeout, "upstream request failed");
            assert!(t.is_instance_of::<PyTimeoutError>(py), "{t}");
            let c = map_err(refused, "upstream request failed");
            assert!(c.is_instance_of::<PyConnectionError>(py), "{c}");
            assert!(
                c.to_string()
                    .starts_with("ConnectionError: upstream request failed: "),
                "{c}"
            );
        });
        held.join().unwrap();
    }
}
