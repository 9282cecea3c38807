//! Rate-limit twin (`gateway.stages.ratelimit.RateLimiter`): two token buckets per key with
//! the Python twin's float arithmetic, operation for operation. Sub-microsecond: keeps the GIL.
use crate::entry;
use crate::errors::{guard, invalid_input};
use gatewaylab_core::stages::ratelimit::{self, Tokens};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyMapping, PyString};
use std::sync::Mutex;

#[pyclass(name = "RateLimiter", module = "gateway._native", frozen)]
pub struct PyRateLimiter {
    inner: Mutex<ratelimit::RateLimiter>,
}

/// An `int` (never a bool, which Python's `type(v) is int` refuses too).
fn exact_int<'a, 'py>(v: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, PyInt>> {
    if v.is_exact_instance_of::<PyInt>() {
        v.cast::<PyInt>().ok()
    } else {
        None
    }
}

#[pymethods]
impl PyRateLimiter {
    /// RateLimiter(limits: Mapping[key_id, (requests_per_min, tokens_per_min)])
    #[new]
    fn new(limits: &Bound<'_, PyAny>) -> PyResult<Self> {
        let _c = entry!("ratelimit.new");
        guard(|| {
            let limits = limits
                .cast::<PyMapping>()
                .map_err(|_| invalid_input("RateLimiter: limits must be a mapping of key id -> (requests_per_min, tokens_per_min)"))?;
            let mut out: Vec<(String, i128, i128)> = Vec::new();
            for item in limits.items()?.iter() {
                let (k, pair): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
                let key: String = k
                    .cast::<PyString>()
                    .map_err(|_| invalid_input("RateLimiter: key ids must be str"))?
                    .to_str()?
                    .to_string();
                let bad_pair = || {
                    invalid_input(format!("RateLimiter: limits for {key:?} must be (requests_per_min, tokens_per_min)"))
                };
                let items: Vec<Bound<'_, PyAny>> = match pair.try_iter() {
                    Ok(it) => it.collect::<PyResult<_>>().map_err(|_| bad_pair())?,
                    Err(_) => return Err(bad_pair()),
                };
                let [rpm, tpm] = items.as_slice() else {
                    return Err(bad_pair());
                };
                let mut vals = [0i128; 2];
                for (slot, (name, v)) in vals
                    .iter_mut()
                    .zip([("requests_per_min", rpm), ("tokens_per_min", tpm)])
                {
                    let n = exact_int(v)
                        .and_then(|i| i.extract::<i128>().ok())
                        .filter(|n| *n >= 1);
                    match n {
                        Some(n) => *slot = n,
                        None => {
                            let r = v.repr().map(|r| r.to_string()).unwrap_or_default();
                            return Err(invalid_input(format!(
                                "RateLimiter: {name} for {key:?} must be an int >= 1, got {r}"
                            )));
                        }
                    }
                }
                out.push((key, vals[0], vals[1]));
            }
            let inner =
                ratelimit::RateLimiter::new(out).map_err(|e| invalid_input(e.to_string()))?;
            Ok(Self {
                inner: Mutex::new(inner),
            })
        })
    }

    /// 0.0 if admitted; otherwise Retry-After seconds (nothing debited).
    fn check(
        &self,
        key_id: &Bound<'_, PyAny>,
        tokens: &Bound<'_, PyAny>,
        now_ns: &Bound<'_, PyAny>,
    ) -> PyResult<f64> {
        let _c = entry!("ratelimit.check");
        guard(|| {
            let Ok(key) = key_id.cast::<PyString>() else {
                return Ok(0.0);
            };
            let key = key.to_str()?;
            // The lock is held for Rust work only, never across a Python call (the arguments
            // are read between the two short holds): the set of limited keys is fixed at
            // construction, so the answer of the first hold still stands at the second.
            if !self.lock().is_limited(key) {
                return Ok(0.0);
            }
            let bad_tokens = || {
                let r = tokens.repr().map(|r| r.to_string()).unwrap_or_default();
                invalid_input(format!(
                    "RateLimiter.check: tokens must be an int >= 0, got {r}"
                ))
            };
            let t = match exact_int(tokens) {
                None => return Err(bad_tokens()),
                Some(i) => match i.extract::<u64>() {
                    Ok(n) => Tokens::N(n),
                    Err(_) if i.lt(0)? => return Err(bad_tokens()),
                    Err(_) => Tokens::Huge,
                },
            };
            let now: i128 = match now_ns.cast::<PyInt>() {
                Ok(i) => i
                    .extract()
                    .map_err(|_| invalid_input("RateLimiter.check: now_ns out of range"))?,
                Err(_) => {
                    return Err(invalid_input(
                        "RateLimiter.check: now_ns must be an int (nanoseconds)",
                    ))
                }
            };
            Ok(self.lock().check(key, t, now))
        })
    }
}

impl PyRateLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, ratelimit::RateLimiter> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRateLimiter>()
}
