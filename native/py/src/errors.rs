//! Errors raised by the Rust twins are the *same classes* the Python twins raise
//! (`gateway.errors`), so a caller catches one type whichever twin runs.
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn class(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<Py<PyType>> {
    cell.get_or_try_init(py, || {
        let m = py.import("gateway.errors")?;
        Ok::<_, PyErr>(m.getattr(name)?.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.clone_ref(py))
}

macro_rules! py_error {
    ($fn:ident, $name:literal) => {
        pub fn $fn(msg: impl Into<String>) -> PyErr {
            static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
            let msg: String = msg.into();
            Python::attach(|py| match class(py, &CELL, $name) {
                Ok(t) => PyErr::from_type(t.into_bound(py), msg),
                Err(e) => e,
            })
        }
    };
}

py_error!(native_panic, "NativePanic");
py_error!(proof_error, "ProofError");
py_error!(index_error, "AuditIndexError");
py_error!(wal_error, "WalError");
py_error!(wal_corrupt, "WalCorruptError");
py_error!(wal_locked, "WalLockedError");
py_error!(invalid_input, "InvalidInput");
py_error!(config_error, "ConfigError");
py_error!(store_corrupt, "StoreCorruptError");

/// Run an entry point's body so that a Rust panic becomes `gateway.errors.NativePanic`
/// instead of aborting or surfacing as pyo3's BaseException-derived PanicException.
pub fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = if let Some(s) = payload.downcast_ref::<&str>() {
                s.to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic".to_string()
            };
            Err(native_panic(format!("Rust panic: {msg}")))
        }
    }
}
