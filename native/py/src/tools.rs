//! Bindings for gatewaylab-tools: the mock upstream and the load generator.
//! Both run with the GIL released; configs and results cross the boundary as JSON.
use pyo3::prelude::*;
use std::io::Write;

use crate::entry;
use crate::errors::{guard, invalid_input};

/// run_mock(config_json="{}") -> None
///
/// Serve the mock upstream until SIGTERM/SIGINT, GIL released. Prints
/// `listening on http://HOST:PORT` on stdout (flushed) once the socket is bound.
/// `config_json` holds the fields of `MockConfig` (latency_ms, jitter_ms, ttft_ms, itl_ms,
/// tokens, error_status, error_rate, drop_rate, stall_every, stall_ms, seed, threads, host, port, model).
#[pyfunction]
#[pyo3(signature = (config_json = "{}"))]
fn run_mock(py: Python<'_>, config_json: &str) -> PyResult<()> {
    let mut call = entry!("run_mock");
    guard(|| {
        let cfg: gatewaylab_tools::mock::MockConfig = serde_json::from_str(config_json)
            .map_err(|e| invalid_input(format!("mock config: {e}")))?;
        cfg.validate()
            .map_err(|m| invalid_input(format!("mock config: {m}")))?;
        call.detach(py, move || {
            gatewaylab_tools::mock::run_blocking(cfg, |addr| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "listening on http://{addr}");
                let _ = out.flush();
            })
        })
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("mock upstream: {e}")))
    })
}

/// run_load(config_json) -> str (the result JSON; see gatewaylab_tools::load)
///
/// Runs one bounded load-generator run with the GIL released.
#[pyfunction]
fn run_load(py: Python<'_>, config_json: &str) -> PyResult<String> {
    let mut call = entry!("run_load");
    guard(|| {
        let cfg: gatewaylab_tools::load::LoadConfig = serde_json::from_str(config_json)
            .map_err(|e| invalid_input(format!("load config: {e}")))?;
        let plan = gatewaylab_tools::load::Plan::new(cfg)
            .map_err(|m| invalid_input(format!("load config: {m}")))?;
        let result = call
            .detach(py, move || gatewaylab_tools::load::run_blocking(plan))
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("load generator: {e}")))?;
        serde_json::to_string(&result).map_err(|e| invalid_input(format!("load result: {e}")))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_mock, m)?)?;
    m.add_function(wrap_pyfunction!(run_load, m)?)?;
    Ok(())
}
