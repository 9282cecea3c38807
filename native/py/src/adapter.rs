//! Adapter twin (`gateway.stages.adapter.Adapter`): OpenAI <-> OpenAI/Anthropic JSON,
//! byte-identical to the Python twin's orjson output. Bodies over `DETACH_BYTES` are
//! converted with the GIL released.
use crate::convert::type_name;
use crate::entry;
use crate::errors::{guard, invalid_input};
use gatewaylab_core::stages::adapter::{self, Kind};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use std::borrow::Cow;

const DETACH_BYTES: usize = 1024;

#[pyclass(name = "Adapter", module = "gateway._native", frozen)]
pub struct PyAdapter {
    inner: adapter::Adapter,
    #[pyo3(get)]
    kind: String,
}

/// JSON input as orjson takes it: bytes, bytearray, memoryview (as `convert::bytes_arg`) or str.
fn json_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Cow::Owned(s.to_str()?.as_bytes().to_vec()));
    }
    crate::convert::bytes_arg(obj, what).map_err(|_| {
        invalid_input(format!(
            "{what}: invalid JSON: input must be bytes, bytearray, memoryview or str, not {}",
            type_name(obj)
        ))
    })
}

fn model_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
    obj.cast::<PyString>()
        .map_err(|_| invalid_input(format!("{what}: model must be str, not {}", type_name(obj))))?
        .to_str()
}

impl PyAdapter {
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        name: &'static str,
        body: &Bound<'_, PyAny>,
        model: &Bound<'_, PyAny>,
        f: impl Send + FnOnce(&adapter::Adapter, &[u8], &str) -> Result<T, adapter::AdapterError>,
        c: &mut crate::gil::Call,
    ) -> PyResult<T> {
        let data = json_arg(body, name)?;
        let model = model_arg(model, name)?;
        let inner = &self.inner;
        let data: &[u8] = &data;
        let r = if data.len() > DETACH_BYTES {
            c.detach(py, || f(inner, data, model))
        } else {
            f(inner, data, model)
        };
        r.map_err(|e| invalid_input(e.0))
    }
}

#[pymethods]
impl PyAdapter {
    /// Adapter(kind: "openai" | "anthropic")
    #[new]
    fn new(kind: &Bound<'_, PyAny>) -> PyResult<Self> {
        let _c = entry!("adapter.new");
        guard(|| {
            let k = kind
                .cast::<PyString>()
                .ok()
                .and_then(|s| s.to_str().ok())
                .and_then(Kind::parse);
            match k {
                Some(k) => Ok(Self {
                    inner: adapter::Adapter::new(k),
                    kind: kind.cast::<PyString>()?.to_str()?.to_string(),
                }),
                None => {
                    let r = kind.repr().map(|r| r.to_string()).unwrap_or_default();
                    Err(invalid_input(format!(
                        "Adapter: kind must be 'openai' or 'anthropic', got {r}"
                    )))
                }
            }
        })
    }

    fn to_upstream<'py>(
        &self,
        py: Python<'py>,
        body: &Bound<'py, PyAny>,
        upstream_model: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut c = entry!("adapter.to_upstream");
        guard(|| {
            let out = self.run(
                py,
                "adapter",
                body,
                upstream_model,
                |a, b, m| a.to_upstream(b, m).map(Cow::into_owned),
                &mut c,
            )?;
            Ok(PyBytes::new(py, &out))
        })
    }

    #[allow(clippy::wrong_self_convention)] // the Python twin's method name (Adapter.from_upstream)
    fn from_upstream<'py>(
        &self,
        py: Python<'py>,
        body: &Bound<'py, PyAny>,
        public_model: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut c = entry!("adapter.from_upstream");
        guard(|| {
            let out = self.run(
                py,
                "adapter upstream response",
                body,
                public_model,
                |a, b, m| a.from_upstream(b, m).map(Cow::into_owned),
                &mut c,
            )?;
            Ok(PyBytes::new(py, &out))
        })
    }

    /// One upstream SSE event's data -> zero or more OpenAI chunk JSONs.
    fn stream_event<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        public_model: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut c = entry!("adapter.stream_event");
        guard(|| {
            let out = self.run(
                py,
                "adapter stream event",
                event,
                public_model,
                |a, b, m| a.stream_event(b, m),
                &mut c,
            )?;
            PyList::new(py, out.iter().map(|b| PyBytes::new(py, b)))
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyAdapter>()
}
