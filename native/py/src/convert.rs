//! Argument conversion shared by every binding file (one reader per kind of argument).
//!
//! Payload arguments accept `bytes` (borrowed, no copy), `bytearray` and `memoryview`
//! (copied first, since they can change while the GIL is released) — the same set the
//! Python twins accept. Anything else is `InvalidInput`.
use crate::errors::invalid_input;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyInt, PyMemoryView, PyString};
use std::borrow::Cow;

/// Inputs larger than this are hashed detached; below it the work is well under a
/// microsecond and releasing the GIL would cost more than it saves.
pub(crate) const DETACH_BYTES: usize = 2048;

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
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
        let b = b.cast::<PyBytes>().map_err(|_| {
            invalid_input(format!("{what}: memoryview.tobytes() did not return bytes"))
        })?;
        return Ok(Cow::Owned(b.as_bytes().to_vec()));
    }
    Err(invalid_input(format!(
        "{what} must be bytes, not {}",
        type_name(obj)
    )))
}

/// The items of a batch argument, kept alive so their bytes can be borrowed while detached.
/// A single bytes-like or str value is refused (it would iterate as ints/chars).
pub(crate) fn batch_items<'py>(
    obj: &Bound<'py, PyAny>,
    func: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
        || obj.is_instance_of::<PyMemoryView>()
        || obj.is_instance_of::<PyString>()
    {
        return Err(invalid_input(format!(
            "{func} takes a sequence of bytes payloads, not a single value"
        )));
    }
    let it = obj.try_iter().map_err(|_| {
        invalid_input(format!(
            "{func} takes a sequence of bytes, not {}",
            type_name(obj)
        ))
    })?;
    it.collect()
}

/// Every item's bytes (all-or-nothing: the first bad item is an `InvalidInput` naming it).
pub(crate) fn batch_bytes<'a>(items: &'a [Bound<'_, PyAny>]) -> PyResult<Vec<Cow<'a, [u8]>>> {
    items
        .iter()
        .enumerate()
        .map(|(i, o)| bytes_arg(o, &format!("payload {i}")))
        .collect()
}

/// A non-negative index-like int. `bool` and non-int -> InvalidInput; negative or beyond
/// u64 -> `Ok(None)` so the caller raises its out-of-range error with its own wording.
pub(crate) fn index_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<u64>> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(invalid_input(format!(
            "{what} must be int, not {}",
            type_name(obj)
        )));
    }
    Ok(obj.extract::<u64>().ok())
}
