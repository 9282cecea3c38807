//! Canonical audit-record twin (`gateway.audit.record.encode_record`):
//! `encode_record(record: Mapping[str, int | str]) -> bytes`, byte-identical to
//! `json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()`.
//! Keys must be str; values int (not bool) within i64, or str; anything else InvalidInput.
//! A record is a dozen short fields, so the work stays under the GIL (it must read the dict
//! anyway); encoding is a few hundred nanoseconds.
use crate::convert::type_name;
use crate::entry;
use crate::errors::{guard, invalid_input};
use gatewaylab_core::record::{self, Value};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyMapping, PyString};

#[pyfunction]
pub fn encode_record<'py>(
    py: Python<'py>,
    record: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let _call = entry!("encode_record");
    guard(|| {
        let items: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> =
            if let Ok(d) = record.cast::<PyDict>() {
                d.iter().collect()
            } else if let Ok(m) = record.cast::<PyMapping>() {
                m.items()?
                    .iter()
                    .map(|kv| kv.extract())
                    .collect::<PyResult<_>>()?
            } else {
                return Err(invalid_input(format!(
                    "record must be a mapping of str -> int | str, not {}",
                    type_name(record)
                )));
            };
        let mut keys: Vec<&str> = Vec::with_capacity(items.len());
        let mut vals: Vec<Value<'_>> = Vec::with_capacity(items.len());
        for (k, v) in &items {
            let key = k
                .cast::<PyString>()
                .map_err(|_| {
                    invalid_input(format!(
                        "record key {} must be str, not {}",
                        repr(k),
                        type_name(k)
                    ))
                })?
                .to_str()
                .map_err(|_| {
                    invalid_input(format!("record key {} is not valid Unicode", repr(k)))
                })?;
            let val = if v.is_instance_of::<PyBool>() {
                return Err(invalid_input(format!(
                    "record field {key:?}: value must be int or str, not bool"
                )));
            } else if v.is_instance_of::<PyInt>() {
                Value::Int(v.extract::<i64>().map_err(|_| {
                    invalid_input(format!(
                        "record field {key:?}: integer {} does not fit in i64",
                        repr(v)
                    ))
                })?)
            } else if let Ok(s) = v.cast::<PyString>() {
                Value::Str(s.to_str().map_err(|_| {
                    invalid_input(format!("record field {key:?}: value is not valid Unicode"))
                })?)
            } else {
                return Err(invalid_input(format!(
                    "record field {key:?}: value must be int or str, not {}",
                    type_name(v)
                )));
            };
            keys.push(key);
            vals.push(val);
        }
        let mut entries: Vec<(&str, Value<'_>)> = keys.into_iter().zip(vals).collect();
        Ok(PyBytes::new(py, &record::encode_record(&mut entries)))
    })
}

fn repr(o: &Bound<'_, PyAny>) -> String {
    o.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<?>".into())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_record, m)?)?;
    Ok(())
}
