//! `WriteAheadLog` — the Rust twin of `gateway.audit.wal.WriteAheadLog`, with exactly the
//! Protocol's API (`gateway/audit/protocols.py`): same file bytes, same recovery, same lock.
//!
//! Every method that touches the file (open + recovery, append, append_many, flush, close,
//! replay) runs with the GIL released. Group commit uses a writer-side flusher thread in the
//! core (`gatewaylab_core::wal`), which never touches Python. `count`/`durable_count` and
//! the lock are the core's; a writer busy in an fsync never blocks the GIL.
use crate::convert::{batch_bytes, batch_items, bytes_arg, type_name};
use crate::entry;
use crate::errors::{guard, invalid_input, wal_error, wal_locked};
use gatewaylab_core::wal::{self, FsyncPolicy, WalError, WalWriter};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};
use std::path::PathBuf;

#[pyclass(name = "WriteAheadLog", module = "gateway._native", frozen)]
pub struct PyWriteAheadLog {
    inner: WalWriter,
    path: String,
}

/// Core error -> the shared exception classes (`WalCorruptError` carries `.offset`).
pub(crate) fn wal_err(e: WalError) -> PyErr {
    match e {
        WalError::Corrupt { offset, message } => Python::attach(|py| {
            let made = py
                .import("gateway.errors")
                .and_then(|m| m.getattr("WalCorruptError"))
                .and_then(|c| c.call1((message.clone(), offset)));
            match made {
                Ok(exc) => PyErr::from_value(exc),
                Err(err) => err,
            }
        }),
        WalError::Locked(m) => wal_locked(m),
        WalError::Invalid(m) => invalid_input(m),
        WalError::Stopped(m) => wal_error(m),
        WalError::Io(e) => PyErr::from(e),
    }
}

