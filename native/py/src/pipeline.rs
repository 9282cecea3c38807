//! The pipeline twin's binding: `Pipeline(config_json)` is `gatewaylab_core::pipeline::Pipeline`
//! for the parity tests (`decide(...)` returns the verdict as plain tuples); `error_type` is
//! the core's error table. Rung 2 (`RsCore`, the engine behind the Python shell) is engine.rs.
use crate::convert::bytes_arg;
use crate::engine::header_pairs;
use crate::entry;
use crate::errors::{guard, invalid_input};
use gatewaylab_core::pipeline::{
    AuditMaterial, Context, Decision, Pipeline, PipelineConfig, Request,
};
use gatewaylab_core::stages::adapter::Kind;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use std::collections::HashMap;

/// The pipeline (the router's config, when there is one, is the router twin's to check).
fn parse_config(config_json: &str) -> PyResult<Pipeline> {
    let cfg: PipelineConfig = serde_json::from_str(config_json)
        .map_err(|e| invalid_input(format!("pipeline config: {e}")))?;
    Pipeline::new(&cfg).map_err(invalid_input)
}

fn material_tuple<'py>(py: Python<'py>, a: &Option<AuditMaterial>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match a {
        None => py.None().into_bound(py),
        Some(a) => (
            a.time_ns,
            a.request_id.as_str(),
            a.key_id.as_str(),
            a.model.as_str(),
            PyBytes::new(py, &a.request_body),
            a.prompt_tokens,
            a.waf.as_str(),
        )
            .into_pyobject(py)?
            .into_any(),
    })
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::OpenAi => "openai",
        Kind::Anthropic => "anthropic",
    }
}

/// The pipeline twin, for parity tests.
#[pyclass(name = "Pipeline", module = "gateway._native", frozen)]
pub struct PyPipeline {
    inner: Pipeline,
}

#[pymethods]
impl PyPipeline {
    #[new]
    fn new(config_json: &str) -> PyResult<Self> {
        let _c = entry!("pipeline.new");
        guard(|| {
            Ok(Self {
                inner: parse_config(config_json)?,
            })
        })
    }

    /// {stage: times it ran} (gateway/pipeline.py `Pipeline.stage_runs`'s twin).
    fn stage_runs(&self) -> HashMap<&'static str, u64> {
        self.inner.stage_runs().into_iter().collect()
    }

    /// decide(method, path, headers, body, time_ns, mono_ns, request_id) ->
    /// ("reject", status, code, message, headers, audit) |
    /// ("forward", url, headers, body, stream, kind, public_model, adapt, key_id, audit);
    /// audit = None | (time_ns, request_id, key_id, model, request_body, prompt_tokens, waf)
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        path: &str,
        headers: &Bound<'py, PyAny>,
        body: &Bound<'py, PyAny>,
        time_ns: i64,
        mono_ns: i64,
        request_id: &str,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let mut call = entry!("pipeline.decide");
        guard(|| {
            let hs = header_pairs(headers)?;
            let body = bytes_arg(body, "body")?;
            let refs: Vec<(&[u8], &[u8])> = hs
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .collect();
            let d = call.detach(py, || {
                let req = Request {
                    method,
                    path,
                    headers: &refs,
                    body: &body,
                };
                self.inner.decide(
                    &req,
                    &Context {
                        time_ns,
                        mono_ns: mono_ns as i128,
                        request_id,
                    },
                )
            });
            match d {
                Decision::Reject(r) => {
                    let h: Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> = r
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                PyBytes::new(py, k.as_bytes()),
                                PyBytes::new(py, v.as_bytes()),
                            )
                        })
                        .collect();
                    let audit = material_tuple(py, &r.audit)?;
                    ("reject", r.status, r.code, r.message, h, audit).into_pyobject(py)
                }
                Decision::Forward(f) => {
                    let audit = material_tuple(py, &f.audit)?;
                    (
                        "forward",
                        f.url,
                        f.headers,
                        PyBytes::new(py, &f.body),
                        f.stream,
                        kind_name(f.kind),
                        f.public_model,
                        f.adapt,
                        f.key_id,
                        audit,
                    )
                        .into_pyobject(py)
                }
            }
        })
    }
}

/// error_type(status, code): the OpenAI `type` of an error answer, from the core's table
/// (the twin of gateway.errors.error_type; tests/pipeline/test_decide_parity.py compares them).
#[pyfunction]
#[pyo3(name = "error_type")]
fn py_error_type(status: u16, code: &str) -> &'static str {
    gatewaylab_core::errors::error_type(status, code)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_error_type, m)?)?;
    m.add_class::<PyPipeline>()
}
