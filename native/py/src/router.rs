//! Router twin (`gateway.router.Router`): the core crate's router behind the Python twin's
//! interface. Each call is sub-microsecond bookkeeping: it keeps the GIL.
use crate::entry;
use crate::errors::{guard, invalid_input};
use gatewaylab_core::router::{self, Attempt, Outcome, Step};
use pyo3::prelude::*;
use pyo3::types::PyInt;
use std::sync::{Mutex, MutexGuard};

#[pyclass(name = "Router", module = "gateway._native", frozen)]
pub struct PyRouter {
    inner: Mutex<router::Router>,
}

/// One request's way through the router (opaque).
#[pyclass(name = "RouterAttempt", module = "gateway._native", frozen)]
pub struct PyAttempt {
    inner: Mutex<Attempt>,
}

fn nonneg(v: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    let bad = || {
        let r = v.repr().map(|r| r.to_string()).unwrap_or_default();
        invalid_input(format!("Router: {what} must be an int >= 0, got {r}"))
    };
    if !v.is_exact_instance_of::<PyInt>() {
        return Err(bad());
    }
    v.extract::<u64>().map_err(|_| bad())
}

fn step<'py>(py: Python<'py>, s: Step) -> PyResult<Bound<'py, PyAny>> {
    Ok(match s {
        Step::Send { group, index } => ("send", group, index).into_pyobject(py)?.into_any(),
        Step::Wait { ns } => ("wait", ns).into_pyobject(py)?.into_any(),
        Step::GiveUp { reason } => ("give_up", reason).into_pyobject(py)?.into_any(),
    })
}

#[pymethods]
impl PyRouter {
    /// Router(config_json) with config_json from `gateway.router.router_config(section, groups)`.
    #[new]
    fn new(config_json: &str) -> PyResult<Self> {
        let _c = entry!("router.new");
        guard(|| {
            let r = router::Router::from_json(config_json).map_err(|e| {
                if e.starts_with("router") && !e.starts_with("Router") {
                    crate::errors::config_error(e)
                } else {
                    invalid_input(e)
                }
            })?;
            Ok(Self {
                inner: Mutex::new(r),
            })
        })
    }

    fn begin(
        &self,
        group: &str,
        tokens: &Bound<'_, PyAny>,
        now_ns: &Bound<'_, PyAny>,
    ) -> PyResult<PyAttempt> {
        let _c = entry!("router.begin");
        guard(|| {
            let (t, now) = (nonneg(tokens, "tokens")?, nonneg(now_ns, "now_ns")?);
            let a = self.lock().begin(group, t, now).map_err(invalid_input)?;
            Ok(PyAttempt {
                inner: Mutex::new(a),
            })
        })
    }

    fn next<'py>(
        &self,
        py: Python<'py>,
        att: &PyAttempt,
        now_ns: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _c = entry!("router.next");
        guard(|| {
            let now = nonneg(now_ns, "now_ns")?;
            let s = {
                let mut a = att.lock();
                self.lock().next(&mut a, now)
            };
            step(py, s.map_err(invalid_input)?)
        })
    }

    fn report(
        &self,
        att: &PyAttempt,
        outcome: &str,
        latency_us: &Bound<'_, PyAny>,
        now_ns: &Bound<'_, PyAny>,
    ) -> PyResult<&'static str> {
        let _c = entry!("router.report");
        guard(|| {
            let o = Outcome::parse(outcome).ok_or_else(|| {
                invalid_input(format!(
                    "Router.report: outcome must be one of ok, fail, cancel, got {}",
                    gatewaylab_core::errors::py_repr(outcome)
                ))
            })?;
            let (lat, now) = (nonneg(latency_us, "latency_us")?, nonneg(now_ns, "now_ns")?);
            let h = {
                let mut a = att.lock();
                self.lock().report(&mut a, o, lat, now)
            };
            Ok(h.map_err(invalid_input)?.name())
        })
    }

    fn state(
        &self,
        group: &str,
        index: usize,
        now_ns: &Bound<'_, PyAny>,
    ) -> PyResult<&'static str> {
        let _c = entry!("router.state");
        guard(|| {
            let now = nonneg(now_ns, "now_ns")?;
            let h = self.lock().health(group, index, now);
            Ok(h.map_err(invalid_input)?.name())
        })
    }

    fn in_flight(&self, group: &str, index: usize) -> PyResult<u64> {
        let _c = entry!("router.in_flight");
        guard(|| {
            let n = self.lock().in_flight(group, index);
            n.map_err(invalid_input)
        })
    }
}

// The locks are held for the core's bookkeeping only: every Python call (argument checks,
// error objects, the returned tuple) happens outside them (docs/interpreters.md).
impl PyRouter {
    fn lock(&self) -> MutexGuard<'_, router::Router> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PyAttempt {
    fn lock(&self) -> MutexGuard<'_, Attempt> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRouter>()?;
    m.add_class::<PyAttempt>()
}