/// `os.fspath(path)` as a str path (str or os.PathLike; bytes paths are refused).
pub(crate) fn path_arg(py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<String> {
    let fs = py
        .import("os")?
        .getattr("fspath")?
        .call1((path,))
        .map_err(|_| {
            invalid_input(format!(
                "path must be str or os.PathLike, not {}",
                type_name(path)
            ))
        })?;
    let s = fs
        .cast::<PyString>()
        .map_err(|_| invalid_input(format!("path must be a str path, not {}", type_name(&fs))))?;
    Ok(s.to_str()?.to_owned())
}

#[pymethods]
impl PyWriteAheadLog {
    /// WriteAheadLog(path, fsync="group", group_delay_ms=2.0, group_max_records=256)
    #[new]
    #[pyo3(
        signature = (path, fsync = None, group_delay_ms = None, group_max_records = None, trusted = None),
        text_signature = "(path, fsync='group', group_delay_ms=2.0, group_max_records=256, trusted=None)"
    )]
    fn new(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        fsync: Option<&Bound<'_, PyAny>>,
        group_delay_ms: Option<&Bound<'_, PyAny>>,
        group_max_records: Option<&Bound<'_, PyAny>>,
        trusted: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut call = entry!("wal.open");
        guard(|| {
            let policy = match fsync {
                None => FsyncPolicy::Group,
                Some(f) => {
                    let s = f.cast::<PyString>().map_err(|_| {
                        invalid_input(format!(
                            "fsync policy {}: expected one of always, group, none",
                            repr(f)
                        ))
                    })?;
                    FsyncPolicy::parse(s.to_str()?).map_err(wal_err)?
                }
            };
            let max = match group_max_records {
                None => 256,
                Some(v) => match (
                    v.is_instance_of::<PyBool>(),
                    v.is_instance_of::<PyInt>(),
                    v.extract::<u64>(),
                ) {
                    (false, true, Ok(n)) if n >= 1 => n,
                    _ => {
                        return Err(invalid_input(format!(
                            "group_max_records must be a positive int, got {}",
                            repr(v)
                        )))
                    }
                },
            };
            let delay = match group_delay_ms {
                None => 2.0,
                Some(v) => {
                    let number = !v.is_instance_of::<PyBool>()
                        && (v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>());
                    match v.extract::<f64>() {
                        Ok(d) if number && d.is_finite() && d >= 0.0 => d,
                        _ => {
                            return Err(invalid_input(format!(
                                "group_delay_ms must be a finite non-negative number, got {}",
                                repr(v)
                            )))
                        }
                    }
                }
            };
            let trusted = match trusted {
                None => None,
                Some(t) if t.is_none() => None,
                Some(t) => {
                    let bad = || {
                        invalid_input(format!("trusted must be (records, offset) with offset >= 8 at a frame boundary, got {}", repr(t)))
                    };
                    let tup = t.cast::<pyo3::types::PyTuple>().map_err(|_| bad())?;
                    if tup.len() != 2 {
                        return Err(bad());
                    }
                    let mut v = [0u64; 2];
                    for (k, item) in tup.iter().enumerate() {
                        if item.is_instance_of::<PyBool>() || !item.is_instance_of::<PyInt>() {
                            return Err(bad());
                        }
                        v[k] = item.extract::<u64>().map_err(|_| bad())?;
                    }
                    Some((v[0], v[1]))
                }
            };
            let path = path_arg(py, path)?;
            let p = PathBuf::from(&path);
            let inner = call
                .detach(py, || {
                    WalWriter::open_trusted(&p, policy, delay, max, trusted)
                })
                .map_err(wal_err)?;
            Ok(Self { inner, path })
        })
    }

    /// Append one record; returns its index (0-based).
    fn append(&self, py: Python<'_>, payload: &Bound<'_, PyAny>) -> PyResult<u64> {
        let mut call = entry!("wal.append");
        guard(|| {
            let p = bytes_arg(payload, "payload")?;
            call.detach(py, || self.inner.append(&p)).map_err(wal_err)
        })
    }

    /// Append a batch (one write; one fsync under "group", one per record under "always");
    /// returns the new record count. All-or-nothing on bad input.
    fn append_many(&self, py: Python<'_>, payloads: &Bound<'_, PyAny>) -> PyResult<u64> {
        let mut call = entry!("wal.append_many");
        guard(|| {
            let items = batch_items(payloads, "append_many")?;
            let slices = batch_bytes(&items)?;
            call.detach(py, || {
                let refs: Vec<&[u8]> = slices.iter().map(|s| &s[..]).collect();
                self.inner.append_many(&refs)
            })
            .map_err(wal_err)
        })
    }

    /// Make every appended record durable now (fsync unless policy "none").
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let mut call = entry!("wal.flush");
        guard(|| call.detach(py, || self.inner.flush()).map_err(wal_err))
    }

    /// Flush, fsync (unless "none"), release the lock. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut call = entry!("wal.close");
        guard(|| call.detach(py, || self.inner.close()).map_err(wal_err))
    }

    #[getter]
    fn count(&self) -> u64 {
        let _call = entry!("wal.count");
        self.inner.count()
    }

    /// Records known to be fsynced (== count after flush(); always == count under "always").
    #[getter]
    fn durable_count(&self) -> u64 {
        let _call = entry!("wal.durable_count");
        self.inner.durable_count()
    }

    /// {"records": int, "truncated_bytes": int} — what recovery found at open.
    #[getter]
    fn recovery<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let _call = entry!("wal.recovery");
        let r = self.inner.recovery();
        let d = PyDict::new(py);
        d.set_item("records", r.records)?;
        d.set_item("truncated_bytes", r.truncated_bytes)?;
        Ok(d)
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn fsync_policy(&self) -> &'static str {
        self.inner.policy().name()
    }

    /// The file's format version (2 for new files; 1 for a v1 file, appended to as v1).
    #[getter]
    fn version(&self) -> u8 {
        self.inner.version().number()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*exc))]
    fn __exit__(&self, py: Python<'_>, exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        let _ = exc;
        self.close(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "<WriteAheadLog {:?} v{} fsync={} records={}>",
            self.path,
            self.inner.version().number(),
            self.inner.policy().name(),
            self.inner.count()
        )
    }

    /// Every record's payload, without taking the lock and without modifying the file
    /// (a torn tail is ignored; corruption raises WalCorruptError). With `offset` (a frame
    /// boundary >= 8 the caller vouches for), only the records from that byte on.
    #[staticmethod]
    #[pyo3(signature = (path, offset = None), text_signature = "(path, offset=0)")]
    fn replay<'py>(
        py: Python<'py>,
        path: &Bound<'py, PyAny>,
        offset: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut call = entry!("wal.replay");
        guard(|| {
            let off = match offset {
                None => 0,
                Some(o) => match (
                    o.is_instance_of::<PyBool>(),
                    o.is_instance_of::<PyInt>(),
                    o.extract::<u64>(),
                ) {
                    (false, true, Ok(v)) if v == 0 || v >= 8 => v,
                    _ => {
                        return Err(invalid_input(format!(
                            "offset must be 0 or a frame boundary >= 8, got {}",
                            repr(o)
                        )))
                    }
                },
            };
            let p = PathBuf::from(path_arg(py, path)?);
            let (data, ranges) = call
                .detach(py, || wal::replay_from(&p, off))
                .map_err(wal_err)?;
            PyList::new(py, ranges.into_iter().map(|r| PyBytes::new(py, &data[r])))
        })
    }
}

impl Drop for PyWriteAheadLog {
    fn drop(&mut self) {
        // Closing fsyncs and joins the flusher: do it detached, never holding the GIL.
        if !self.inner.is_closed() {
            let inner = &self.inner;
            Python::attach(|py| py.detach(|| inner.close().ok()));
        }
    }
}

fn repr(o: &Bound<'_, PyAny>) -> String {
    o.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<?>".into())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyWriteAheadLog>()?;
    Ok(())
}
