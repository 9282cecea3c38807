//! Entropy twin (`gateway.audit.entropy`):
//! `entropy_millibits(body: bytes) -> int` (OpenAI chat-completion JSON; not JSON ->
//! InvalidInput) and `text_entropy_millibits(text: str) -> int` (the text branch alone).
//! JSON parsing is always done detached; text over `DETACH_BYTES` too.
//!
//! The Python twin normalises with the built-in `sum()`, whose float algorithm changed in
//! Python 3.12 (Neumaier compensation); the binding asks the running interpreter which one
//! it has, so the twins agree to the bit on every version.
use crate::convert::{bytes_arg, type_name, DETACH_BYTES};
use crate::entry;
use crate::errors::{guard, invalid_input};
use gatewaylab_core::entropy::{self, PySum};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

fn sum_mode(py: Python<'_>) -> PySum {
    if py.version_info() >= (3, 12) {
        PySum::Neumaier
    } else {
        PySum::Plain
    }
}

#[pyfunction]
pub fn entropy_millibits(py: Python<'_>, body: &Bound<'_, PyAny>) -> PyResult<i64> {
    let mut call = entry!("entropy_millibits");
    guard(|| {
        let b = bytes_arg(body, "body")?;
        let mode = sum_mode(py);
        call.detach(py, || entropy::entropy_millibits(&b, mode))
            .map_err(|e| invalid_input(format!("response body is not valid JSON: {}", e.0)))
    })
}

#[pyfunction]
pub fn text_entropy_millibits(py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<i64> {
    let mut call = entry!("text_entropy_millibits");
    guard(|| {
        let s = text
            .cast::<PyString>()
            .map_err(|_| invalid_input(format!("text must be str, not {}", type_name(text))))?;
        // A str with lone surrogates has no UTF-8 form; Python's surrogatepass bytes split
        // and compare exactly like the str does.
        let owned;
        let bytes: &[u8] = match s.to_str() {
            Ok(t) => t.as_bytes(),
            Err(_) => {
                owned = s
                    .call_method1("encode", ("utf-8", "surrogatepass"))?
                    .cast_into::<PyBytes>()?;
                owned.as_bytes()
            }
        };
        Ok(if bytes.len() > DETACH_BYTES {
            call.detach(py, || entropy::text_entropy_millibits_bytes(bytes))
        } else {
            entropy::text_entropy_millibits_bytes(bytes)
        })
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(entropy_millibits, m)?)?;
    m.add_function(wrap_pyfunction!(text_entropy_millibits, m)?)?;
    Ok(())
}
