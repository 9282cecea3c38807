//! gateway._native — the Rust twins, one binding file per core module (mirrors gatewaylab-core),
//! and rung 2: the engine (native/engine) behind the Python shell, `engine.rs`.
//! Each module file exposes `register(m)`; this file only wires them together.
use pyo3::prelude::*;

pub mod adapter;
pub mod auth;
pub mod convert;
pub mod engine;
pub mod entropy;
pub mod errors;
pub mod forwarder;
pub mod gil;
pub mod hash;
pub mod mmr;
pub mod pipeline;
pub mod ratelimit;
pub mod record;
pub mod router;
pub mod tools;
pub mod waf;
pub mod wal;

#[cfg(debug_assertions)]
const BUILD_PROFILE: &str = "debug";
#[cfg(not(debug_assertions))]
const BUILD_PROFILE: &str = "release";

/// Panics on purpose, to prove panics surface as `gateway.errors.NativePanic`.
#[pyfunction]
fn _debug_panic(msg: &str) -> PyResult<()> {
    let _c = entry!("_debug_panic");
    errors::guard(|| panic!("{}", msg.to_string()))
}

/// Tests run in an embedded interpreter (`cargo test --no-default-features`, see the
/// Makefile): start it once, with the checkout on sys.path for `gateway.errors`.
#[cfg(test)]
pub(crate) fn test_python() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        Python::initialize();
        Python::attach(|py| {
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
            py.import("sys")
                .unwrap()
                .getattr("path")
                .unwrap()
                .call_method1("insert", (0, root))
                .unwrap();
        });
    });
}

/// `gil_used = false`: the module declares it runs safely without the GIL on a free-threaded
/// interpreter (docs/interpreters.md gives the argument): every class is `frozen` with its
/// mutable state behind a Rust lock or atomics, bytes-likes that can change are copied before
/// the GIL is released, and no Python API is called while holding a lock that an attached
/// thread may wait for (such waits happen detached, or the lock is held for Rust work only).
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("build_profile", BUILD_PROFILE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(gil::gil_stats, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    hash::register(m)?;
    record::register(m)?;
    entropy::register(m)?;
    mmr::register(m)?;
    wal::register(m)?;
    tools::register(m)?;
    auth::register(m)?;
    waf::register(m)?;
    ratelimit::register(m)?;
    adapter::register(m)?;
    forwarder::register(m)?;
    pipeline::register(m)?;
    engine::register(m)?;
    router::register(m)?;
    Ok(())
}
