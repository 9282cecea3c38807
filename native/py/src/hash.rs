//! Hashing twin (`gateway.audit.hashing`).
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
use crate::convert::{batch_bytes, batch_items, bytes_arg, DETACH_BYTES};
use crate::entry;
use crate::errors::guard;
use gatewaylab_core::hash;
use pyo3::prelude::*;

/// sha256_hex(data: bytes) -> str
#[pyfunction]
pub fn sha256_hex(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut call = entry!("sha256_hex");
    guard(|| {
        let b = bytes_arg(data, "data")?;
        Ok(if b.len() > DETACH_BYTES {
            call.detach(py, || hash::sha256_hex(&b))
        } else {
            hash::sha256_hex(&b)
        })
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
        let h = call.detach(py, || {
            hash::hash_work(slices.iter().map(|s| &s[..]), with_nodes)
        });
        std::hint::black_box(h);
        Ok(())
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sha256_hex, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_many, m)?)?;
    Ok(())
}
