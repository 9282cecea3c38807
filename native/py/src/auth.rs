//! Auth twin (`gateway.stages.auth.ApiKeyAuth`): bearer secrets hashed with SHA-256 and
//! compared in constant time (OpenSSL + subtle). A check is a few hundred nanoseconds, so it
//! keeps the GIL.
use crate::convert::type_name;
use crate::entry;
use crate::errors::{guard, invalid_input};
use gatewaylab_core::stages::auth;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMapping, PyString};

#[pyclass(name = "ApiKeyAuth", module = "gateway._native", frozen)]
pub struct PyApiKeyAuth {
    inner: auth::ApiKeyAuth,
}

#[pymethods]
impl PyApiKeyAuth {
    /// ApiKeyAuth(keys: Mapping[key_id, sha256_hex_of_secret])
    #[new]
    fn new(keys: &Bound<'_, PyAny>) -> PyResult<Self> {
        let _c = entry!("auth.new");
        guard(|| {
            let keys = keys.cast::<PyMapping>().map_err(|_| {
                invalid_input("ApiKeyAuth: keys must be a mapping of key id -> sha256 hex")
            })?;
            let mut pairs: Vec<(String, String)> = Vec::new();
            for item in keys.items()?.iter() {
                let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
                match (k.cast::<PyString>(), v.cast::<PyString>()) {
                    (Ok(k), Ok(v)) => {
                        pairs.push((k.to_str()?.to_string(), v.to_str()?.to_string()))
                    }
                    _ => return Err(invalid_input("ApiKeyAuth: key ids and hashes must be str")),
                }
            }
            let inner = auth::ApiKeyAuth::new(pairs).map_err(|e| invalid_input(e.to_string()))?;
            Ok(Self { inner })
        })
    }

    /// Raw `Authorization` header value -> key_id, or None.
    fn check(&self, authorization: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
        let _c = entry!("auth.check");
        guard(|| {
            let Some(h) = authorization else {
                return Ok(None);
            };
            if let Ok(b) = h.cast::<PyBytes>() {
                return Ok(self.inner.check(Some(b.as_bytes())).map(str::to_string));
            }
            if let Ok(b) = h.cast::<PyByteArray>() {
                return Ok(self.inner.check(Some(&b.to_vec())).map(str::to_string));
            }
            Err(invalid_input(format!(
                "ApiKeyAuth.check: authorization must be bytes or None, not {}",
                type_name(h)
            )))
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyApiKeyAuth>()
}
