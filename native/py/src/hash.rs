//! Hashing twin (`gateway.audit.hashing`), plus the argument helpers the audit bindings share.
//!
//! `sha256_hex(data) -> str`: lowercase hex SHA-256; bodies over `DETACH_BYTES` are hashed
//! with the GIL released.
//!
//! `sha256_many(payloads, with_nodes=False) -> None`: the SHA-256 bound for the MMR
//! benchmark. It hashes every payload as an MMR leaf (`H(0x00‖p)`) with the GIL released
//! and discards the results, so a benchmark can time the pure hashing cost of the same
//! leaves it feeds `MerkleMountainRange.append_many`. With `with_nodes=True` it also does
//! the `n - popcount(n)` 65-byte node hashes an MMR of n leaves computes — all of the
//! SHA-256 work of an MMR append and nothing else (no tree bookkeeping, no storage). A leaf
//! is one SHA-256 block and a node two, so an MMR batch can reach at most about a third of
//! the leaves-only bound; `with_nodes=True` is the bound an MMR can actually approach.
//!
//! Payload arguments accept `bytes` (borrowed, no copy), `bytearray` and `memoryview`
//! (copied first, since they can change while the GIL is released) — the same set the
//! Python twins accept. Anything else is `InvalidInput`.
use crate::entry;
use crate::errors::{guard, invalid_input};
use gatewaylab_core::hash;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyInt, PyMemoryView, PyString};
use std::borrow::Cow;

/// Inputs larger than this are hashed detached; below it the work is well under a
/// microsecond and releasing the GIL would cost more than it saves.
pub(crate) const DETACH_BYTES: usize = 2048;

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".into())
}

/// The bytes of a bytes-like argument: `bytes` borrowed, `bytearray`/`memoryview` copied.
pub(crate) fn bytes_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let b = obj.call_method0("tobytes")?;
        let b = b.cast::<PyBytes>().map_err(|_| invalid_input(format!("{what}: memoryview.tobytes() did not return bytes")))?;
        return Ok(Cow::Owned(b.as_bytes().to_vec()));
    }
    Err(invalid_input(format!("{what} must be bytes, not {}", type_name(obj))))
}

/// The items of a batch argument, kept alive so their bytes can be borrowed while detached.
/// A single bytes-like or str value is refused (it would iterate as ints/chars).
pub(crate) fn batch_items<'py>(obj: &Bound<'py, PyAny>, func: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
        || obj.is_instance_of::<PyMemoryView>()
        || obj.is_instance_of::<PyString>()
    {
        return Err(invalid_input(format!("{func} takes a sequence of bytes payloads, not a single value")));
    }
    let it = obj
        .try_iter()
        .map_err(|_| invalid_input(format!("{func} takes a sequence of bytes, not {}", type_name(obj))))?;
    it.collect()
}

/// Every item's bytes (all-or-nothing: the first bad item is an `InvalidInput` naming it).
pub(crate) fn batch_bytes<'a>(items: &'a [Bound<'_, PyAny>]) -> PyResult<Vec<Cow<'a, [u8]>>> {
    items.iter().enumerate().map(|(i, o)| bytes_arg(o, &format!("payload {i}"))).collect()
}

/// A non-negative index-like int. `bool` and non-int -> InvalidInput; negative or beyond
/// u64 -> `Ok(None)` so the caller raises its out-of-range error with its own wording.
pub(crate) fn index_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<u64>> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(invalid_input(format!("{what} must be int, not {}", type_name(obj))));
    }
    Ok(obj.extract::<u64>().ok())
}

/// sha256_hex(data: bytes) -> str
#[pyfunction]
pub fn sha256_hex(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut call = entry!("sha256_hex");
    guard(|| {
        let b = bytes_arg(data, "data")?;
        Ok(if b.len() > DETACH_BYTES { call.detach(py, || hash::sha256_hex(&b)) } else { hash::sha256_hex(&b) })
    })
}

/// sha256_many(payloads: Iterable[bytes], with_nodes: bool = False) -> None
#[pyfunction]
#[pyo3(signature = (payloads, with_nodes = false))]
pub fn sha256_many(py: Python<'_>, payloads: &Bound<'_, PyAny>, with_nodes: bool) -> PyResult<()> {
    let mut call = entry!("sha256_many");
    guard(|| {
        let items = batch_items(payloads, "sha256_many")?;
        let slices = batch_bytes(&items)?;
        let h = call.detach(py, || hash::hash_work(slices.iter().map(|s| &s[..]), with_nodes));
        std::hint::black_box(h);
        Ok(())
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sha256_hex, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_many, m)?)?;
    Ok(())
}
